package stack

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a certmint binary the stack runs, as a Pod would.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// StartBinary runs binary with args, its output in logPath; it dies with
// the caller, however the caller ends.
func StartBinary(name, binary, logPath string, args ...string) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &Process{name: name, logPath: logPath, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// Stop ends the process as a rolling update would: SIGTERM, then SIGKILL
// after a grace period.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill ends the process at once, as a node failure would: it neither
// finishes its work nor releases what it holds.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// WaitHTTP waits until url answers 200, failing early if the process exits.
func (p *Process) WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited; its log ends:\n%s", p.name, p.LogTail(30))
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s not ready: %w; its log ends:\n%s", p.name, url, ctx.Err(), p.LogTail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Log returns the process's whole log so far.
func (p *Process) Log() (string, error) {
	data, err := os.ReadFile(p.logPath)
	return string(data), err
}

// LogTail returns the last n lines of the process's log.
func (p *Process) LogTail(n int) string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Memory is a process's resident set from /proc: anonymous pages (heap,
// stacks) and file pages (the binary's code and read-only data, which the
// kernel can drop and read again).
type Memory struct{ Anon, File int64 }

// Total is the whole resident set.
func (m Memory) Total() int64 { return m.Anon + m.File }

// RSS is the process's resident set now.
func (p *Process) RSS() (Memory, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(status), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok || key != "RssAnon" && key != "RssFile" {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("parsing /proc/%d/status: %w", p.cmd.Process.Pid, err)
		}
		if key == "RssAnon" {
			m.Anon = kb * 1024
		} else {
			m.File = kb * 1024
		}
	}
	return m, nil
}

// CPUTime is the CPU time the process has used, from /proc.
func (p *Process) CPUTime() time.Duration {
	return ProcCPU(p.cmd.Process.Pid)
}

// ProcCPU is the CPU time process pid has used, from /proc.
func ProcCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// utime and stime are fields 14 and 15, in ticks of 1/100 s; the
	// command name before them may contain spaces.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// PIDsMentioning returns the processes named name whose command line
// contains s: the control plane's etcd and kube-apiserver name their
// directory in their flags.
func PIDsMentioning(name, s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) == name && strings.Contains(string(cmdline), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// BuildBinary builds a command of the module at root into dir as the
// images do, without symbol tables, or with them for perf to read.
func BuildBinary(ctx context.Context, root, pkg, dir string, symbols bool) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg}
	if symbols {
		args = []string{"build", "-trimpath", "-o", out, pkg}
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, output)
	}
	return out, nil
}

// FreeAddr returns a loopback address with a free port.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// logTailLines is how much of a component's log an error or a failure dump carries.
const logTailLines = 30

// process is one long-running component with its output in a log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited
	waitErr error         // the exit status; read only after done is closed
}

// startProcess runs argv with stdout and stderr appended to logPath.
//
// The child gets its own process group, so a Ctrl-C on the terminal reaches
// only the harness, which then stops components in order. It also gets
// SIGKILL when the harness dies (a killed test binary runs no cleanup); what
// such a death leaves behind the next run's cleanup removes.
func startProcess(name, logPath string, argv []string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log for %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an unexpected exit, with the end of the log, which is
// where components say why they gave up.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited: %w; last lines of %s:\n%s", p.name, p.waitErr, p.logPath, LogTail(p.logPath, logTailLines))
}

// waitReady polls check until it succeeds, the process or one it depends
// on exits, or ctx ends.
func (p *process) waitReady(ctx context.Context, what string, check func(context.Context) error, dependencies ...*process) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		for _, d := range dependencies {
			if d.exited() {
				return d.exitError()
			}
		}
		checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		lastErr = check(checkCtx)
		cancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last check: %w); last lines of %s:\n%s",
				what, ctx.Err(), lastErr, p.logPath, LogTail(p.logPath, logTailLines))
		case <-tick.C:
		}
	}
}

// stop asks the process to terminate and kills it after grace.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-p.done
	return nil
}

// LogTail returns the last n lines of a log file, indented, or a note why it
// cannot; failure dumps use it on the paths of LogFiles.
func LogTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	// Component logs grow large; the tail is in the last few hundred kilobytes.
	const window = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		if _, err := f.Seek(-window, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot read log: %v)", err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}

// freeLoopbackPorts reserves n distinct free TCP ports on 127.0.0.1 by
// listening on all of them at once, then releases them for the caller. Another
// process may grab one in between; callers retry on "address already in use".
func freeLoopbackPorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserving a loopback port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portClash reports whether err says a component lost a port race.
func portClash(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// Command cluster runs the end-to-end cluster for people: `make cluster-up`
// and `make cluster-down` call it.
//
//	cluster up     start a cluster in the background and return once it is Ready
//	cluster down   stop it, or clean up after one that crashed
//	cluster run    run a cluster in the foreground until SIGINT or SIGTERM
//	cluster check  fail, saying how to stop it, if a cluster of up or run
//	               holds the machine's one cluster slot (make test runs it
//	               first)
//
// The admin kubeconfig of a running cluster is _output/cluster/kubeconfig;
// component logs are in _output/cluster/logs, and the background process's
// own output in _output/cluster/cluster.log.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/certmint/certmint/test/e2e/cluster"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: cluster up|down|run|check")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	out, err := repo.OutputDir()
	if err != nil {
		fatal(err)
	}
	paths := layout{dir: filepath.Join(out, "cluster")}
	switch flag.Arg(0) {
	case "up":
		err = up(paths)
	case "down":
		err = down(paths)
	case "run":
		err = runForeground(paths)
	case "check":
		err = cluster.CheckFree()
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
	os.Exit(1)
}

// layout names the files of the cluster under the build output directory.
type layout struct{ dir string }

func (l layout) kubeconfig() string { return filepath.Join(l.dir, "kubeconfig") }
func (l layout) pidFile() string    { return filepath.Join(l.dir, "pid") }
func (l layout) outputLog() string  { return filepath.Join(l.dir, "cluster.log") }
func (l layout) logDir() string     { return filepath.Join(l.dir, "logs") }

// up starts `cluster run` detached from the terminal and waits until it has
// written the kubeconfig, which it does once the cluster is Ready.
func up(l layout) error {
	if pid, ok := l.running(); ok {
		fmt.Printf("cluster already running (pid %d); kubeconfig: %s\n", pid, l.kubeconfig())
		return nil
	}
	start := time.Now()
	// Building Kubernetes on a cold cache takes minutes; do it here, where
	// its progress shows.
	binDir, err := cluster.Binaries(context.Background())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", l.dir, err)
	}
	if err := os.Remove(l.kubeconfig()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale kubeconfig: %w", err)
	}
	logFile, err := os.Create(l.outputLog())
	if err != nil {
		return fmt.Errorf("creating %s: %w", l.outputLog(), err)
	}
	defer logFile.Close()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding own executable: %w", err)
	}
	cmd := exec.Command(self, "run")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), cluster.KubeBinEnv+"="+binDir)
	// Its own session: the terminal's Ctrl-C and hangup must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting cluster process: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Printf("starting cluster (pid %d, output in %s)\n", cmd.Process.Pid, l.outputLog())
	for {
		select {
		case err := <-exited:
			tail, _ := os.ReadFile(l.outputLog())
			return fmt.Errorf("cluster process exited (%w):\n%s", err, tail)
		case <-time.After(time.Second):
		}
		if _, err := os.Stat(l.kubeconfig()); err == nil {
			fmt.Printf("cluster up in %s\n  export KUBECONFIG=%s\n  component logs: %s\n  stop: make cluster-down\n",
				time.Since(start).Round(time.Second), l.kubeconfig(), l.logDir())
			return nil
		}
	}
}

// down stops the background cluster and then removes anything a crashed
// one may have left.
func down(l layout) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if pid, ok := l.running(); ok {
		fmt.Printf("stopping cluster (pid %d)\n", pid)
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return fmt.Errorf("signalling cluster process: %w", err)
		}
		for alive(pid) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("cluster process %d still running: %w", pid, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	if err := cluster.Cleanup(ctx); err != nil {
		return err
	}
	for _, f := range []string{l.pidFile(), l.kubeconfig()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	fmt.Println("cluster stopped")
	return nil
}

// runForeground runs a cluster until SIGINT or SIGTERM.
func runForeground(l layout) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", l.dir, err)
	}
	if err := os.WriteFile(l.pidFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	defer os.Remove(l.pidFile())
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{
		LogDir:         l.logDir(),
		KubeconfigPath: l.kubeconfig(),
		// It runs until someone stops it: a test run must not wait for it.
		Background: true,
		Logf: func(format string, args ...any) {
			fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping cluster")
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping cluster: %v\n", err)
		}
	}()
	fmt.Printf("cluster Ready after %s; KUBECONFIG=%s\n", time.Since(start).Round(100*time.Millisecond), l.kubeconfig())
	<-ctx.Done()
	return nil
}

// running reports the pid of a live `cluster run`, from the pid file.
func (l layout) running() (int, bool) {
	data, err := os.ReadFile(l.pidFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || !alive(pid) {
		return 0, false
	}
	return pid, true
}

// alive reports whether pid is a `cluster run`. A zombie has an empty
// cmdline; a reused pid belongs to another program.
func alive(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return err == nil && args[len(args)-1] == "run"
}

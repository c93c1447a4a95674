// Package testproc runs the server programs a test needs besides
// Kubernetes (an ACME server, a DNS server) for as long as the test runs,
// and shows their logs when it fails. It knows nothing of the programs.
package testproc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// logLines is how much of a program's log a failed test shows.
const logLines = 40

// Command makes the command that runs a program, such as one that runs it
// inside a network namespace.
type Command func(ctx context.Context, name string, args ...string) *exec.Cmd

// Process is a program Start runs.
type Process struct {
	// LogPath holds what the program wrote to standard output and error.
	LogPath string

	done chan struct{}
	err  error
}

// Done is closed once the program has exited; Err then says how.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the program exited, once Done is closed.
func (p *Process) Err() error { return p.err }

// Log returns what the program has logged so far.
func (p *Process) Log() string { return ReadLog(p.LogPath) }

// Start runs name with args through command (exec.CommandContext when
// nil), with env added to this process's environment and its output in
// logPath, until t ends. A program that exits before then fails t; its log
// is shown when t fails.
func Start(t testing.TB, command Command, logPath string, env []string, name string, args ...string) *Process {
	t.Helper()
	if command == nil {
		command = exec.CommandContext
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// Not t.Context(): the program must outlive the test's own cleanups
	// that still talk to it.
	cmd := command(context.Background(), name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	name = filepath.Base(name)
	p := &Process{LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			t.Errorf("%s exited early: %v", name, p.err)
		default:
			_ = cmd.Process.Kill()
			<-p.done
			t.Logf("%s stopped: %v", name, p.err)
		}
		_ = logFile.Close()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, Tail(p.Log(), logLines))
		}
	})
	return p
}

// ReadLog returns the log at path, or why it cannot be read.
func ReadLog(path string) string {
	out, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// Tail returns the last lines of s.
func Tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/certmint/certmint/test/e2e/cluster"
)

// machine describes where the figures were measured: they mean little
// without it.
type machine struct {
	cpus               int
	cpuModel, memory   string
	kernel, goVersion  string
	kubernetes, etcd   string
	disk               string
	fsyncP50, fsyncP99 time.Duration
	// load is the one-minute load average when the run started: other
	// work on the machine shows in every figure.
	load string
}

func (m machine) summary() string {
	return fmt.Sprintf("%d × %s, %s memory, kernel %s; %s, Kubernetes %s, etcd %s; etcd's disk: %s, fdatasync of 4 KiB p50 %s / p99 %s; load average %s at the start",
		m.cpus, m.cpuModel, m.memory, m.kernel, m.goVersion, m.kubernetes, m.etcd, m.disk, ms(m.fsyncP50), ms(m.fsyncP99), m.load)
}

func describeMachine(ctx context.Context) machine {
	m := machine{cpus: runtime.NumCPU(), goVersion: runtime.Version(), cpuModel: "unknown CPU", memory: "unknown"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.memory = fmt.Sprintf("%.1f GiB", float64(si.Totalram)*float64(si.Unit)/(1<<30))
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		m.kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if binDir, err := cluster.Binaries(ctx); err == nil {
		m.kubernetes = firstLine(commandOutput(ctx, filepath.Join(binDir, "kube-apiserver"), "--version"))
		m.kubernetes = strings.TrimPrefix(m.kubernetes, "Kubernetes ")
	}
	m.etcd = strings.TrimPrefix(firstLine(commandOutput(ctx, "etcd", "--version")), "etcd Version: ")
	m.disk = strings.Join(strings.Fields(lastLine(commandOutput(ctx, "df", "--output=source,fstype", os.TempDir()))), " ")
	m.fsyncP50, m.fsyncP99 = fsyncLatency(os.TempDir())
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.load = strings.Fields(string(data))[0]
	}
	return m
}

// fsyncLatency times appending 4 KiB and fdatasync in dir, which is where
// etcd keeps its data: every etcd write waits for one.
func fsyncLatency(dir string) (p50, p99 time.Duration) {
	f, err := os.CreateTemp(dir, "certmint-bench-fsync-")
	if err != nil {
		return 0, 0
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	var lat []time.Duration
	for range 200 {
		start := time.Now()
		if _, err := f.Write(block); err != nil {
			return 0, 0
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, 0
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return quantile(lat, 0.5), quantile(lat, 0.99)
}

func commandOutput(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func lastLine(s string) string {
	return s[strings.LastIndexByte(s, '\n')+1:]
}

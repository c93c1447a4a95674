package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// runDirPrefix starts the name of every full-cluster run directory
	// under baseDir; the sweep recognizes leftovers by it.
	runDirPrefix = "run-"
	// cgroupPrefix starts the name of each node's cgroup root and CNI
	// network.
	cgroupPrefix = "certmint-e2e-"
	// runMarker appears in every path a full-cluster run creates.
	runMarker = "/certmint-e2e/" + runDirPrefix
)

// cniResultsDir is where libcni caches results; containerd does not let it be moved.
const cniResultsDir = "/var/lib/cni/results"

// baseDir holds the machine-wide lock and the full-cluster run directories.
func baseDir() string { return filepath.Join(os.TempDir(), "certmint-e2e") }

// sweep removes everything a full-cluster run leaves on the machine, whether
// it stopped cleanly or crashed: processes (components, shims and containers),
// mounts under run directories, the network namespace, node cgroups, CNI
// caches, log symlinks and the run directories. The caller holds the lock, so
// all of it belongs to runs that are over.
func sweep(ctx context.Context) error {
	var errs []error
	errs = append(errs, killLeftovers(ctx))
	errs = append(errs, unmountLeftovers())
	errs = append(errs, removeTaskLeftovers())
	errs = append(errs, tearDownNetwork(ctx))
	errs = append(errs, removeCgroups(ctx))
	errs = append(errs, removeHostFiles())
	errs = append(errs, removeRunDirs())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleaning up cluster leftovers: %w", err)
	}
	return nil
}

// killLeftovers SIGKILLs, until none is left, every process that is inside
// the cluster's network namespace (components and shims), inside a node's
// cgroup (containers) or started from a run directory.
func killLeftovers(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids := leftoverPIDs()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive SIGKILL", pids)
		}
		for _, pid := range pids {
			// The process may be gone already; the next scan tells.
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func leftoverPIDs() []int {
	self := os.Getpid()
	var nsIno uint64
	if st, err := os.Stat(netnsPath()); err == nil {
		nsIno = st.Sys().(*syscall.Stat_t).Ino
	}
	found := map[int]bool{}
	for _, pid := range cgroupPIDs() {
		found[pid] = true
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if nsIno != 0 {
			if st, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && st.Sys().(*syscall.Stat_t).Ino == nsIno {
				found[pid] = true
				continue
			}
		}
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmdline), runMarker) {
			found[pid] = true
		}
	}
	delete(found, self)
	delete(found, 1)
	pids := make([]int, 0, len(found))
	for pid := range found {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// cgroupPIDs lists the processes in every node cgroup.
func cgroupPIDs() []int {
	var pids []int
	for _, dir := range nodeCgroupDirs() {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// nodeCgroupDirs lists every cgroup directory at or below a node's cgroup
// root in every hierarchy, deepest first.
func nodeCgroupDirs() []string {
	var dirs []string
	for _, root := range cgroupMounts() {
		matches, _ := filepath.Glob(filepath.Join(root, cgroupPrefix+"*"))
		for _, m := range matches {
			_ = filepath.WalkDir(m, func(path string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
		}
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return dirs
}

func removeCgroups(ctx context.Context) error {
	// A killed process leaves its cgroup a moment after it dies.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var busy []string
		for _, dir := range nodeCgroupDirs() {
			if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
				busy = append(busy, dir)
			}
		}
		if len(busy) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups still in use: %v", busy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// unmountLeftovers detaches every mount under a run directory, deepest
// first, including those that kubelet, containerd and the CSI driver made.
func unmountLeftovers() error {
	for range 5 {
		mounts := mountsUnder(runMarker)
		if len(mounts) == 0 {
			return nil
		}
		for _, m := range mounts {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmounting %s: %w", m, err)
			}
		}
	}
	if mounts := mountsUnder(runMarker); len(mounts) > 0 {
		return fmt.Errorf("mounts remain: %v", mounts)
	}
	return nil
}

// mountInfo is the part of a /proc/self/mountinfo line the harness uses.
type mountInfo struct {
	mountPoint string
	fsType     string
}

func readMountInfo() []mountInfo {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw"
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mounts = append(mounts, mountInfo{mountPoint: unescapeMountPath(fields[4]), fsType: fields[sep+1]})
	}
	return mounts
}

// unescapeMountPath undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder lists mount points whose path contains marker, deepest first.
func mountsUnder(marker string) []string {
	var out []string
	for _, m := range readMountInfo() {
		if strings.Contains(m.mountPoint, marker) {
			out = append(out, m.mountPoint)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return slices.Compact(out)
}

// cgroupMounts lists the mount points of all cgroup hierarchies.
func cgroupMounts() []string {
	var roots []string
	for _, m := range readMountInfo() {
		if m.fsType == "cgroup" || m.fsType == "cgroup2" {
			roots = append(roots, m.mountPoint)
		}
	}
	return roots
}

// removeTaskLeftovers deletes what the tasks (containers and sandboxes) of
// earlier runs left in fixed host paths: the runc shims' sockets in the
// runtime's shared socket directory, and libcni's cached loopback results.
// Each task's bundle in the run directory records its shim's address, and
// its directory name is the ID those cache entries are keyed by.
func removeTaskLeftovers() error {
	bundles, _ := filepath.Glob(filepath.Join(baseDir(), runDirPrefix+"*", "containerd", "*", "state", "io.containerd.runtime.v2.task", "*", "*"))
	var errs []error
	remove := func(path string) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, b := range bundles {
		remove(filepath.Join(cniResultsDir, "cni-loopback-"+filepath.Base(b)+"-lo"))
		data, err := os.ReadFile(filepath.Join(b, "address"))
		if err != nil {
			continue
		}
		if sock := strings.TrimPrefix(strings.TrimSpace(string(data)), "unix://"); filepath.IsAbs(sock) {
			remove(sock)
		}
	}
	return errors.Join(errs...)
}

// removeHostFiles deletes what kubelets and CNI write to fixed host paths:
// the per-container log symlinks in /var/log/containers and libcni's cached
// results for the nodes' networks.
func removeHostFiles() error {
	var errs []error
	links, _ := filepath.Glob("/var/log/containers/*")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.Contains(target, runMarker) {
			errs = append(errs, os.Remove(l))
		}
	}
	cached, _ := filepath.Glob(filepath.Join(cniResultsDir, cgroupPrefix+"node-*"))
	for _, c := range cached {
		errs = append(errs, os.Remove(c))
	}
	return errors.Join(errs...)
}

// removeRunDirs deletes the run directories, but only once nothing is
// mounted below them: deleting through a bind mount would reach the host.
func removeRunDirs() error {
	if mounts := mountsUnder(runMarker); len(mounts) > 0 {
		return fmt.Errorf("not removing run directories while mounts remain: %v", mounts)
	}
	dirs, _ := filepath.Glob(filepath.Join(baseDir(), runDirPrefix+"*"))
	var errs []error
	for _, d := range dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

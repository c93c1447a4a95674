package storage

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The real mounter, on real mounts: a tmpfs volume directory bind-mounted
// read-only, then all of it removed.
func TestSyscallMounterMountsTmpfsAndReadOnlyBinds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	s, err := New(Options{DataRoot: filepath.Join(t.TempDir(), "data"), StateDir: filepath.Join(t.TempDir(), "state"), Mounter: NewMounter()})
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "target")
	if err := s.PrepareVolume("csi-real"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Unmount(target); _ = s.RemoveVolume("csi-real") })
	if err := s.WriteFiles("csi-real", map[string]File{"tls.crt": {Data: []byte("c"), Mode: 0o400}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Mount("csi-real", target); err != nil {
		t.Fatal(err)
	}
	if fs, opts := mountInfo(t, s.VolumeDir("csi-real")); fs != "tmpfs" || !hasOpt(opts, "nosuid") || !hasOpt(opts, "noexec") {
		t.Errorf("volume directory: %q %q, want a nosuid, noexec tmpfs", fs, opts)
	}
	if fs, opts := mountInfo(t, target); fs != "tmpfs" || !hasOpt(opts, "ro") {
		t.Errorf("target: %q %q, want the tmpfs read-only", fs, opts)
	}
	if data, err := os.ReadFile(filepath.Join(target, "tls.crt")); err != nil || string(data) != "c" {
		t.Errorf("tls.crt through the bind mount = %q, %v", data, err)
	}
	if err := s.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveVolume("csi-real"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{target, s.VolumeDir("csi-real")} {
		if fs, _ := mountInfo(t, p); fs != "" {
			t.Errorf("%s is still mounted", p)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists", p)
		}
	}
}

// mountInfo returns the file system type and mount options of the mount at
// path, or "" if nothing is mounted there.
func mountInfo(t *testing.T, path string) (fsType, opts string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[4] != path {
			continue
		}
		for i, fld := range fields {
			if fld == "-" {
				fsType = fields[i+1]
			}
		}
		opts = fields[5]
	}
	return fsType, opts
}

func hasOpt(opts, o string) bool {
	return strings.Contains(","+opts+",", ","+o+",")
}

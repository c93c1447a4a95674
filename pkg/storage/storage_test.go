package storage

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/mount-utils"
	clocktesting "k8s.io/utils/clock/testing"
)

func newStore(t *testing.T) (*Store, *mount.FakeMounter) {
	t.Helper()
	m := mount.NewFakeMounter(nil)
	s, err := New(Options{DataRoot: filepath.Join(t.TempDir(), "data"), StateDir: filepath.Join(t.TempDir(), "state"),
		Mounter: m, Clock: clocktesting.NewFakePassiveClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

func TestNewRequiresItsOptions(t *testing.T) {
	for _, o := range []Options{{StateDir: "s", Mounter: mount.NewFakeMounter(nil)}, {DataRoot: "d", Mounter: mount.NewFakeMounter(nil)}, {DataRoot: "d", StateDir: "s"}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestCheckVolumeIDRejectsPathTricks(t *testing.T) {
	for _, id := range []string{"", ".", "..", "a/b", "../x", "a\x00b", string(make([]byte, 129))} {
		if CheckVolumeID(id) == nil {
			t.Errorf("CheckVolumeID(%q) accepted", id)
		}
	}
	if err := CheckVolumeID("csi-4f1c0d3e"); err != nil {
		t.Error(err)
	}
}

func TestVolumeLifecycleMountsTmpfsBindsReadOnlyAndCleansUp(t *testing.T) {
	s, m := newStore(t)
	const id = "csi-1"
	target := filepath.Join(t.TempDir(), "pods", "target")
	if err := s.PrepareVolume(id); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareVolume(id); err != nil {
		t.Fatal("second PrepareVolume:", err)
	}
	if err := s.WriteFiles(id, map[string]File{"tls.crt": {Data: []byte("c"), Mode: 0o400}}, nil); err != nil {
		t.Fatal(err)
	}
	if data, err := s.ReadFile(id, "tls.crt"); err != nil || string(data) != "c" {
		t.Fatalf("ReadFile = %q, %v", data, err)
	}
	if _, err := s.ReadFile(id, "tls.key"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile of a missing file = %v, want ErrNotExist", err)
	}
	if err := s.Mount(id, target); err != nil {
		t.Fatal(err)
	}
	if err := s.Mount(id, target); err != nil {
		t.Fatal("second Publish:", err)
	}
	if len(m.MountPoints) != 2 {
		t.Fatalf("mounts = %+v, want one tmpfs and one bind mount", m.MountPoints)
	}
	tmpfs, bind := m.MountPoints[0], m.MountPoints[1]
	if tmpfs.Type != "tmpfs" || tmpfs.Path != s.VolumeDir(id) {
		t.Errorf("first mount = %+v, want tmpfs on the volume directory", tmpfs)
	}
	if bind.Path != target || !contains(bind.Opts, "ro") || !contains(bind.Opts, "bind") {
		t.Errorf("second mount = %+v, want a read-only bind of the volume directory", bind)
	}
	if ok, err := s.IsMounted(target); !ok || err != nil {
		t.Fatalf("IsPublished = %v, %v", ok, err)
	}

	for range 2 { // twice: both steps are idempotent
		if err := s.Unmount(target); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveVolume(id); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.MountPoints) != 0 {
		t.Fatalf("mounts left: %+v", m.MountPoints)
	}
	for _, p := range []string{target, s.VolumeDir(id)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists", p)
		}
	}
}

func TestStateRoundTripsAndIsRemovedWithTheVolume(t *testing.T) {
	s, _ := newStore(t)
	st := &State{VolumeID: "csi-2", TargetPath: "/t", Attributes: map[string]string{"a": "b"}, MountGroup: "2000",
		NotBefore: now, NotAfter: now.Add(time.Hour), RenewAt: now.Add(40 * time.Minute)}
	if err := s.SaveState(st); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadState("csi-2")
	if err != nil {
		t.Fatal(err)
	}
	if got.TargetPath != st.TargetPath || got.Attributes["a"] != "b" || !got.NotAfter.Equal(st.NotAfter) || got.MountGroup != "2000" {
		t.Fatalf("LoadState = %+v, want %+v", got, st)
	}
	fi, _ := os.Stat(s.statePath("csi-2"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode = %v, want 0600", fi.Mode().Perm())
	}
	if err := s.RemoveVolume("csi-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadState("csi-2"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadState after RemoveVolume = %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestListVolumesListsStatesButNotTempFiles(t *testing.T) {
	s, _ := newStore(t)
	for _, id := range []string{"csi-1", "csi-2"} {
		if err := s.SaveState(&State{VolumeID: id, TargetPath: "/t/" + id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.stateDir, ".tmp-csi-3-123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, err := s.ListVolumes()
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, []string{"csi-1", "csi-2"}) {
		t.Errorf("ListVolumes() = %v, %v", ids, err)
	}
}

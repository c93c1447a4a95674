package manager

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/client-go/tools/record"
	"k8s.io/mount-utils"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/renewal"
	"github.com/certmint/certmint/pkg/storage"
)

// node is the part of a node that outlives a driver restart: the kubelet's
// pods directory, the driver's state directory and the mounts.
type node struct {
	pods     string
	stateDir string
	mounter  *mount.FakeMounter
	store    *storage.Store
	trust    staticTrust
	req      *signNow
}

func newNode(t *testing.T) *node {
	t.Helper()
	signer, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{pods: filepath.Join(t.TempDir(), "pods"), stateDir: filepath.Join(t.TempDir(), "state"),
		mounter: mount.NewFakeMounter(nil), trust: staticTrust{shopCA: {signer.CA}}, req: &signNow{signer: signer}}
	n.store, err = storage.New(storage.Options{DataRoot: filepath.Join(t.TempDir(), "data"), StateDir: n.stateDir, Mounter: n.mounter})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// driver starts a driver's manager on the node, as after a restart.
func (n *node) driver(t *testing.T) (*Manager, *recordedRenewals) {
	t.Helper()
	rec := &recordedRenewals{}
	m, err := New(Options{Storage: n.store, Requester: n.req, Trust: n.trust, Logger: testr.New(t), Renewals: rec})
	if err != nil {
		t.Fatal(err)
	}
	return m, rec
}

// publish publishes a volume of pod podUID at the kubelet's target path for
// it and returns that path.
func (n *node) publish(t *testing.T, m *Manager, volumeID, podUID string) string {
	t.Helper()
	req := volume(t, volumeID, attributes.PodUIDKey, podUID, attributes.RenewBefore, "1h")
	req.TargetPath = filepath.Join(n.pods, podUID, "volumes", "kubernetes.io~csi", "tls", "mount")
	if err := os.MkdirAll(filepath.Dir(req.TargetPath), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	return req.TargetPath
}

func (n *node) unmount(t *testing.T, target string) {
	t.Helper()
	if err := n.mounter.Unmount(target); err != nil {
		t.Fatal(err)
	}
}

func resume(t *testing.T, n *node) *recordedRenewals {
	t.Helper()
	m, rec := n.driver(t)
	if err := m.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestResumeSchedulesMountedVolumesFromTheirState(t *testing.T) {
	n := newNode(t)
	before, _ := n.driver(t)
	n.publish(t, before, "csi-1", "uid-1")
	st, err := n.store.LoadState("csi-1")
	if err != nil {
		t.Fatal(err)
	}

	rec := resume(t, n)
	want := renewal.Certificate{NotBefore: st.NotBefore, NotAfter: st.NotAfter, RenewBefore: time.Hour}
	got, ok := rec.scheduled["csi-1"]
	if !ok || got != want {
		t.Errorf("scheduled %+v, want %+v", rec.scheduled, want)
	}
	if due := renewal.Due(got.NotBefore, got.NotAfter, got.RenewBefore); !due.Equal(st.RenewAt) {
		t.Errorf("renewal due at %v, want %v as when published", due, st.RenewAt)
	}
	if _, err := n.store.ReadFile("csi-1", "tls.crt"); err != nil {
		t.Errorf("the volume's files: %v", err)
	}
}

func TestResumeRemovesAVolumeWhosePodIsGone(t *testing.T) {
	n := newNode(t)
	before, _ := n.driver(t)
	target := n.publish(t, before, "csi-1", "uid-1")
	// The kubelet tore the pod down while the driver was away.
	n.unmount(t, target)
	if err := os.RemoveAll(filepath.Join(n.pods, "uid-1")); err != nil {
		t.Fatal(err)
	}

	rec := resume(t, n)
	if len(rec.scheduled) != 0 {
		t.Errorf("scheduled %v", rec.scheduled)
	}
	if _, err := n.store.LoadState("csi-1"); !os.IsNotExist(err) {
		t.Errorf("state: %v, want it removed", err)
	}
	if _, err := os.Stat(n.store.VolumeDir("csi-1")); !os.IsNotExist(err) {
		t.Errorf("volume directory: %v, want it removed", err)
	}
}

func TestResumeKeepsAVolumeWhosePodDirectoryExists(t *testing.T) {
	n := newNode(t)
	before, _ := n.driver(t)
	target := n.publish(t, before, "csi-1", "uid-1")
	n.unmount(t, target)
	// Only the pod's directory is left: not proof enough that the pod is gone.
	if err := os.RemoveAll(filepath.Dir(target)); err != nil {
		t.Fatal(err)
	}

	rec := resume(t, n)
	if _, err := n.store.LoadState("csi-1"); err != nil {
		t.Errorf("state: %v, want it kept", err)
	}
	if _, err := n.store.ReadFile("csi-1", "tls.crt"); err != nil {
		t.Errorf("the volume's files: %v, want them kept", err)
	}
	if len(rec.scheduled) != 0 {
		t.Errorf("an unmounted volume was scheduled: %v", rec.scheduled)
	}
}

func TestResumeMountsAgainAVolumeWhoseMountWasLost(t *testing.T) {
	n := newNode(t)
	before, _ := n.driver(t)
	target := n.publish(t, before, "csi-1", "uid-1")
	n.unmount(t, target)

	rec := resume(t, n)
	if published, err := n.store.IsMounted(target); err != nil || !published {
		t.Errorf("target published = %v, %v; want it mounted again", published, err)
	}
	if _, ok := rec.scheduled["csi-1"]; !ok {
		t.Errorf("scheduled %v, want csi-1", rec.scheduled)
	}
}

func TestResumeSkipsACorruptStateFile(t *testing.T) {
	n := newNode(t)
	before, _ := n.driver(t)
	n.publish(t, before, "csi-1", "uid-1")
	if err := os.WriteFile(filepath.Join(n.stateDir, "csi-0.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	rec := resume(t, n)
	if _, ok := rec.scheduled["csi-1"]; !ok || len(rec.scheduled) != 1 {
		t.Errorf("scheduled %v, want csi-1 only", rec.scheduled)
	}
	ids, err := n.store.ListVolumes()
	if err != nil || !slices.Contains(ids, "csi-0") {
		t.Errorf("ListVolumes() = %v, %v; want the corrupt state left for a person to look at", ids, err)
	}
}

func TestResumeReportsVolumesItCannotRenew(t *testing.T) {
	n := newNode(t)
	before, _ := n.driver(t)
	n.publish(t, before, "csi-1", "uid-1")
	// A state that no longer parses, and one whose attributes a newer driver
	// refuses (a typo it used to ignore).
	if err := os.WriteFile(filepath.Join(n.stateDir, "csi-0.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.publish(t, before, "csi-2", "uid-2")
	st, err := n.store.LoadState("csi-2")
	if err != nil {
		t.Fatal(err)
	}
	st.Attributes["csi.certmnt.io/duration"] = "1h"
	if err := n.store.SaveState(st); err != nil {
		t.Fatal(err)
	}

	events := record.NewFakeRecorder(10)
	m, err := New(Options{Storage: n.store, Requester: n.req, Trust: n.trust, Logger: testr.New(t), Events: events})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	problems := m.Problems()
	if len(problems) != 2 || !strings.Contains(problems[0], "csi-0") || !strings.Contains(problems[1], "csi-2") {
		t.Errorf("Problems() = %q, want csi-0 and csi-2", problems)
	}
	select {
	case ev := <-events.Events:
		if !strings.Contains(ev, ReasonVolumeStranded) || !strings.Contains(ev, "csi-2") || !strings.Contains(ev, "csi.certmnt.io/duration") {
			t.Errorf("event %q, want %s naming the volume and the cause", ev, ReasonVolumeStranded)
		}
	default:
		t.Error("no event on the pod whose volume will not be renewed")
	}

	// Gone with the volume.
	if err := m.Unpublish(context.Background(), "csi-2", st.TargetPath); err != nil {
		t.Fatal(err)
	}
	if problems := m.Problems(); len(problems) != 1 {
		t.Errorf("Problems() = %q after csi-2 was unpublished", problems)
	}
}

package manager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr/testr"

	"github.com/certmint/certmint/pkg/pki"
)

// leafSerial returns the serial number of the leaf of the tls.crt of
// csi-1, the volume every test here publishes.
func leafSerial(t *testing.T, m *Manager) string {
	t.Helper()
	data, err := m.store.ReadFile("csi-1", "tls.crt")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertificates(data)
	if err != nil {
		t.Fatal(err)
	}
	return chain[0].SerialNumber.String()
}

func TestVolumesHoldAPublishedVolumeWithItsCertificateUntilItIsUnpublished(t *testing.T) {
	m, store, _ := publishForRenewal(t, &signNow{})
	vols := m.Volumes()
	if len(vols) != 1 {
		t.Fatalf("Volumes() = %+v, want csi-1", vols)
	}
	v := vols[0]
	st, err := store.LoadState("csi-1")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case v.ID != "csi-1" || v.TargetPath != st.TargetPath:
		t.Errorf("volume %q at %q, want csi-1 at %q", v.ID, v.TargetPath, st.TargetPath)
	case v.Pod.Name != "web-0" || v.Pod.Namespace != "shop" || v.Pod.UID != "uid-1":
		t.Errorf("pod %+v, want shop/web-0 uid-1", v.Pod)
	case v.Issuer != shopCA:
		t.Errorf("issuer %v, want %v", v.Issuer, shopCA)
	case v.Certificate == nil || v.Certificate.SerialNumber.String() != leafSerial(t, m):
		t.Errorf("certificate %v, want the leaf of tls.crt", v.Certificate)
	case !v.NotBefore.Equal(st.NotBefore) || !v.NotAfter.Equal(st.NotAfter) || !v.RenewAt.Equal(st.RenewAt):
		t.Errorf("times %v %v %v, want the state's %v %v %v", v.NotBefore, v.NotAfter, v.RenewAt, st.NotBefore, st.NotAfter, st.RenewAt)
	case v.Stranded != "":
		t.Errorf("a renewed volume is reported stranded: %s", v.Stranded)
	}

	if err := m.Unpublish(context.Background(), "csi-1", v.TargetPath); err != nil {
		t.Fatal(err)
	}
	if vols := m.Volumes(); len(vols) != 0 {
		t.Errorf("Volumes() = %+v after the unpublish, want none", vols)
	}
}

func TestVolumesFollowARenewalAndKeepTheOldCertificateWhenOneFails(t *testing.T) {
	req := &signNow{}
	m, _, _ := publishForRenewal(t, req)
	first := m.Volumes()[0]
	if _, err := m.Renew(context.Background(), "csi-1"); err != nil {
		t.Fatal(err)
	}
	renewed := m.Volumes()[0]
	if renewed.Certificate.SerialNumber.Cmp(first.Certificate.SerialNumber) == 0 || renewed.Certificate.SerialNumber.String() != leafSerial(t, m) {
		t.Errorf("after a renewal the volume reports serial %v, want the new leaf's %s", renewed.Certificate.SerialNumber, leafSerial(t, m))
	}

	req.err = errors.New("the issuer is down")
	if _, err := m.Renew(context.Background(), "csi-1"); err == nil {
		t.Fatal("renewal succeeded with the issuer down")
	}
	if got := m.Volumes()[0]; got.Certificate.SerialNumber.Cmp(renewed.Certificate.SerialNumber) != 0 || !got.NotAfter.Equal(renewed.NotAfter) {
		t.Errorf("a failed renewal changed the volume to %v until %v", got.Certificate.SerialNumber, got.NotAfter)
	}
}

func TestVolumesLeaveOutAPublishThatFailed(t *testing.T) {
	m, _ := newManager(t, &signNow{err: errors.New("the issuer is down")})
	if err := m.Publish(context.Background(), volume(t, "csi-1")); err == nil {
		t.Fatal("publish succeeded with the issuer down")
	}
	if vols := m.Volumes(); len(vols) != 0 {
		t.Errorf("Volumes() = %+v, want none", vols)
	}
}

func TestResumedAndStrandedVolumesAreReported(t *testing.T) {
	n := newNode(t)
	before, _ := n.driver(t)
	n.publish(t, before, "csi-1", "uid-1")
	n.publish(t, before, "csi-2", "uid-2")
	st, err := n.store.LoadState("csi-2")
	if err != nil {
		t.Fatal(err)
	}
	st.Attributes["csi.certmnt.io/duration"] = "1h"
	if err := n.store.SaveState(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.stateDir, "csi-0.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	m, err := New(Options{Storage: n.store, Requester: n.req, Trust: n.trust, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	vols := m.Volumes()
	if len(vols) != 3 {
		t.Fatalf("Volumes() = %+v, want csi-0, csi-1 and csi-2", vols)
	}
	unreadable, resumed, refused := vols[0], vols[1], vols[2]
	if unreadable.ID != "csi-0" || unreadable.Stranded == "" || !unreadable.NotAfter.IsZero() || unreadable.Pod.Name != "" {
		t.Errorf("a state that does not parse: %+v, want only its ID and why it is not renewed", unreadable)
	}
	if resumed.ID != "csi-1" || resumed.Stranded != "" || resumed.Issuer != shopCA || resumed.Certificate == nil ||
		resumed.Certificate.SerialNumber.String() != leafSerial(t, m) {
		t.Errorf("a resumed volume: %+v, want its issuer and the leaf of its files", resumed)
	}
	if refused.ID != "csi-2" || refused.Stranded == "" || refused.Pod.Name != "web-0" || refused.Pod.UID != "uid-2" ||
		!refused.NotAfter.Equal(st.NotAfter) || !refused.RenewAt.Equal(st.RenewAt) || refused.Certificate != nil {
		t.Errorf("a state the driver refuses: %+v, want its pod, times and why it is not renewed", refused)
	}

	if err := m.Unpublish(context.Background(), "csi-2", st.TargetPath); err != nil {
		t.Fatal(err)
	}
	if vols := m.Volumes(); len(vols) != 2 || vols[1].ID != "csi-1" {
		t.Errorf("Volumes() = %+v after csi-2 was unpublished", vols)
	}
}

package manager

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/renewal"
	"github.com/certmint/certmint/pkg/storage"
)

// recordedRenewals is a Renewals that remembers what it was told.
type recordedRenewals struct {
	mu        sync.Mutex
	scheduled map[string]renewal.Certificate
	forgotten []string
	expedited []string
	renewNow  []string
}

func (r *recordedRenewals) Schedule(volumeID string, c renewal.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scheduled == nil {
		r.scheduled = map[string]renewal.Certificate{}
	}
	r.scheduled[volumeID] = c
}

func (r *recordedRenewals) Expedite(volumeID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expedited = append(r.expedited, volumeID)
}

func (r *recordedRenewals) RenewNow(volumeID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.renewNow = append(r.renewNow, volumeID)
}

func (r *recordedRenewals) Forget(volumeID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgotten = append(r.forgotten, volumeID)
}

var _ Renewals = (*recordedRenewals)(nil)

// publishForRenewal publishes volume csi-1 with renew-before 1h and returns
// its state and files.
func publishForRenewal(t *testing.T, req *signNow) (*Manager, *storage.Store, *recordedRenewals) {
	t.Helper()
	m, store := newManager(t, req)
	rec := &recordedRenewals{}
	m.renewals = rec
	if err := m.Publish(context.Background(), volume(t, "csi-1", attributes.RenewBefore, "1h")); err != nil {
		t.Fatal(err)
	}
	return m, store, rec
}

func readFiles(t *testing.T, store *storage.Store) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		data, err := store.ReadFile("csi-1", name)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(data)
	}
	return files
}

func TestPublishSchedulesTheCertificatesRenewal(t *testing.T) {
	_, store, rec := publishForRenewal(t, &signNow{})
	st, err := store.LoadState("csi-1")
	if err != nil {
		t.Fatal(err)
	}
	want := renewal.Certificate{NotBefore: st.NotBefore, NotAfter: st.NotAfter, RenewBefore: time.Hour}
	if got := rec.scheduled["csi-1"]; !reflect.DeepEqual(got, want) {
		t.Errorf("scheduled %+v, want %+v", got, want)
	}
}

func TestRenewSwapsTheFilesAndUpdatesTheState(t *testing.T) {
	m, store, _ := publishForRenewal(t, &signNow{})
	before := readFiles(t, store)

	c, err := m.Renew(context.Background(), "csi-1")
	if err != nil {
		t.Fatal(err)
	}
	after := readFiles(t, store)
	if after["tls.crt"] == before["tls.crt"] || after["tls.key"] == before["tls.key"] {
		t.Error("the certificate and key were not replaced")
	}
	chain, err := pki.ParseCertificates([]byte(after["tls.crt"]))
	if err != nil {
		t.Fatal(err)
	}
	if !chain[0].NotAfter.Equal(c.NotAfter) || c.RenewBefore != time.Hour {
		t.Errorf("Renew returned %+v for a certificate valid until %v", c, chain[0].NotAfter)
	}
	st, err := store.LoadState("csi-1")
	if err != nil {
		t.Fatal(err)
	}
	if !st.NotBefore.Equal(c.NotBefore) || !st.NotAfter.Equal(c.NotAfter) || !st.RenewAt.Equal(c.NotAfter.Add(-time.Hour)) {
		t.Errorf("state after renewal = %+v, want the new certificate's times", st)
	}
}

func TestFailedRenewalKeepsTheFilesAndState(t *testing.T) {
	req := &signNow{}
	m, store, _ := publishForRenewal(t, req)
	before := readFiles(t, store)
	stBefore, err := store.LoadState("csi-1")
	if err != nil {
		t.Fatal(err)
	}

	req.err = errors.New("the issuer is down")
	if _, err := m.Renew(context.Background(), "csi-1"); err == nil {
		t.Fatal("renewal succeeded")
	}
	if after := readFiles(t, store); !reflect.DeepEqual(after, before) {
		t.Error("a failed renewal changed the volume's files")
	}
	if st, err := store.LoadState("csi-1"); err != nil || !reflect.DeepEqual(st, stBefore) {
		t.Errorf("state after a failed renewal = %+v (%v), want %+v", st, err, stBefore)
	}
}

func TestUnpublishForgetsTheVolumeAndRenewingItIsGone(t *testing.T) {
	m, _, rec := publishForRenewal(t, &signNow{})
	st, err := m.store.LoadState("csi-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unpublish(context.Background(), "csi-1", st.TargetPath); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec.forgotten, []string{"csi-1"}) {
		t.Errorf("forgotten: %v", rec.forgotten)
	}
	if _, err := m.Renew(context.Background(), "csi-1"); !errors.Is(err, renewal.ErrVolumeGone) {
		t.Errorf("renewing an unpublished volume: %v, want ErrVolumeGone", err)
	}
}

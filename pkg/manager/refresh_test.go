package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
)

// reissueAt is a ReissueSource with fixed times.
type reissueAt map[request.IssuerRef]time.Time

func (r reissueAt) ReissueBefore(issuer request.IssuerRef) time.Time { return r[issuer] }

var _ ReissueSource = reissueAt(nil)

// refreshAll works off the volumes queued by issuer changes.
func refreshAll(t *testing.T, m *Manager) {
	t.Helper()
	for m.refresh.Len() > 0 {
		if !m.refreshNext(context.Background()) {
			t.Fatal("the refresh queue was shut down")
		}
	}
}

func readVolumeFile(t *testing.T, store *storage.Store, volumeID, name string) string {
	t.Helper()
	data, err := store.ReadFile(volumeID, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestANewTrustBundleIsWrittenIntoEveryVolumeOfTheIssuerWithTheRestUnchanged(t *testing.T) {
	req := &signNow{}
	m, store := newManager(t, req)
	rec := &recordedRenewals{}
	m.renewals = rec
	trust := m.trust.(staticTrust)
	for _, id := range []string{"csi-1", "csi-2"} {
		if err := m.Publish(context.Background(), volume(t, id, attributes.PKCS12Enable, "true", attributes.PKCS12Password, "p12")); err != nil {
			t.Fatal(err)
		}
	}
	key, cert := readVolumeFile(t, store, "csi-1", "tls.key"), readVolumeFile(t, store, "csi-1", "tls.crt")

	// The issuer's CA rotates: it publishes the old and the new CA.
	next, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	trust[shopCA] = append(trust[shopCA], next.CA)
	m.IssuerChanged(shopCA)
	refreshAll(t, m)

	want := string(pki.EncodeCertificates(trust[shopCA]...))
	for _, id := range []string{"csi-1", "csi-2"} {
		if got := readVolumeFile(t, store, id, "ca.crt"); got != want {
			t.Errorf("%s: ca.crt =\n%s\nwant the old and the new CA", id, got)
		}
		_, _, cas, err := pkcs12.DecodeChain([]byte(readVolumeFile(t, store, id, "keystore.p12")), "p12")
		if err != nil || len(cas) != 2 {
			t.Errorf("%s: keystore.p12 holds %d CAs (%v), want both", id, len(cas), err)
		}
	}
	if readVolumeFile(t, store, "csi-1", "tls.key") != key || readVolumeFile(t, store, "csi-1", "tls.crt") != cert {
		t.Error("the key or certificate changed with the trust bundle")
	}
	if len(rec.expedited) != 0 {
		t.Errorf("expedited %v; the new bundle still verifies every certificate", rec.expedited)
	}
}

func TestABundleThatDoesNotVerifyTheVolumesCertificateKeepsItsCAUntilItIsReissued(t *testing.T) {
	req := &signNow{}
	m, store := newManager(t, req)
	rec := &recordedRenewals{}
	m.renewals = rec
	old := req.signer
	unrelated, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	trust := m.trust.(staticTrust)
	trust[shopCA] = []*x509.Certificate{old.CA, unrelated.CA}
	if err := m.Publish(context.Background(), volume(t, "csi-1", attributes.PKCS12Enable, "true", attributes.PKCS12Password, "p12")); err != nil {
		t.Fatal(err)
	}
	key, cert := readVolumeFile(t, store, "csi-1", "tls.key"), readVolumeFile(t, store, "csi-1", "tls.crt")

	// The issuer is deleted and created again: a new root, no rotation, no
	// reissueBefore.
	next, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	trust[shopCA] = []*x509.Certificate{next.CA}
	m.IssuerChanged(shopCA)
	refreshAll(t, m)

	// The new CA for peers already re-issued, the old one for the volume's
	// own certificate and peers not re-issued yet; not the CA that verifies
	// nothing of the volume.
	want := string(pki.EncodeCertificates(next.CA, old.CA))
	if got := readVolumeFile(t, store, "csi-1", "ca.crt"); got != want {
		t.Errorf("ca.crt =\n%s\nwant the new CA, then the old one", got)
	}
	if _, _, cas, err := pkcs12.DecodeChain([]byte(readVolumeFile(t, store, "csi-1", "keystore.p12")), "p12"); err != nil || len(cas) != 2 {
		t.Errorf("keystore.p12 holds %d CAs (%v), want the new and the old", len(cas), err)
	}
	if readVolumeFile(t, store, "csi-1", "tls.key") != key || readVolumeFile(t, store, "csi-1", "tls.crt") != cert {
		t.Error("the key or certificate changed with the trust bundle")
	}
	if !slices.Equal(rec.expedited, []string{"csi-1"}) {
		t.Errorf("expedited %v, want csi-1", rec.expedited)
	}

	// Looked at again before its re-issue, the volume keeps the old CA.
	m.IssuerChanged(shopCA)
	refreshAll(t, m)
	if got := readVolumeFile(t, store, "csi-1", "ca.crt"); got != want {
		t.Errorf("ca.crt after a second look =\n%s\nwant it unchanged", got)
	}

	// Re-issued by the new CA, the volume gets the issuer's bundle alone.
	req.signer = next
	if _, err := m.Renew(context.Background(), "csi-1"); err != nil {
		t.Fatal(err)
	}
	if got, want := readVolumeFile(t, store, "csi-1", "ca.crt"), string(pki.EncodeCertificates(trust[shopCA]...)); got != want {
		t.Errorf("ca.crt after the re-issue =\n%s\nwant the new CA only", got)
	}
}

func TestAVolumeBusyWithAPublishOrRenewalIsLookedAtAgainWithoutUsingUpItsRetries(t *testing.T) {
	req := &signNow{}
	_, store := newManager(t, req)
	clk := clocktesting.NewFakeClock(time.Now())
	trust := staticTrust{shopCA: {req.signer.CA}}
	m, err := New(Options{Storage: store, Requester: req, Trust: trust, Logger: testr.New(t), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(context.Background(), volume(t, "csi-1")); err != nil {
		t.Fatal(err)
	}
	next, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	trust[shopCA] = append(trust[shopCA], next.CA)
	unlock, err := m.lock("csi-1")
	if err != nil {
		t.Fatal(err)
	}
	m.IssuerChanged(shopCA)

	// Longer busy than all the retries of a failure would last.
	for range maxRefreshRetries + 1 {
		m.refreshNext(context.Background())
		if n := m.refresh.NumRequeues("csi-1"); n != 0 {
			t.Fatalf("a busy volume counts %d failed attempts, want none", n)
		}
		awaitRequeue(t, m, clk)
	}
	unlock()
	m.refreshNext(context.Background())
	if got, want := readVolumeFile(t, store, "csi-1", "ca.crt"), string(pki.EncodeCertificates(trust[shopCA]...)); got != want {
		t.Errorf("ca.crt =\n%s\nwant the new bundle once the volume is free", got)
	}
}

// awaitRequeue lets busyRetryDelay pass on clk and waits for the refresh
// queue to hand out the busy volume again.
func awaitRequeue(t *testing.T, m *Manager, clk *clocktesting.FakeClock) {
	t.Helper()
	if m.refresh.Len() != 0 {
		t.Fatal("a busy volume was queued again at once")
	}
	clk.Step(busyRetryDelay)
	for deadline := time.Now().Add(5 * time.Second); m.refresh.Len() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the busy volume was not queued again %v later", busyRetryDelay)
		}
	}
}

func TestAChangeOfAnotherIssuerLeavesTheVolumeAlone(t *testing.T) {
	m, store := newManager(t, &signNow{})
	if err := m.Publish(context.Background(), volume(t, "csi-1")); err != nil {
		t.Fatal(err)
	}
	before := readVolumeFile(t, store, "csi-1", "ca.crt")
	other := request.IssuerRef{Kind: request.KindClusterIssuer, Name: "mesh"}
	next, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	m.trust.(staticTrust)[other] = []*x509.Certificate{next.CA}
	m.IssuerChanged(other)
	refreshAll(t, m)
	if readVolumeFile(t, store, "csi-1", "ca.crt") != before {
		t.Error("ca.crt changed with another issuer's bundle")
	}
}

func TestReissueBeforeExpeditesTheVolumesWhoseRequestIsOlder(t *testing.T) {
	m, store := newManager(t, &signNow{})
	rec := &recordedRenewals{}
	m.renewals = rec
	for _, id := range []string{"csi-old", "csi-new"} {
		if err := m.Publish(context.Background(), volume(t, id)); err != nil {
			t.Fatal(err)
		}
	}
	cut := time.Now().Add(time.Minute)
	st, err := store.LoadState("csi-new")
	if err != nil {
		t.Fatal(err)
	}
	st.RequestCreated = cut.Add(time.Second)
	if err := store.SaveState(st); err != nil {
		t.Fatal(err)
	}

	m.reissue = reissueAt{shopCA: cut}
	m.IssuerChanged(shopCA)
	refreshAll(t, m)
	if !slices.Equal(rec.expedited, []string{"csi-old"}) {
		t.Errorf("expedited %v, want csi-old only", rec.expedited)
	}
}

func TestRenewedCertificateStillOlderThanReissueBeforeIsScheduledForReissue(t *testing.T) {
	m, _, _ := publishForRenewal(t, &signNow{})
	m.reissue = reissueAt{shopCA: time.Now().Add(time.Hour)}
	c, err := m.Renew(context.Background(), "csi-1")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Reissue {
		t.Error("a certificate requested before the issuer's reissueBefore is not marked for re-issue")
	}
	m.reissue = reissueAt{shopCA: time.Now().Add(-time.Hour)}
	if c, err := m.Renew(context.Background(), "csi-1"); err != nil || c.Reissue {
		t.Errorf("Renew = %+v, %v; want a certificate not to re-issue", c, err)
	}
}

func TestAFailedRenewalRaisesAnEventOnThePod(t *testing.T) {
	req := &signNow{}
	m, _, _ := publishForRenewal(t, req)
	events := record.NewFakeRecorder(10)
	m.events = events
	req.err = errors.New("the issuer is down")
	if _, err := m.Renew(context.Background(), "csi-1"); err == nil {
		t.Fatal("renewal succeeded")
	}
	select {
	case e := <-events.Events:
		if !strings.HasPrefix(e, "Warning "+ReasonRenewalFailed+" ") || !strings.Contains(e, "the issuer is down") || !strings.Contains(e, "stays in place") {
			t.Errorf("event %q", e)
		}
	default:
		t.Error("no event")
	}
}

func TestGarbageCollectionRemovesRunningVolumesWhosePodIsGone(t *testing.T) {
	n := newNode(t)
	m, rec := n.driver(t)
	gone := n.publish(t, m, "csi-1", "uid-1")
	n.publish(t, m, "csi-2", "uid-2")
	// The pod was removed without NodeUnpublishVolume.
	n.unmount(t, gone)
	if err := os.RemoveAll(filepath.Join(n.pods, "uid-1")); err != nil {
		t.Fatal(err)
	}

	m.CollectGarbage(context.Background())
	if _, err := n.store.LoadState("csi-1"); !os.IsNotExist(err) {
		t.Errorf("state of csi-1: %v, want it removed", err)
	}
	if _, err := os.Stat(n.store.VolumeDir("csi-1")); !os.IsNotExist(err) {
		t.Errorf("volume directory of csi-1: %v, want it removed", err)
	}
	if !slices.Contains(rec.forgotten, "csi-1") {
		t.Errorf("forgotten %v, want csi-1's renewal stopped", rec.forgotten)
	}
	if _, err := n.store.ReadFile("csi-2", "tls.crt"); err != nil {
		t.Errorf("csi-2, whose pod is there: %v", err)
	}
}

func TestResumeRemovesTheFilesOfAPublishCutShort(t *testing.T) {
	n := newNode(t)
	if err := n.store.PrepareVolume("csi-9"); err != nil {
		t.Fatal(err)
	}
	if err := n.store.WriteFiles("csi-9", map[string]storage.File{"tls.key": {Data: []byte("key"), Mode: 0o400}}, nil); err != nil {
		t.Fatal(err)
	}
	resume(t, n)
	if _, err := os.Stat(n.store.VolumeDir("csi-9")); !os.IsNotExist(err) {
		t.Errorf("volume directory: %v, want it removed", err)
	}
}

func TestAnExpiredCertificateKeepsNoCAItsIssuerDropped(t *testing.T) {
	req := &signNow{}
	m, store := newManager(t, req)
	m.renewals = &recordedRenewals{}
	old := req.signer
	if err := m.Publish(context.Background(), volume(t, "csi-1")); err != nil {
		t.Fatal(err)
	}

	// Re-issuing has kept failing until the certificate expired; the
	// issuer meanwhile publishes a new root only. Trusting the old one
	// longer would serve no valid certificate, and it may have been
	// dropped because its key leaked.
	m.clock = clocktesting.NewFakeClock(time.Now().Add(365 * 24 * time.Hour))
	next, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	trust := m.trust.(staticTrust)
	trust[shopCA] = []*x509.Certificate{next.CA}
	m.IssuerChanged(shopCA)
	refreshAll(t, m)

	if got, want := readVolumeFile(t, store, "csi-1", "ca.crt"), string(pki.EncodeCertificates(next.CA)); got != want {
		t.Errorf("ca.crt =\n%s\nwant the new CA alone, not the old %s", got, old.CA.Subject)
	}
}

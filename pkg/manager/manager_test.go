package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/mount-utils"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/csr"
	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
	"github.com/certmint/certmint/pkg/trust"
)

// signNow is a Requester that signs in-process, or answers with err.
type signNow struct {
	signer *csrtest.Signer
	err    error
	// block, if not nil, holds every request until it is closed.
	block chan struct{}
}

func (s *signNow) Request(ctx context.Context, r *certificatesv1.CertificateSigningRequest) (*csr.Issued, error) {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	now := time.Now()
	chain, err := s.signer.Sign(r, now)
	if err != nil {
		return nil, err
	}
	return &csr.Issued{Chain: chain, Created: now}, nil
}

var _ csr.Requester = (*signNow)(nil)

// staticTrust is a TrustSource with fixed bundles; issuers it lacks are
// unknown.
type staticTrust map[request.IssuerRef][]*x509.Certificate

func (s staticTrust) CABundle(_ context.Context, issuer request.IssuerRef) ([]*x509.Certificate, error) {
	if b := s[issuer]; len(b) > 0 {
		return b, nil
	}
	return nil, fmt.Errorf("%w for %s: the issuer does not exist", trust.ErrNoTrustBundle, issuer)
}

var _ TrustSource = staticTrust(nil)

// shopCA is the issuer volume() addresses.
var shopCA = request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}

// newManager returns a Manager whose requests req signs, with the signer's
// CA as the trust bundle of Issuer shop/ca.
func newManager(t *testing.T, req *signNow) (*Manager, *storage.Store) {
	t.Helper()
	signer, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	req.signer = signer
	return newManagerWithTrust(t, req, staticTrust{shopCA: {signer.CA}})
}

func newManagerWithTrust(t *testing.T, req *signNow, trust TrustSource) (*Manager, *storage.Store) {
	t.Helper()
	store, err := storage.New(storage.Options{DataRoot: filepath.Join(t.TempDir(), "data"), StateDir: filepath.Join(t.TempDir(), "state"), Mounter: mount.NewFakeMounter(nil)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Storage: store, Requester: req, Trust: trust, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	return m, store
}

func volume(t *testing.T, id string, kv ...string) PublishRequest {
	attrs := map[string]string{
		attributes.PodNameKey: "web-0", attributes.PodNamespaceKey: "shop", attributes.PodUIDKey: "uid-1",
		attributes.ServiceAccountNameKey: "web", attributes.EphemeralKey: "true", attributes.IssuerName: "ca",
		attributes.CommonName: "web",
	}
	for i := 0; i < len(kv); i += 2 {
		attrs[kv[i]] = kv[i+1]
	}
	return PublishRequest{VolumeID: id, TargetPath: filepath.Join(t.TempDir(), "target"), Attributes: attrs}
}

func TestPublishWritesKeystoresAndStateWithoutSecrets(t *testing.T) {
	m, store := newManager(t, &signNow{})
	req := volume(t, "csi-1", attributes.PKCS12Enable, "true", attributes.PKCS12Password, "p12-secret",
		attributes.JKSEnable, "true", attributes.JKSPassword, "jks-secret", attributes.ServiceAccountTokensKey, "sa-token-secret")
	if err := m.Publish(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	p12, err := store.ReadFile("csi-1", "keystore.p12")
	if err != nil {
		t.Fatal(err)
	}
	if _, leaf, cas, err := pkcs12.DecodeChain(p12, "p12-secret"); err != nil || leaf.Subject.CommonName != "web" || len(cas) != 1 {
		t.Fatalf("keystore.p12: %v", err)
	}
	if _, err := store.ReadFile("csi-1", "keystore.jks"); err != nil {
		t.Fatal(err)
	}
	st, err := store.LoadState("csi-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.TargetPath != req.TargetPath || st.NotAfter.Sub(st.NotBefore) < 24*time.Hour || !st.RenewAt.After(st.NotBefore) {
		t.Errorf("state = %+v", st)
	}
	if _, ok := st.Attributes[attributes.ServiceAccountTokensKey]; ok {
		t.Error("state holds the ServiceAccount tokens")
	}
}

func TestRenewalReusesTheKeyOnlyWhenAsked(t *testing.T) {
	for _, reuse := range []bool{true, false} {
		m, store := newManager(t, &signNow{})
		flag := "false"
		if reuse {
			flag = "true"
		}
		req := volume(t, "csi-1", attributes.ReusePrivateKey, flag)
		if err := m.Publish(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		first, _ := store.ReadFile("csi-1", "tls.key")
		if _, err := m.Renew(context.Background(), "csi-1"); err != nil {
			t.Fatal(err)
		}
		second, _ := store.ReadFile("csi-1", "tls.key")
		if same := string(first) == string(second); same != reuse {
			t.Errorf("reuse-private-key=%s: key kept = %v", flag, same)
		}
	}
}

func TestPublishLeavesNothingBehindWhenIssuanceFails(t *testing.T) {
	m, store := newManager(t, &signNow{err: &csr.DeniedError{Name: "certmint-1", Reason: "NotAllowed", Message: "no"}})
	req := volume(t, "csi-1")
	err := m.Publish(context.Background(), req)
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "Issuer shop/ca") || !strings.Contains(err.Error(), "NotAllowed: no") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(store.VolumeDir("csi-1")); !os.IsNotExist(err) {
		t.Error("volume directory left behind")
	}
	if _, err := store.LoadState("csi-1"); !os.IsNotExist(err) {
		t.Error("state left behind")
	}
}

func TestPublishRefusesAConcurrentCallForTheSameVolume(t *testing.T) {
	block := make(chan struct{})
	m, _ := newManager(t, &signNow{block: block})
	req := volume(t, "csi-1")
	done := make(chan error)
	go func() { done <- m.Publish(context.Background(), req) }()
	// Wait until the first call holds the volume.
	for deadline := time.Now().Add(5 * time.Second); ; {
		m.mu.Lock()
		held := m.inFlight["csi-1"]
		m.mu.Unlock()
		if held || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := m.Publish(context.Background(), req); !errors.Is(err, ErrInProgress) {
		t.Errorf("concurrent publish: %v, want ErrInProgress", err)
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPublishWritesTheIssuersTrustBundleAsTheCAFile(t *testing.T) {
	signer, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	other, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	// A bundle may hold more than the signing CA, e.g. during a rotation.
	m, store := newManagerWithTrust(t, &signNow{signer: signer}, staticTrust{shopCA: {other.CA, signer.CA}})
	if err := m.Publish(context.Background(), volume(t, "csi-1")); err != nil {
		t.Fatal(err)
	}
	got, err := store.ReadFile("csi-1", "ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	if want := pki.EncodeCertificates(other.CA, signer.CA); string(got) != string(want) {
		t.Errorf("ca.crt =\n%s\nwant the trust bundle\n%s", got, want)
	}
	chain, err := store.ReadFile("csi-1", "tls.crt")
	if err != nil {
		t.Fatal(err)
	}
	if certs, err := pki.ParseCertificates(chain); err != nil || len(certs) != 1 {
		t.Errorf("tls.crt holds %d certificates (%v), want the leaf alone as signed", len(certs), err)
	}
}

func TestPublishFailsWhenTheIssuerHasNoTrustBundle(t *testing.T) {
	// No signer: the request must not even be made.
	m, store := newManagerWithTrust(t, &signNow{err: errors.New("the request was made")}, staticTrust{})
	err := m.Publish(context.Background(), volume(t, "csi-1"))
	if !errors.Is(err, trust.ErrNoTrustBundle) || !strings.Contains(err.Error(), "Issuer shop/ca") {
		t.Fatalf("err = %v, want ErrNoTrustBundle naming Issuer shop/ca", err)
	}
	if _, err := os.Stat(store.VolumeDir("csi-1")); !os.IsNotExist(err) {
		t.Error("volume directory left behind")
	}
}

func TestPublishFailsWhenTheCertificateDoesNotVerifyAgainstTheTrustBundle(t *testing.T) {
	signer, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	m, store := newManagerWithTrust(t, &signNow{signer: signer}, staticTrust{shopCA: {stranger.CA}})
	err = m.Publish(context.Background(), volume(t, "csi-1"))
	if err == nil || !strings.Contains(err.Error(), "does not verify against its trust bundle") || !strings.Contains(err.Error(), "Issuer shop/ca") {
		t.Fatalf("err = %v, want a verification failure naming Issuer shop/ca", err)
	}
	if _, err := os.Stat(store.VolumeDir("csi-1")); !os.IsNotExist(err) {
		t.Error("volume directory left behind")
	}
}

package volumestatus

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/mount-utils"

	"github.com/certmint/certmint/internal/metricstest"
	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/csr"
	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/renewal"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
)

// signer signs in-process with a test CA, as the controller would.
type signer struct{ *csrtest.Signer }

func (s signer) Request(_ context.Context, r *certificatesv1.CertificateSigningRequest) (*csr.Issued, error) {
	now := time.Now()
	chain, err := s.Sign(r, now)
	if err != nil {
		return nil, err
	}
	return &csr.Issued{Chain: chain, Created: now}, nil
}

type trustOf struct{ ca *x509.Certificate }

func (t trustOf) CABundle(context.Context, request.IssuerRef) ([]*x509.Certificate, error) {
	return []*x509.Certificate{t.ca}, nil
}

// TestTheSeriesAndEntryOfAVolumeLiveExactlyAsLongAsTheVolume runs the real
// manager and scheduler: a published volume has its series and its entry,
// with the certificate of its files, and neither holds a key, a token or a
// keystore password; once unpublished it has neither.
func TestTheSeriesAndEntryOfAVolumeLiveExactlyAsLongAsTheVolume(t *testing.T) {
	ca, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.New(storage.Options{DataRoot: filepath.Join(t.TempDir(), "data"), StateDir: filepath.Join(t.TempDir(), "state"), Mounter: mount.NewFakeMounter(nil)})
	if err != nil {
		t.Fatal(err)
	}
	scheduler, err := renewal.New(renewal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manager.New(manager.Options{Storage: store, Requester: signer{ca}, Trust: trustOf{ca.CA}, Renewals: scheduler, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{Volumes: m, Renewals: scheduler, NodeName: "node-a"})
	if err != nil {
		t.Fatal(err)
	}

	const token, password = "sa-token-never-shown", "keystore-password-never-shown"
	target := filepath.Join(t.TempDir(), "pods", "uid-1", "volumes", "kubernetes.io~csi", "tls", "mount")
	req := manager.PublishRequest{VolumeID: "csi-1", TargetPath: target, Attributes: map[string]string{
		attributes.PodNameKey: "web-0", attributes.PodNamespaceKey: "shop", attributes.PodUIDKey: "uid-1",
		attributes.ServiceAccountNameKey: "web", attributes.EphemeralKey: "true", attributes.IssuerName: "ca",
		attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.ServiceAccountTokensKey: token,
		attributes.PKCS12Enable: "true", attributes.PKCS12Password: password,
	}}
	if err := m.Publish(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	certPEM, err := store.ReadFile("csi-1", "tls.crt")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertificates(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]

	const labels = `{issuer="issuers.certmint.io/shop.ca",namespace="shop",pod="web-0",volume="tls"}`
	got := metricstest.Series(t, r)
	if v, ok := got["certmint_driver_certificate_not_after_timestamp_seconds"+labels]; !ok || v != float64(leaf.NotAfter.Unix()) {
		t.Errorf("series:\n%s\nwant the expiry of tls.crt, %d, for the volume", metricstest.Format(got), leaf.NotAfter.Unix())
	}
	due := renewal.Due(leaf.NotBefore, leaf.NotAfter, 0)
	if v := got["certmint_driver_certificate_renewal_timestamp_seconds"+labels]; v != float64(due.Unix()) {
		t.Errorf("renewal series %v, want %d, two thirds into the certificate's life", v, due.Unix())
	}

	code, body := get(t, r, "/volumes?namespace=shop&pod=web-0")
	if code != http.StatusOK {
		t.Fatalf("GET /volumes = %d %s", code, body)
	}
	for _, secret := range []string{token, password, "PRIVATE KEY"} {
		if strings.Contains(body, secret) {
			t.Errorf("/volumes shows %q:\n%s", secret, body)
		}
	}
	var list List
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Volumes) != 1 {
		t.Fatalf("/volumes lists %+v, want csi-1", list.Volumes)
	}
	v := list.Volumes[0]
	switch {
	case v.Certificate == nil || v.Certificate.SerialNumber != fmt.Sprintf("%x", leaf.SerialNumber) ||
		len(v.Certificate.DNSNames) != 1 || v.Certificate.DNSNames[0] != "web-0.shop.svc":
		t.Errorf("certificate %+v, want serial %x for web-0.shop.svc, as in tls.crt", v.Certificate, leaf.SerialNumber)
	case v.NextRenewalAttempt == nil || v.NextRenewalAttempt.After(due) || v.RenewalTime == nil || !v.RenewalTime.Equal(due):
		t.Errorf("renewal due %v, next attempt %v; want due at %v and the attempt no later", v.RenewalTime, v.NextRenewalAttempt, due)
	}

	if err := m.Unpublish(context.Background(), "csi-1", target); err != nil {
		t.Fatal(err)
	}
	if got := metricstest.Series(t, r); len(got) != 0 {
		t.Errorf("series after the unpublish:\n%s", metricstest.Format(got))
	}
	if _, body := get(t, r, "/volumes"); !sameJSON(t, body, `{"node": "node-a", "volumes": []}`) {
		t.Errorf("GET /volumes after the unpublish = %s", body)
	}
}

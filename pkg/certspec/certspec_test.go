package certspec

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixture is a CA and a leaf key; issue makes leaf certificates from a
// template as a signer would.
type fixture struct {
	ca     *x509.Certificate
	caKey  crypto.Signer
	key    crypto.Signer
	spiffe *url.URL
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://td/ns/shop/sa/web")
	return &fixture{ca: ca, caKey: caKey, key: key, spiffe: u}
}

// good is a leaf exactly as spec() asks for.
func (f *fixture) good() *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "web"},
		DNSNames: []string{"web.shop.svc"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}, URIs: []*url.URL{f.spiffe},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

func (f *fixture) issue(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca, pub, f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func (f *fixture) spec() *Spec {
	return &Spec{
		Subject: pkix.Name{CommonName: "web"}, DNSNames: []string{"web.shop.svc"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}, URIs: []*url.URL{f.spiffe}, Duration: 24 * time.Hour,
		Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth},
	}
}

func TestVerifyAcceptsWhatWasAskedFor(t *testing.T) {
	f := newFixture(t)
	leaf := f.issue(t, f.good(), f.key.Public())
	if err := f.spec().Verify(f.key.Public(), []*x509.Certificate{leaf, f.ca}, now); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRejectsACertificateThatIsNotWhatWasAskedFor(t *testing.T) {
	f := newFixture(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCAFixture := newFixture(t)
	cases := []struct {
		name  string
		chain func() []*x509.Certificate
		want  string
	}{
		{"a certificate for another key", func() []*x509.Certificate {
			return []*x509.Certificate{f.issue(t, f.good(), other.Public())}
		}, "not for the private key"},
		{"a chain whose next certificate did not sign the leaf", func() []*x509.Certificate {
			return []*x509.Certificate{f.issue(t, f.good(), f.key.Public()), otherCAFixture.ca}
		}, "not signed by the next"},
		{"another common name", func() []*x509.Certificate {
			c := f.good()
			c.Subject.CommonName = "admin"
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "common name"},
		{"an extra DNS name", func() []*x509.Certificate {
			c := f.good()
			c.DNSNames = append(c.DNSNames, "evil.example.com")
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "DNS names"},
		{"another IP address", func() []*x509.Certificate {
			c := f.good()
			c.IPAddresses = []net.IP{net.ParseIP("10.0.0.2")}
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "IP addresses"},
		{"a missing URI", func() []*x509.Certificate {
			c := f.good()
			c.URIs = nil
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "URIs"},
		{"a CA certificate nobody asked for", func() []*x509.Certificate {
			c := f.good()
			c.IsCA = true
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "CA"},
		{"a missing extended usage", func() []*x509.Certificate {
			c := f.good()
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, `"client auth"`},
		{"a missing key usage", func() []*x509.Certificate {
			c := f.good()
			c.KeyUsage = x509.KeyUsageKeyEncipherment
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, `"digital signature"`},
		{"an expired certificate", func() []*x509.Certificate {
			c := f.good()
			c.NotBefore, c.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Hour)
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "expired"},
		{"a certificate from the future", func() []*x509.Certificate {
			c := f.good()
			c.NotBefore = now.Add(time.Hour)
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "not valid before"},
		{"a longer lifetime than requested", func() []*x509.Certificate {
			c := f.good()
			c.NotAfter = now.Add(30 * 24 * time.Hour)
			return []*x509.Certificate{f.issue(t, c, f.key.Public())}
		}, "longer than the requested"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := f.spec().Verify(f.key.Public(), c.chain(), now)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/issuertest"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type testCA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// newTestCA makes a CA certificate signed by parent (self-signed when parent
// is nil) with the given template tweaks.
func newTestCA(t *testing.T, cn string, parent *testCA, notBefore, notAfter time.Time, tweak func(*x509.Certificate)) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if tweak != nil {
		tweak(tmpl)
	}
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{
		cert: cert, key: key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

func newCSR(t *testing.T, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func parseChain(t *testing.T, chainPEM []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, chainPEM = pem.Decode(chainPEM)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	return certs
}

func TestSignWithIntermediateBuildsAChainThatVerifiesToTheRoot(t *testing.T) {
	root := newTestCA(t, "root", nil, t0.Add(-time.Hour), t0.Add(10*365*24*time.Hour), nil)
	inter := newTestCA(t, "intermediate", root, t0.Add(-time.Hour), t0.Add(365*24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{
		corev1.TLSCertKey:       append(append([]byte{}, inter.certPEM...), root.certPEM...),
		corev1.TLSPrivateKeyKey: inter.keyPEM,
	})
	if err != nil {
		t.Fatal(err)
	}
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/default/sa/web")
	csr := newCSR(t, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "web.default.svc", Organization: []string{"shop"}},
		DNSNames: []string{"web.default.svc"},
		URIs:     []*url.URL{spiffe},
	})
	chainPEM, err := kp.Sign(t0, issuertest.Request(csr, issuertest.Options{Duration: 24 * time.Hour, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}}))
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, chainPEM)
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate (no root)", len(chain))
	}
	leaf := chain[0]
	roots := x509.NewCertPool()
	for _, c := range parseChain(t, kp.TrustBundle()) {
		roots.AddCert(c)
	}
	inters := x509.NewCertPool()
	inters.AddCert(chain[1])
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inters, CurrentTime: t0,
		DNSName:   "web.default.svc",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("leaf does not verify against the trust bundle: %v", err)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if !bytes.Equal(leaf.RawSubject, csr.RawSubject) {
		t.Errorf("subject = %q, want the request's %q", leaf.Subject, csr.Subject)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffe.String() {
		t.Errorf("URIs = %v, want %v", leaf.URIs, spiffe)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage = %v, want digital signature", leaf.KeyUsage)
	}
	if !leaf.NotBefore.Equal(t0.Add(-Backdate)) {
		t.Errorf("NotBefore = %s, want backdated by %s", leaf.NotBefore, Backdate)
	}
	if !leaf.NotAfter.Equal(t0.Add(24 * time.Hour)) {
		t.Errorf("NotAfter = %s, want now + 24h", leaf.NotAfter)
	}
}

func TestSignClampsValidityToTheCA(t *testing.T) {
	caNotBefore, caNotAfter := t0.Add(-time.Minute), t0.Add(2*time.Hour)
	c := newTestCA(t, "short-lived", nil, caNotBefore, caNotAfter, nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := kp.Sign(t0, issuertest.Request(newCSR(t, &x509.CertificateRequest{DNSNames: []string{"a"}}), issuertest.Options{Duration: 30 * 24 * time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, chainPEM)
	if len(chain) != 1 {
		t.Fatalf("chain has %d certificates, want only the leaf under a root CA", len(chain))
	}
	if !chain[0].NotAfter.Equal(caNotAfter) {
		t.Errorf("NotAfter = %s, want clamped to the CA's %s", chain[0].NotAfter, caNotAfter)
	}
	if !chain[0].NotBefore.Equal(caNotBefore) {
		t.Errorf("NotBefore = %s, want no earlier than the CA's %s", chain[0].NotBefore, caNotBefore)
	}
}

func TestSignBackdatesAsTheRequestAsks(t *testing.T) {
	c := newTestCA(t, "ca", nil, t0.Add(-time.Hour), t0.Add(48*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	req := issuertest.Request(newCSR(t, &x509.CertificateRequest{DNSNames: []string{"a"}}), issuertest.Options{Duration: time.Hour})
	req.Backdate = 3 * time.Minute
	chainPEM, err := kp.Sign(t0, req)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseChain(t, chainPEM)[0]
	if !leaf.NotBefore.Equal(t0.Add(-3*time.Minute)) || !leaf.NotAfter.Equal(t0.Add(time.Hour)) {
		t.Errorf("validity %s..%s, want from 3m before signing to the hour after", leaf.NotBefore, leaf.NotAfter)
	}
}

func TestSerialNumbersAreRandomAnd128Bit(t *testing.T) {
	c := newTestCA(t, "ca", nil, t0.Add(-time.Hour), t0.Add(time.Hour*24*365), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	csr := newCSR(t, &x509.CertificateRequest{DNSNames: []string{"a"}})
	seen := map[string]bool{}
	longest := 0
	for range 32 {
		chainPEM, err := kp.Sign(t0, issuertest.Request(csr, issuertest.Options{Duration: time.Hour}))
		if err != nil {
			t.Fatal(err)
		}
		serial := parseChain(t, chainPEM)[0].SerialNumber
		if serial.Sign() <= 0 || serial.BitLen() > 128 {
			t.Fatalf("serial %s is not a positive 128-bit number", serial)
		}
		if seen[serial.String()] {
			t.Fatalf("serial %s issued twice", serial)
		}
		seen[serial.String()] = true
		longest = max(longest, serial.BitLen())
	}
	// 32 uniform draws all below 2^120 happen with probability 2^-256.
	if longest <= 120 {
		t.Errorf("longest serial has %d bits; serials are not drawn from 128 bits", longest)
	}
}

func TestParseKeyPairReportsWhatToFix(t *testing.T) {
	good := newTestCA(t, "ca", nil, t0.Add(-time.Hour), t0.Add(time.Hour*24), nil)
	other := newTestCA(t, "other", nil, t0.Add(-time.Hour), t0.Add(time.Hour*24), nil)
	leaf := newTestCA(t, "leaf", nil, t0.Add(-time.Hour), t0.Add(time.Hour*24), func(c *x509.Certificate) {
		c.IsCA = false
		c.KeyUsage = x509.KeyUsageDigitalSignature
	})
	noCertSign := newTestCA(t, "no-cert-sign", nil, t0.Add(-time.Hour), t0.Add(time.Hour*24), func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageDigitalSignature
	})
	tests := []struct {
		name        string
		data        map[string][]byte
		wantReason  string
		wantMessage string
	}{
		{"a Secret without tls.crt is invalid", map[string][]byte{corev1.TLSPrivateKeyKey: good.keyPEM}, v1alpha1.ReasonInvalidSecret, "Secret ns/ca has no tls.crt"},
		{"a Secret without tls.key is invalid", map[string][]byte{corev1.TLSCertKey: good.certPEM}, v1alpha1.ReasonInvalidSecret, "Secret ns/ca has no tls.key"},
		{"garbage in tls.crt is invalid", map[string][]byte{corev1.TLSCertKey: []byte("nope"), corev1.TLSPrivateKeyKey: good.keyPEM}, v1alpha1.ReasonInvalidSecret, "no PEM certificate"},
		{"garbage in tls.key is invalid", map[string][]byte{corev1.TLSCertKey: good.certPEM, corev1.TLSPrivateKeyKey: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, v1alpha1.ReasonInvalidSecret, "tls.key: parsing PRIVATE KEY"},
		{"a key of another certificate is a mismatch", map[string][]byte{corev1.TLSCertKey: good.certPEM, corev1.TLSPrivateKeyKey: other.keyPEM}, v1alpha1.ReasonKeyMismatch, "does not hold the private key"},
		{"a leaf certificate is not a CA", map[string][]byte{corev1.TLSCertKey: leaf.certPEM, corev1.TLSPrivateKeyKey: leaf.keyPEM}, v1alpha1.ReasonNotCA, "not a CA"},
		{"a CA without certificate signing usage is not a CA", map[string][]byte{corev1.TLSCertKey: noCertSign.certPEM, corev1.TLSPrivateKeyKey: noCertSign.keyPEM}, v1alpha1.ReasonNotCA, "does not include certificate signing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyPair("ns/ca", tt.data)
			var notReady *issuer.NotReadyError
			if !errors.As(err, &notReady) {
				t.Fatalf("err = %v, want *issuer.NotReadyError", err)
			}
			if notReady.Reason != tt.wantReason || !strings.Contains(notReady.Message, tt.wantMessage) {
				t.Errorf("got %s: %q, want %s containing %q", notReady.Reason, notReady.Message, tt.wantReason, tt.wantMessage)
			}
		})
	}
}

func TestCheckValidity(t *testing.T) {
	c := newTestCA(t, "ca", nil, t0, t0.Add(24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		now        time.Time
		wantReason string
	}{
		{"before NotBefore the CA is not yet valid", t0.Add(-time.Second), v1alpha1.ReasonCANotYetValid},
		{"within validity the CA is fine", t0.Add(time.Hour), ""},
		{"close to NotAfter the CA counts as expired", t0.Add(24*time.Hour - minRemaining), v1alpha1.ReasonCAExpired},
		{"after NotAfter the CA is expired", t0.Add(25 * time.Hour), v1alpha1.ReasonCAExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := kp.CheckValidity(tt.now)
			var notReady *issuer.NotReadyError
			switch {
			case tt.wantReason == "" && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tt.wantReason != "" && (!errors.As(err, &notReady) || notReady.Reason != tt.wantReason):
				t.Fatalf("err = %v, want reason %s", err, tt.wantReason)
			}
		})
	}
	if _, err := kp.Sign(t0.Add(25*time.Hour), issuertest.Request(newCSR(t, &x509.CertificateRequest{}), issuertest.Options{Duration: time.Hour})); err == nil {
		t.Error("an expired CA signed a certificate")
	}
}

func TestTrustBundlePrefersCACrt(t *testing.T) {
	root := newTestCA(t, "root", nil, t0.Add(-time.Hour), t0.Add(48*time.Hour), nil)
	inter := newTestCA(t, "intermediate", root, t0.Add(-time.Hour), t0.Add(24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{
		corev1.TLSCertKey:              inter.certPEM,
		corev1.TLSPrivateKeyKey:        inter.keyPEM,
		corev1.ServiceAccountRootCAKey: root.certPEM,
	})
	if err != nil {
		t.Fatal(err)
	}
	bundle := parseChain(t, kp.TrustBundle())
	if len(bundle) != 1 || !bundle[0].Equal(root.cert) {
		t.Errorf("trust bundle is not ca.crt's root")
	}
	kp, err = ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: inter.certPEM, corev1.TLSPrivateKeyKey: inter.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	if bundle := parseChain(t, kp.TrustBundle()); len(bundle) != 1 || !bundle[0].Equal(inter.cert) {
		t.Errorf("without ca.crt or a root, the trust bundle is not the top of tls.crt")
	}
}

func TestUnknownUsageIsPermanent(t *testing.T) {
	c := newTestCA(t, "ca", nil, t0.Add(-time.Hour), t0.Add(24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	_, err = kp.Sign(t0, issuertest.Request(newCSR(t, &x509.CertificateRequest{}), issuertest.Options{Duration: time.Hour, Usages: []certificatesv1.KeyUsage{"telepathy"}}))
	if outcome, _ := issuer.Classify(err); outcome != issuer.Fail {
		t.Errorf("err = %v classified %v, want Fail", err, outcome)
	}
}

func TestSignIssuesACAThatSignsLeavesOnly(t *testing.T) {
	root := newTestCA(t, "root", nil, t0.Add(-time.Hour), t0.Add(24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: root.certPEM, corev1.TLSPrivateKeyKey: root.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := kp.Sign(t0, issuertest.Request(newCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "pod CA"}}), issuertest.Options{Duration: time.Hour, IsCA: true, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageCertSign, certificatesv1.UsageDigitalSignature}}))
	if err != nil {
		t.Fatal(err)
	}
	sub := parseChain(t, chainPEM)[0]
	if !sub.IsCA || !sub.MaxPathLenZero || sub.MaxPathLen != 0 {
		t.Fatalf("IsCA %v, MaxPathLen %d (zero set: %v); want a CA limited to leaves", sub.IsCA, sub.MaxPathLen, sub.MaxPathLenZero)
	}
	if sub.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("the CA certificate cannot sign certificates")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.cert)
	if _, err := sub.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t0}); err != nil {
		t.Errorf("the CA certificate does not verify: %v", err)
	}
}

func TestSignConstrainsACAToItsApprovedNames(t *testing.T) {
	root := newTestCA(t, "root", nil, t0.Add(-time.Hour), t0.Add(24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: root.certPEM, corev1.TLSPrivateKeyKey: root.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/web")
	subKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"web.shop.svc"}, URIs: []*url.URL{spiffe}}, subKey)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := kp.Sign(t0, issuertest.Request(csr, issuertest.Options{Duration: time.Hour, IsCA: true, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageCertSign, certificatesv1.UsageDigitalSignature}}))
	if err != nil {
		t.Fatal(err)
	}
	sub := parseChain(t, chainPEM)[0]
	if !sub.PermittedDNSDomainsCritical || !slices.Equal(sub.PermittedDNSDomains, []string{"web.shop.svc"}) || !slices.Equal(sub.PermittedURIDomains, []string{"cluster.local"}) {
		t.Fatalf("name constraints: critical %v, DNS %v, URI hosts %v; want critical, the approved DNS name and URI host",
			sub.PermittedDNSDomainsCritical, sub.PermittedDNSDomains, sub.PermittedURIDomains)
	}

	// What the pod's CA signs verifies only within those names.
	roots := x509.NewCertPool()
	roots.AddCert(root.cert)
	subKP := &KeyPair{Cert: sub, Key: subKey}
	for _, tc := range []struct {
		name   string
		leaf   *x509.CertificateRequest
		verify bool
	}{
		{"a leaf for the approved name verifies", &x509.CertificateRequest{DNSNames: []string{"web.shop.svc"}}, true},
		{"a leaf for another name does not", &x509.CertificateRequest{DNSNames: []string{"kubernetes.default.svc"}}, false},
		{"a leaf with an IP address does not", &x509.CertificateRequest{DNSNames: []string{"web.shop.svc"}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, false},
		{"a leaf with an email address does not", &x509.CertificateRequest{DNSNames: []string{"web.shop.svc"}, EmailAddresses: []string{"ceo@example.com"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leafPEM, err := subKP.Sign(t0, issuertest.Request(newCSR(t, tc.leaf), issuertest.Options{Duration: time.Hour, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}}))
			if err != nil {
				t.Fatal(err)
			}
			inter := x509.NewCertPool()
			inter.AddCert(sub)
			_, err = parseChain(t, leafPEM)[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: t0})
			if (err == nil) != tc.verify {
				t.Errorf("verify error = %v, want verified %v", err, tc.verify)
			}
		})
	}
}

func TestSignExcludesEveryNameOfAKindACADidNotGet(t *testing.T) {
	root := newTestCA(t, "root", nil, t0.Add(-time.Hour), t0.Add(24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: root.certPEM, corev1.TLSPrivateKeyKey: root.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := kp.Sign(t0, issuertest.Request(newCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "pod CA"}}), issuertest.Options{Duration: time.Hour, IsCA: true, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageCertSign}}))
	if err != nil {
		t.Fatal(err)
	}
	sub := parseChain(t, chainPEM)[0]
	if len(sub.PermittedDNSDomains) != 0 || !slices.Equal(sub.ExcludedDNSDomains, []string{""}) || !slices.Equal(sub.ExcludedURIDomains, []string{""}) ||
		len(sub.ExcludedIPRanges) != 2 || !slices.Equal(sub.ExcludedEmailAddresses, []string{""}) {
		t.Errorf("constraints: permitted DNS %v, excluded DNS %q, URI %q, IP %v, email %q; want every name excluded",
			sub.PermittedDNSDomains, sub.ExcludedDNSDomains, sub.ExcludedURIDomains, sub.ExcludedIPRanges, sub.ExcludedEmailAddresses)
	}
}

func TestSignDoesNotConstrainLeaves(t *testing.T) {
	root := newTestCA(t, "root", nil, t0.Add(-time.Hour), t0.Add(24*time.Hour), nil)
	kp, err := ParseKeyPair("ns/ca", map[string][]byte{corev1.TLSCertKey: root.certPEM, corev1.TLSPrivateKeyKey: root.keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := kp.Sign(t0, issuertest.Request(newCSR(t, &x509.CertificateRequest{DNSNames: []string{"web.shop.svc"}}), issuertest.Options{Duration: time.Hour, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature}}))
	if err != nil {
		t.Fatal(err)
	}
	if leaf := parseChain(t, chainPEM)[0]; len(leaf.PermittedDNSDomains)+len(leaf.ExcludedDNSDomains)+len(leaf.ExcludedIPRanges) != 0 {
		t.Error("a leaf certificate carries name constraints")
	}
}

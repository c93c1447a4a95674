package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/certmint/certmint/pkg/issuer"
)

// testCA is a CA certificate with its key.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newCSR signs tmpl with key and parses it back, as the controller receives
// a request.
func newCSR(t *testing.T, tmpl *x509.CertificateRequest, key *ecdsa.PrivateKey) *x509.CertificateRequest {
	t.Helper()
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

// issue signs tmpl for pub with parent, or self-signs when parent is nil.
func issue(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey, parent *testCA, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, pub, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func newCA(t *testing.T, name string, parent *testCA) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return &testCA{cert: issue(t, tmpl, key.Public(), parent, key), key: key}
}

func TestVerifyChain(t *testing.T) {
	root := newCA(t, "root", nil)
	intermediate := newCA(t, "intermediate", root)
	otherRoot := newCA(t, "other root", nil)
	trust := x509.NewCertPool()
	trust.AddCert(root.cert)

	nodeKey := newKey(t)
	csr := newCSR(t, &x509.CertificateRequest{DNSNames: []string{"web.example.com"}}, nodeKey)
	leafFor := func(pub crypto.PublicKey, parent *testCA) *x509.Certificate {
		return issue(t, &x509.Certificate{DNSNames: []string{"web.example.com"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, pub, parent, nil)
	}
	leaf := leafFor(nodeKey.Public(), intermediate)

	tests := []struct {
		name      string
		chain     []*x509.Certificate
		wantCerts []*x509.Certificate
		wantErr   string
	}{
		{
			name:      "a leaf and its intermediate leading to the trust bundle are returned as they are",
			chain:     []*x509.Certificate{leaf, intermediate.cert},
			wantCerts: []*x509.Certificate{leaf, intermediate.cert},
		},
		{
			name:      "a root the server appends is left out",
			chain:     []*x509.Certificate{leaf, intermediate.cert, root.cert},
			wantCerts: []*x509.Certificate{leaf, intermediate.cert},
		},
		{
			name:    "a chain leading to another root is refused",
			chain:   []*x509.Certificate{leafFor(nodeKey.Public(), otherRoot)},
			wantErr: "does not chain to spec.acme.trustBundle",
		},
		{
			name:    "a certificate for another key is refused",
			chain:   []*x509.Certificate{leafFor(newKey(t).Public(), intermediate), intermediate.cert},
			wantErr: "for another key",
		},
		{
			name:    "an empty chain is refused",
			wantErr: "no certificate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der := make([][]byte, len(tt.chain))
			for i, c := range tt.chain {
				der[i] = c.Raw
			}
			got, _, err := verifyChain(der, csr.PublicKey, trust, time.Now())
			if tt.wantErr != "" {
				var permanent *issuer.PermanentError
				if !errors.As(err, &permanent) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a permanent error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			for _, c := range tt.wantCerts {
				want = append(want, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
			}
			if string(got) != string(want) {
				t.Errorf("chain =\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// Package pkitest makes throwaway certificates for unit tests.
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// CA returns a self-signed CA certificate named cn, valid for the hour
// either side of now, with its key.
func CA(t testing.TB, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	return Sign(t, tmpl, nil, nil)
}

// Leaf returns a leaf certificate named cn signed by ca.
func Leaf(t testing.TB, cn string, ca *x509.Certificate, caKey crypto.Signer) *x509.Certificate {
	t.Helper()
	c, _ := Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}}, ca, caKey)
	return c
}

// Sign fills in tmpl's serial number and validity when unset, gives it a new
// P-256 key and signs it with parentKey, or with that new key when parent is
// nil.
func Sign(t testing.TB, tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	return SignFor(t, tmpl, key.Public(), parent, parentKey), key
}

// SignFor is Sign for the public key pub.
func SignFor(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(1)
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

package keystore

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	jks "github.com/pavlo-v-chernykh/keystore-go/v4"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/certmint/certmint/pkg/pki"
)

func TestGenerateMakesTheRequestedKey(t *testing.T) {
	cases := []struct {
		name string
		alg  Algorithm
		size int
	}{
		{"ECDSA P-256", ECDSA, 256},
		{"ECDSA P-384", ECDSA, 384},
		{"ECDSA P-521", ECDSA, 521},
		{"RSA 2048", RSA, 2048},
		{"RSA 3072", RSA, 3072},
		{"Ed25519", Ed25519, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := Generate(c.alg, c.size)
			if err != nil {
				t.Fatal(err)
			}
			alg, size, err := Describe(key.Public())
			if err != nil || alg != c.alg || size != c.size {
				t.Fatalf("Describe = %s, %d, %v; want %s, %d", alg, size, err, c.alg, c.size)
			}
		})
	}
}

func TestGenerateRejectsUnsafeOrUnknownSizes(t *testing.T) {
	cases := []struct {
		name string
		alg  Algorithm
		size int
		want string
	}{
		{"RSA below 2048 bits", RSA, 1024, "2048 to 8192"},
		{"RSA above 8192 bits", RSA, 8200, "2048 to 8192"},
		{"RSA not a multiple of 8", RSA, 2049, "multiple of 8"},
		{"ECDSA on a curve that is not offered", ECDSA, 224, "256, 384 or 521"},
		{"Ed25519 with a size", Ed25519, 256, "fixed size"},
		{"an unknown algorithm", "DSA", 2048, "unknown key algorithm"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Generate(c.alg, c.size); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Generate(%s, %d) error = %v, want %q", c.alg, c.size, err, c.want)
			}
		})
	}
}

func TestEncodePrivateKeyRoundTrips(t *testing.T) {
	cases := []struct {
		name    string
		alg     Algorithm
		size    int
		enc     Encoding
		pemType string
	}{
		{"ECDSA as PKCS8", ECDSA, 256, PKCS8, "PRIVATE KEY"},
		{"RSA as PKCS8", RSA, 2048, PKCS8, "PRIVATE KEY"},
		{"RSA as PKCS1", RSA, 2048, PKCS1, "RSA PRIVATE KEY"},
		{"Ed25519 as PKCS8", Ed25519, 0, PKCS8, "PRIVATE KEY"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := Generate(c.alg, c.size)
			if err != nil {
				t.Fatal(err)
			}
			data, err := EncodePrivateKey(key, c.enc)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(data)
			if block == nil || block.Type != c.pemType {
				t.Fatalf("PEM block = %v, want type %q", block, c.pemType)
			}
			back, err := pki.ParsePrivateKey(data)
			if err != nil {
				t.Fatal(err)
			}
			if !back.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatal("decoded key differs from the encoded one")
			}
		})
	}
}

func TestEncodePrivateKeyRefusesPKCS1ForNonRSAKeys(t *testing.T) {
	key, _ := Generate(ECDSA, 256)
	if _, err := EncodePrivateKey(key, PKCS1); err == nil {
		t.Fatal("encoded an ECDSA key as PKCS1")
	}
	if err := CheckEncoding(Ed25519, PKCS1); err == nil {
		t.Fatal("CheckEncoding accepted PKCS1 for Ed25519")
	}
}

// chain returns a leaf certificate for key signed by a fresh CA, and the CA.
func chain(t *testing.T, key crypto.Signer) (leaf, ca *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now, NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"}, NotBefore: now, NotAfter: now.Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(leafDER)
	return leaf, ca
}

func TestPKCS12HoldsKeyChainAndCA(t *testing.T) {
	key, _ := Generate(RSA, 2048)
	leaf, ca := chain(t, key)
	data, err := PKCS12(key, []*x509.Certificate{leaf, ca}, []*x509.Certificate{ca}, "changeit")
	if err != nil {
		t.Fatal(err)
	}
	gotKey, gotLeaf, gotCAs, err := pkcs12.DecodeChain(data, "changeit")
	if err != nil {
		t.Fatal(err)
	}
	if !gotKey.(*rsa.PrivateKey).Equal(key) || !gotLeaf.Equal(leaf) {
		t.Fatal("key or leaf differ")
	}
	if len(gotCAs) != 1 || !gotCAs[0].Equal(ca) {
		t.Fatalf("CA certificates = %d, want the CA once", len(gotCAs))
	}
	if _, _, err := pkcs12.Decode(data, "wrong"); err == nil {
		t.Fatal("decoded with the wrong password")
	}
}

func TestJKSHoldsKeyChainAndTrustedCA(t *testing.T) {
	key, _ := Generate(ECDSA, 256)
	leaf, ca := chain(t, key)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	data, err := JKS(key, []*x509.Certificate{leaf}, []*x509.Certificate{ca}, "changeit", now)
	if err != nil {
		t.Fatal(err)
	}
	ks := jks.New()
	if err := ks.Load(bytes.NewReader(data), []byte("changeit")); err != nil {
		t.Fatal(err)
	}
	entry, err := ks.GetPrivateKeyEntry(JKSKeyAlias, []byte("changeit"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(entry.PrivateKey)
	if err != nil || !k.(*ecdsa.PrivateKey).Equal(key) {
		t.Fatalf("key in JKS differs: %v", err)
	}
	if len(entry.CertificateChain) != 1 || !bytes.Equal(entry.CertificateChain[0].Content, leaf.Raw) || !entry.CreationTime.Equal(now) {
		t.Fatal("certificate chain or creation time differ")
	}
	trusted, err := ks.GetTrustedCertificateEntry("ca")
	if err != nil || !bytes.Equal(trusted.Certificate.Content, ca.Raw) {
		t.Fatalf("trusted CA entry: %v", err)
	}
}

func TestKeystoresNeedACertificate(t *testing.T) {
	key, _ := Generate(Ed25519, 0)
	if _, err := PKCS12(key, nil, nil, "x"); err == nil {
		t.Error("PKCS12 without a certificate succeeded")
	}
	if _, err := JKS(key, nil, nil, "x", time.Now()); err == nil {
		t.Error("JKS without a certificate succeeded")
	}
}

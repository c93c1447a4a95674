package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/certmint/certmint/pkg/pki/pkitest"
)

func TestParseCertificatesReadsAListOfCertificatesOnly(t *testing.T) {
	a, key := pkitest.CA(t, "a")
	b, _ := pkitest.CA(t, "b")
	list := EncodeCertificates(a, b)
	got, err := ParseCertificates(append([]byte("text between blocks is fine\n"), list...))
	if err != nil || len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b) {
		t.Fatalf("ParseCertificates = %d certificates, %v; want a and b in order", len(got), err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"a key pasted into the list":        {append(list, pem.EncodeToMemory(&pem.Block{Type: BlockPKCS8PrivateKey, Bytes: keyDER})...), `PEM block "PRIVATE KEY", number 3`},
		"a certificate that does not parse": {pem.EncodeToMemory(&pem.Block{Type: BlockCertificate, Bytes: []byte("nope")}), "certificate 1"},
		"no certificate at all":             {[]byte("nothing"), "no PEM certificate"},
	} {
		if _, err := ParseCertificates(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestParsePrivateKeyReadsEveryEncoding(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: BlockPKCS8PrivateKey, Bytes: der})
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		data []byte
		pub  crypto.PublicKey
	}{
		"PKCS#8 ECDSA":   {pkcs8(ec), ec.Public()},
		"PKCS#8 Ed25519": {pkcs8(ed), ed.Public()},
		"PKCS#1 RSA":     {pem.EncodeToMemory(&pem.Block{Type: BlockPKCS1PrivateKey, Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), rsaKey.Public()},
		"SEC 1 after EC PARAMETERS": {append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8}}),
			pem.EncodeToMemory(&pem.Block{Type: BlockSEC1PrivateKey, Bytes: sec1})...), ec.Public()},
	} {
		key, err := ParsePrivateKey(c.data)
		if err != nil || !PublicKeysEqual(key.Public(), c.pub) {
			t.Errorf("%s: key %T, %v; want the key back", name, key, err)
		}
	}
	if _, err := ParsePrivateKey([]byte("none")); err == nil {
		t.Error("data without a key parsed")
	}
}

func TestPublicKeysEqualTellsKeysApart(t *testing.T) {
	a, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	switch {
	case !PublicKeysEqual(a.Public(), a.Public()):
		t.Error("a key differs from itself")
	case PublicKeysEqual(a.Public(), b.Public()):
		t.Error("two keys are equal")
	case PublicKeysEqual("not a key", a.Public()):
		t.Error("an unknown type equals a key")
	}
}

func TestParseCertificateRequestRejectsBadInput(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"a"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCertificateRequest(EncodeCertificateRequest(der)); err != nil {
		t.Fatalf("a valid request did not parse: %v", err)
	}
	tampered := append([]byte{}, der...)
	tampered[len(tampered)-1] ^= 0xff
	for name, data := range map[string][]byte{
		"no PEM":        []byte("nope"),
		"wrong type":    pem.EncodeToMemory(&pem.Block{Type: BlockCertificate, Bytes: der}),
		"bad signature": EncodeCertificateRequest(tampered),
	} {
		if _, err := ParseCertificateRequest(data); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestCARequestExtensionIsWhatRequestsCAReads(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(exts ...pkix.Extension) *x509.CertificateRequest {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{ExtraExtensions: exts}, key)
		if err != nil {
			t.Fatal(err)
		}
		req, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	if !RequestsCA(parse(CARequestExtension())) {
		t.Error("a request with the CA extension does not ask for a CA")
	}
	if RequestsCA(parse()) {
		t.Error("a request without it asks for a CA")
	}
	garbled := CARequestExtension()
	garbled.Value = []byte{0xff}
	if !RequestsCA(parse(garbled)) {
		t.Error("a basicConstraints that does not parse is not taken for the worst case")
	}
}

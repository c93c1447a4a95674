package keystore

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	jks "github.com/pavlo-v-chernykh/keystore-go/v4"
	"software.sslmate.com/src/go-pkcs12"
)

// Aliases of the entries in a JKS file, so applications can be configured
// with a fixed name.
const (
	JKSKeyAlias = "certificate"
	jksCAPrefix = "ca"
)

// PKCS12 encodes key, its certificate chain (leaf first) and the CA bundle as
// a password-protected PKCS#12 file. It uses AES-256-CBC with PBKDF2 and a
// SHA-256 MAC (the 2023 "modern" profile): OpenSSL 1.1.1+ and Java 12+ read
// it, unlike the RC2/3DES legacy profile that is no longer considered safe.
func PKCS12(key crypto.Signer, chain, ca []*x509.Certificate, password string) ([]byte, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate to encode")
	}
	// The file carries intermediates and trust anchors alike in its CA bag.
	var others []*x509.Certificate
	others = append(others, chain[1:]...)
	others = append(others, notIn(ca, chain)...)
	data, err := pkcs12.Modern2023.Encode(key, chain[0], others, password)
	if err != nil {
		return nil, fmt.Errorf("encoding PKCS#12: %w", err)
	}
	return data, nil
}

// JKS encodes key and its chain as the private key entry JKSKeyAlias, and
// each CA certificate as a trusted entry "ca", "ca-1", ..., all protected by
// password. now is the entries' creation time.
func JKS(key crypto.Signer, chain, ca []*x509.Certificate, password string, now time.Time) ([]byte, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate to encode")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key for JKS: %w", err)
	}
	ks := jks.New()
	entry := jks.PrivateKeyEntry{CreationTime: now, PrivateKey: der}
	for _, c := range chain {
		entry.CertificateChain = append(entry.CertificateChain, jks.Certificate{Type: "X509", Content: c.Raw})
	}
	if err := ks.SetPrivateKeyEntry(JKSKeyAlias, entry, []byte(password)); err != nil {
		return nil, fmt.Errorf("adding key to JKS: %w", err)
	}
	for i, c := range ca {
		alias := jksCAPrefix
		if i > 0 {
			alias = fmt.Sprintf("%s-%d", jksCAPrefix, i)
		}
		trusted := jks.TrustedCertificateEntry{CreationTime: now, Certificate: jks.Certificate{Type: "X509", Content: c.Raw}}
		if err := ks.SetTrustedCertificateEntry(alias, trusted); err != nil {
			return nil, fmt.Errorf("adding CA certificate to JKS: %w", err)
		}
	}
	var buf bytes.Buffer
	if err := ks.Store(&buf, []byte(password)); err != nil {
		return nil, fmt.Errorf("encoding JKS: %w", err)
	}
	return buf.Bytes(), nil
}

// notIn returns the certificates of certs that are not in exclude, so a CA
// that is also the chain's last element is not stored twice.
func notIn(certs, exclude []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		dup := false
		for _, e := range exclude {
			if c.Equal(e) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

// Package certspec says which certificate to ask for, whoever asks: the
// issuer that signs it, its identity (subject and names), key, lifetime,
// usages and CA flag. It builds the X.509 certificate request for a key and
// checks that what an issuer returned is what was asked for. The node
// driver fills a Spec from a volume's attributes; a controller that keeps a
// certificate in a Secret can fill one from its own resource.
//
// It knows neither volumes nor the API: no files, no CertificateSigningRequest
// objects.
package certspec

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

// Spec is one certificate to ask for.
type Spec struct {
	Issuer request.IssuerRef

	// Subject is the requested subject when LiteralSubject is empty.
	Subject pkix.Name
	// LiteralSubject is a subject written out (RFC 4514), and RawSubject its
	// DER encoding; the request then carries exactly that name.
	LiteralSubject string
	RawSubject     []byte

	DNSNames       []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	EmailAddresses []string

	Duration time.Duration
	// RenewBefore is how long before expiry to renew; zero means at two
	// thirds of the certificate's lifetime.
	RenewBefore time.Duration
	IsCA        bool
	Usages      []certificatesv1.KeyUsage

	Key Key
}

// Key describes the private key to generate.
type Key struct {
	Algorithm keystore.Algorithm
	Size      int
	// Reuse keeps the key across renewals instead of making a new one.
	Reuse bool
}

// CommonName is the common name the certificate must carry, from the
// subject or the literal subject.
func (s *Spec) CommonName() string {
	return s.Subject.CommonName
}

// CertificateRequest returns the DER X.509 certificate request for s,
// signed with key.
func (s *Spec) CertificateRequest(key crypto.Signer) ([]byte, error) {
	tmpl := &x509.CertificateRequest{
		RawSubject:     s.RawSubject,
		DNSNames:       s.DNSNames,
		IPAddresses:    s.IPAddresses,
		URIs:           s.URIs,
		EmailAddresses: s.EmailAddresses,
	}
	if tmpl.RawSubject == nil {
		tmpl.Subject = s.Subject
	}
	if s.IsCA {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pki.CARequestExtension())
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate request: %w", err)
	}
	return der, nil
}

// clockSkew is how far the signer's clock may be off from the checker's.
const clockSkew = 5 * time.Minute

// Verify checks that chain, leaf first, is what s asked for, for the key
// pub, at time now: a signer (or anyone who could write where the chain is
// read from) must not be able to hand out a certificate for another key or
// identity.
func (s *Spec) Verify(pub crypto.PublicKey, chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("the issued chain holds no certificate")
	}
	leaf := chain[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, pub) {
		return errors.New("the certificate is not for the private key generated for it")
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("certificate %d of the chain is not signed by the next: %w", i, err)
		}
	}
	if cn := s.CommonName(); cn != "" && leaf.Subject.CommonName != cn {
		return fmt.Errorf("common name is %q, requested %q", leaf.Subject.CommonName, cn)
	}
	if !sameSet(leaf.DNSNames, s.DNSNames, func(a, b string) bool { return a == b }) {
		return fmt.Errorf("DNS names are %v, requested %v", leaf.DNSNames, s.DNSNames)
	}
	if !sameSet(leaf.IPAddresses, s.IPAddresses, net.IP.Equal) {
		return fmt.Errorf("IP addresses are %v, requested %v", leaf.IPAddresses, s.IPAddresses)
	}
	if !sameSet(leaf.EmailAddresses, s.EmailAddresses, func(a, b string) bool { return a == b }) {
		return fmt.Errorf("email addresses are %v, requested %v", leaf.EmailAddresses, s.EmailAddresses)
	}
	gotURIs, wantURIs := make([]string, len(leaf.URIs)), make([]string, len(s.URIs))
	for i, u := range leaf.URIs {
		gotURIs[i] = u.String()
	}
	for i, u := range s.URIs {
		wantURIs[i] = u.String()
	}
	if !sameSet(gotURIs, wantURIs, func(a, b string) bool { return a == b }) {
		return fmt.Errorf("URIs are %v, requested %v", gotURIs, wantURIs)
	}
	if leaf.IsCA != s.IsCA {
		return fmt.Errorf("certificate is CA: %v, requested %v", leaf.IsCA, s.IsCA)
	}
	for _, u := range s.Usages {
		if !hasUsage(leaf, u) {
			return fmt.Errorf("certificate lacks the requested usage %q", u)
		}
	}
	switch {
	case leaf.NotBefore.After(now.Add(clockSkew)):
		return fmt.Errorf("certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case !leaf.NotAfter.After(now):
		return fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case leaf.NotAfter.After(now.Add(s.Duration + clockSkew)):
		return fmt.Errorf("certificate is valid until %s, longer than the requested %s", leaf.NotAfter.UTC().Format(time.RFC3339), s.Duration)
	}
	return nil
}

// VerifyTrusted checks that the leaf of chain, with the rest of chain as
// intermediates, leads to a certificate of bundle at time now. Usages are
// checked by Verify against the request, not here.
func VerifyTrusted(chain, bundle []*x509.Certificate, now time.Time) error {
	roots := x509.NewCertPool()
	for _, c := range bundle {
		roots.AddCert(c)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

func sameSet[T any](got, want []T, eq func(a, b T) bool) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g T) bool { return eq(g, w) }) {
			return false
		}
	}
	return true
}

func hasUsage(cert *x509.Certificate, u certificatesv1.KeyUsage) bool {
	if bit, ok := request.KeyUsageBit(u); ok {
		return cert.KeyUsage&bit != 0
	}
	ext, ok := request.ExtKeyUsage(u)
	return ok && (slices.Contains(cert.ExtKeyUsage, ext) || slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny))
}

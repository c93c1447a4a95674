package certificate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/request"
)

// wanted is what a Certificate asks for: the certificate, and how the
// Secret holds it.
type wanted struct {
	cert        certspec.Spec
	keyEncoding keystore.Encoding
	// reuseKey keeps the Secret's key across renewals (rotationPolicy
	// Never).
	reuseKey bool
}

// specError names the fields of a Certificate's spec that cannot be
// issued as they are, each with what is wrong.
type specError struct{ problems []string }

func (e *specError) Error() string { return strings.Join(e.problems, "; ") }

// parseSpec turns cert's spec into what to ask for. The API server's
// validation has checked most of it; this checks what it cannot (usage
// names, parsed addresses) and applies the defaults. The error is a
// *specError naming every field at fault.
func parseSpec(cert *v1alpha1.Certificate) (*wanted, error) {
	s := &cert.Spec
	var problems []string
	fail := func(field, format string, args ...any) {
		problems = append(problems, "spec."+field+": "+fmt.Sprintf(format, args...))
	}
	w := &wanted{keyEncoding: keystore.PKCS8}
	c := &w.cert

	kind := request.KindIssuer
	if s.IssuerRef.Kind != "" {
		k, err := request.ParseIssuerKind(s.IssuerRef.Kind)
		if err != nil {
			fail("issuerRef.kind", "%v", err)
		}
		kind = k
	}
	c.Issuer = request.IssuerRef{Kind: kind, Name: s.IssuerRef.Name}
	if kind == request.KindIssuer {
		c.Issuer.Namespace = cert.Namespace
	}

	c.Subject = subjectOf(s.CommonName, s.Subject)
	c.DNSNames = slices.Clone(s.DNSNames)
	for _, a := range s.IPAddresses {
		ip := net.ParseIP(a)
		if ip == nil {
			fail("ipAddresses", "%s is not an IP address", request.Quote(a))
			continue
		}
		c.IPAddresses = append(c.IPAddresses, ip)
	}
	for _, raw := range s.URIs {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") {
			fail("uris", "%s is not an absolute URI with scheme and host", request.Quote(raw))
			continue
		}
		c.URIs = append(c.URIs, u)
	}
	c.EmailAddresses = slices.Clone(s.EmailAddresses)

	c.Key = certspec.Key{Algorithm: keystore.ECDSA}
	if k := s.PrivateKey; k != nil {
		if k.Algorithm != "" {
			alg, err := keystore.ParseAlgorithm(string(k.Algorithm))
			if err != nil {
				fail("privateKey.algorithm", "%v", err)
			} else {
				c.Key.Algorithm = alg
			}
		}
		if k.Encoding != "" {
			enc, err := keystore.ParseEncoding(k.Encoding)
			if err == nil {
				err = keystore.CheckEncoding(c.Key.Algorithm, enc)
			}
			if err != nil {
				fail("privateKey.encoding", "%v", err)
			} else {
				w.keyEncoding = enc
			}
		}
		w.reuseKey = k.RotationPolicy == v1alpha1.RotationPolicyNever
	}
	c.Key.Size = keystore.DefaultSize(c.Key.Algorithm)
	if k := s.PrivateKey; k != nil && k.Size != 0 {
		if err := keystore.CheckSize(c.Key.Algorithm, int(k.Size)); err != nil {
			fail("privateKey.size", "%v", err)
		} else {
			c.Key.Size = int(k.Size)
		}
	}
	c.Key.Reuse = w.reuseKey

	if s.Duration != nil {
		c.Duration = s.Duration.Duration
		if c.Duration < attributes.MinDuration {
			fail("duration", "%s is too short; the minimum is %s", c.Duration, attributes.MinDuration)
		}
	}
	if s.RenewBefore != nil {
		c.RenewBefore = s.RenewBefore.Duration
		if c.Duration > 0 && c.RenewBefore >= c.Duration {
			fail("renewBefore", "%s must be shorter than the duration (%s)", c.RenewBefore, c.Duration)
		}
	}
	c.IsCA = s.IsCA
	if s.Usages == nil {
		c.Usages = attributes.DefaultUsages(c.Key.Algorithm, c.IsCA)
	}
	for _, u := range s.Usages {
		usage := certificatesv1.KeyUsage(strings.ToLower(u))
		_, bit := request.KeyUsageBit(usage)
		_, ext := request.ExtKeyUsage(usage)
		switch {
		case !bit && !ext:
			fail("usages", "unknown key usage %s (examples: \"digital signature\", \"key encipherment\", \"server auth\", \"client auth\")", request.Quote(u))
		case slices.Contains(c.Usages, usage):
			fail("usages", "%s is listed twice", request.Quote(u))
		default:
			c.Usages = append(c.Usages, usage)
		}
	}
	if len(problems) > 0 {
		return nil, &specError{problems: problems}
	}
	return w, nil
}

// request is what w asks for, for a key whose public half is pub. Its
// subject's attributes are not parsed out (Subject.Names is empty): the
// request a CSR makes has them, and the policy judges that one too.
func (w *wanted) request(pub crypto.PublicKey) *issuer.Request {
	c := &w.cert
	return &issuer.Request{
		Subject:        c.Subject,
		DNSNames:       c.DNSNames,
		IPAddresses:    c.IPAddresses,
		URIs:           c.URIs,
		EmailAddresses: c.EmailAddresses,
		PublicKey:      pub,
		Duration:       c.Duration,
		Usages:         c.Usages,
		IsCA:           c.IsCA,
	}
}

// standInKey is a public key of k's algorithm and size, made without the
// cost of generating a key pair, for judging a request before its key
// exists. It signs nothing and verifies nothing.
func standInKey(k certspec.Key) crypto.PublicKey {
	switch k.Algorithm {
	case keystore.RSA:
		return &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), uint(k.Size-1)), E: 65537}
	case keystore.Ed25519:
		return ed25519.PublicKey(make([]byte, ed25519.PublicKeySize))
	}
	curve := elliptic.P256()
	switch k.Size {
	case 384:
		curve = elliptic.P384()
	case 521:
		curve = elliptic.P521()
	}
	return &ecdsa.PublicKey{Curve: curve}
}

// subjectOf is the subject of a common name and the other attributes.
func subjectOf(cn string, s *v1alpha1.X509Subject) pkix.Name {
	name := pkix.Name{CommonName: cn}
	if s != nil {
		name.Organization = s.Organizations
		name.OrganizationalUnit = s.OrganizationalUnits
		name.Country = s.Countries
		name.Province = s.Provinces
		name.Locality = s.Localities
		name.StreetAddress = s.StreetAddresses
		name.PostalCode = s.PostalCodes
		name.SerialNumber = s.SerialNumber
	}
	return name
}

// renewalTime is when a certificate valid from notBefore to notAfter is
// renewed: renewBefore before expiry, or at two thirds of its lifetime when
// renewBefore is zero or not shorter than the lifetime (the issuer may
// have signed for less than was asked).
func renewalTime(notBefore, notAfter time.Time, renewBefore time.Duration) time.Time {
	lifetime := notAfter.Sub(notBefore)
	if renewBefore <= 0 || renewBefore >= lifetime {
		return notBefore.Add(lifetime * 2 / 3)
	}
	return notAfter.Add(-renewBefore)
}

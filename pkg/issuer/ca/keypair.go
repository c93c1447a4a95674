// Package ca signs with a CA key pair kept in a kubernetes.io/tls Secret.
// The KeyPair type is also what the selfsigned backend signs with.
package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

// Backdate is how far before "now" certificates start, so a relying party
// whose clock is a little behind still accepts them.
const Backdate = 5 * time.Minute

// minRemaining is the shortest lifetime worth issuing: a certificate that
// the CA's expiry would clamp below this is refused and the issuer reported
// not ready, since renewing it would be due at once.
const minRemaining = 10 * time.Minute

// KeyPair is a CA certificate with its private key, checked to belong
// together and to be a CA.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// chain is the PEM appended after every leaf: the CA certificate and
	// the intermediates above it, without any self-signed root.
	chain []byte
	// trustBundle is the PEM of the root(s) relying parties should trust.
	trustBundle []byte
}

// TrustBundle returns the PEM of the CA certificates relying parties should
// trust: ca.crt when the Secret has one, else the self-signed certificates of
// tls.crt, else the last certificate of tls.crt.
func (kp *KeyPair) TrustBundle() []byte { return kp.trustBundle }

// ParseKeyPair checks the tls.crt, tls.key and optional ca.crt of a Secret.
// Problems are *issuer.NotReadyError naming secretRef and what to fix.
func ParseKeyPair(secretRef string, data map[string][]byte) (*KeyPair, error) {
	notReady := func(reason, format string, args ...any) error {
		return &issuer.NotReadyError{Reason: reason, Message: fmt.Sprintf("Secret %s ", secretRef) + fmt.Sprintf(format, args...)}
	}
	certPEM, keyPEM := data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey]
	if len(certPEM) == 0 {
		return nil, notReady(v1alpha1.ReasonInvalidSecret, "has no %s", corev1.TLSCertKey)
	}
	if len(keyPEM) == 0 {
		return nil, notReady(v1alpha1.ReasonInvalidSecret, "has no %s", corev1.TLSPrivateKeyKey)
	}
	certs, err := pki.ParseCertificates(certPEM)
	if err != nil {
		return nil, notReady(v1alpha1.ReasonInvalidSecret, "%s: %v", corev1.TLSCertKey, err)
	}
	key, err := pki.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, notReady(v1alpha1.ReasonInvalidSecret, "%s: %v", corev1.TLSPrivateKeyKey, err)
	}
	caCert := certs[0]
	if !pki.PublicKeysEqual(caCert.PublicKey, key.Public()) {
		return nil, notReady(v1alpha1.ReasonKeyMismatch, "%s does not hold the private key of the first certificate in %s (%s)", corev1.TLSPrivateKeyKey, corev1.TLSCertKey, caCert.Subject)
	}
	if !caCert.BasicConstraintsValid || !caCert.IsCA {
		return nil, notReady(v1alpha1.ReasonNotCA, "holds a certificate that is not a CA (%s has no basicConstraints CA:TRUE)", caCert.Subject)
	}
	if caCert.KeyUsage != 0 && caCert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, notReady(v1alpha1.ReasonNotCA, "holds a CA certificate (%s) whose key usage does not include certificate signing", caCert.Subject)
	}

	kp := &KeyPair{Cert: caCert, Key: key}
	var roots []*x509.Certificate
	for _, c := range certs {
		if pki.IsSelfSigned(c) {
			roots = append(roots, c)
			continue
		}
		kp.chain = append(kp.chain, pki.EncodeCertificates(c)...)
	}
	switch {
	case len(data[corev1.ServiceAccountRootCAKey]) > 0:
		bundle, err := pki.ParseCertificates(data[corev1.ServiceAccountRootCAKey])
		if err != nil {
			return nil, notReady(v1alpha1.ReasonInvalidSecret, "%s: %v", corev1.ServiceAccountRootCAKey, err)
		}
		kp.trustBundle = pki.EncodeCertificates(bundle...)
	case len(roots) > 0:
		kp.trustBundle = pki.EncodeCertificates(roots...)
	default:
		kp.trustBundle = pki.EncodeCertificates(certs[len(certs)-1])
	}
	return kp, nil
}

// CheckValidity reports a *issuer.NotReadyError when the CA cannot issue at
// now: not yet valid, expired, or expiring within minRemaining.
func (kp *KeyPair) CheckValidity(now time.Time) error {
	switch {
	case now.Before(kp.Cert.NotBefore):
		return &issuer.NotReadyError{Reason: v1alpha1.ReasonCANotYetValid, Message: fmt.Sprintf("CA certificate %s is not valid until %s", kp.Cert.Subject, kp.Cert.NotBefore.UTC().Format(time.RFC3339))}
	case !now.Add(minRemaining).Before(kp.Cert.NotAfter):
		return &issuer.NotReadyError{Reason: v1alpha1.ReasonCAExpired, Message: fmt.Sprintf("CA certificate %s expired or expires within %s (notAfter %s); renew it", kp.Cert.Subject, minRemaining, kp.Cert.NotAfter.UTC().Format(time.RFC3339))}
	}
	return nil
}

// RecheckAt is when CheckValidity's answer changes by itself.
func (kp *KeyPair) RecheckAt(now time.Time) time.Time {
	if now.Before(kp.Cert.NotBefore) {
		return kp.Cert.NotBefore
	}
	return kp.Cert.NotAfter.Add(-minRemaining)
}

// Sign issues a certificate for req at now and returns the leaf followed by
// the CA's chain, PEM-encoded. The lifetime runs from now less req.Backdate,
// or Backdate when that is zero (never before the CA's NotBefore), to
// now+req.Duration, clamped to the CA's NotAfter. The subject and SANs are the request's, as policy approved them.
func (kp *KeyPair) Sign(now time.Time, req *issuer.Request) ([]byte, error) {
	if err := kp.CheckValidity(now); err != nil {
		return nil, err
	}
	if req.PublicKey == nil {
		return nil, issuer.Permanentf("the request names no public key")
	}
	keyUsage, extKeyUsage, err := x509Usages(req.Usages)
	if err != nil {
		return nil, &issuer.PermanentError{Err: err}
	}
	if req.Duration <= 0 {
		return nil, issuer.Permanentf("requested duration %s is not positive", req.Duration)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	backdate := Backdate
	if req.Backdate > 0 {
		backdate = req.Backdate
	}
	notBefore := now.Add(-backdate)
	if notBefore.Before(kp.Cert.NotBefore) {
		notBefore = kp.Cert.NotBefore
	}
	notAfter := now.Add(req.Duration)
	if notAfter.After(kp.Cert.NotAfter) {
		notAfter = kp.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Verbatim, so a subject the driver encoded (literal subjects, any
		// attribute order) comes back exactly as it asked.
		RawSubject:            req.RawSubject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           extKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  req.IsCA,
		// A CA issued to a pod signs leaves, never further CAs.
		MaxPathLenZero: req.IsCA,
		DNSNames:       req.DNSNames,
		URIs:           req.URIs,
		IPAddresses:    req.IPAddresses,
		EmailAddresses: req.EmailAddresses,
	}
	if req.IsCA {
		constrainNames(tmpl, req)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, kp.Cert, req.PublicKey, kp.Key)
	if err != nil {
		return nil, issuer.Permanentf("signing: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: pki.BlockCertificate, Bytes: der})
	return append(out, kp.chain...), nil
}

// constrainNames limits a CA issued to a pod to the names policy approved
// for it: without name constraints it could sign a leaf for any name the
// issuer's relying parties trust. DNS constraints permit the approved names
// and their subdomains (a wildcard name permits its parent domain); URI
// constraints can only name hosts, so the CA may sign any URI on the
// approved URIs' hosts. A kind of name with nothing approved, and IP
// addresses and email addresses, are excluded outright: an empty constraint
// matches every name, and policy approves no email address and no address
// but the pod's own, which is no range to delegate. Critical, so a verifier
// that does not understand the constraints rejects the chain rather than
// ignore them.
func constrainNames(tmpl *x509.Certificate, req *issuer.Request) {
	tmpl.PermittedDNSDomainsCritical = true
	var domains []string
	for _, n := range req.DNSNames {
		domains = append(domains, strings.TrimPrefix(strings.ToLower(n), "*."))
	}
	if domains = uniqueSorted(domains); len(domains) > 0 {
		tmpl.PermittedDNSDomains = domains
	} else {
		tmpl.ExcludedDNSDomains = []string{""}
	}
	var hosts []string
	for _, u := range req.URIs {
		hosts = append(hosts, strings.ToLower(u.Hostname()))
	}
	if hosts = uniqueSorted(hosts); len(hosts) > 0 {
		tmpl.PermittedURIDomains = hosts
	} else {
		tmpl.ExcludedURIDomains = []string{""}
	}
	tmpl.ExcludedIPRanges = []*net.IPNet{
		{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
	}
	tmpl.ExcludedEmailAddresses = []string{""}
}

func uniqueSorted(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// randomSerial returns a positive 128-bit serial number, so serials are
// unpredictable and collisions between replicas or restarts are negligible.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func x509Usages(usages []certificatesv1.KeyUsage) (x509.KeyUsage, []x509.ExtKeyUsage, error) {
	var ku x509.KeyUsage
	var eku []x509.ExtKeyUsage
	for _, u := range usages {
		if k, ok := request.KeyUsageBit(u); ok {
			ku |= k
			continue
		}
		if e, ok := request.ExtKeyUsage(u); ok {
			eku = append(eku, e)
			continue
		}
		return 0, nil, fmt.Errorf("unknown key usage %q", u)
	}
	return ku, eku, nil
}

package issuer

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/pki"
)

// Request is what a certificate is to say: the neutral description every
// request source (the CSI driver's CSR, a PodCertificateRequest, a
// Certificate) is turned into. The policy judges it and the backends sign
// it: what ends up in the certificate is what this says, whatever the bytes
// of a request said besides.
type Request struct {
	// Subject is the subject as parsed, for the checks of its attributes,
	// and RawSubject its DER, which certificates copy verbatim (so that a
	// literal subject keeps its order and string types).
	Subject    pkix.Name
	RawSubject []byte

	DNSNames       []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	EmailAddresses []string

	// PublicKey is the key the certificate is for; the requester proved
	// it holds the private key.
	PublicKey crypto.PublicKey
	// Duration is the lifetime: as asked for before the policy judges the
	// request (zero asks for the issuer's default), as approved after.
	// Backends may shorten it (never beyond their CA's own expiry) but
	// never lengthen it.
	Duration time.Duration
	// Backdate is how long before the moment of signing the certificate
	// starts, for verifiers whose clocks run behind; zero is the backend's
	// default. The certificate lives Backdate plus Duration in all.
	Backdate time.Duration
	Usages   []certificatesv1.KeyUsage
	// IsCA asks for a CA certificate that may sign leaves only.
	IsCA bool

	// CSR is the DER of the certificate request the requester signed, for
	// the backends that must hand it on (an ACME order is finalized with
	// it); nil when there is none.
	CSR []byte

	// Owner is the API object the request comes from (a
	// CertificateSigningRequest, a Certificate), for backends that show
	// their progress in objects it owns, as ACME Orders do, in Namespace
	// (its pod's or its own). Nil when there is none to show it on.
	Owner     *metav1.OwnerReference
	Namespace string
}

// RequestFromCSR describes what an X.509 certificate request asks for,
// with the usages and lifetime its envelope (a CertificateSigningRequest)
// asks for; zero duration asks for the default.
func RequestFromCSR(csr *x509.CertificateRequest, usages []certificatesv1.KeyUsage, duration time.Duration) *Request {
	return &Request{
		Subject:        csr.Subject,
		RawSubject:     csr.RawSubject,
		DNSNames:       csr.DNSNames,
		IPAddresses:    csr.IPAddresses,
		URIs:           csr.URIs,
		EmailAddresses: csr.EmailAddresses,
		PublicKey:      csr.PublicKey,
		Duration:       duration,
		Usages:         usages,
		IsCA:           pki.RequestsCA(csr),
		CSR:            csr.Raw,
	}
}

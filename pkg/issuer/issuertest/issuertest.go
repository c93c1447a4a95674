// Package issuertest helps the backends' tests build what they sign.
package issuertest

import (
	"crypto/x509"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/issuer"
)

// Options are the parts of a Request a CSR does not carry.
type Options struct {
	Duration time.Duration
	Usages   []certificatesv1.KeyUsage
	IsCA     bool
}

// Request is the Request a request source makes of csr with o, as the
// policy approves it: what csr says.
func Request(csr *x509.CertificateRequest, o Options) *issuer.Request {
	r := issuer.RequestFromCSR(csr, o.Usages, o.Duration)
	r.IsCA = o.IsCA
	return r
}

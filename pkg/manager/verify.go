package manager

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/request"
)

// clockSkew is how far the signer's clock may be off from the node's.
const clockSkew = 5 * time.Minute

// parseChain decodes every CERTIFICATE block of data, leaf first.
func parseChain(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q in the issued chain", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing issued certificate: %w", err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		return nil, errors.New("the issued chain holds no certificate")
	}
	return chain, nil
}

// verifyIssued checks that chain is what spec asked for, for the key pub, at
// time now: a signer (or anyone who could write the CSR status) must not be
// able to hand a pod a certificate for another key or identity.
func verifyIssued(spec *attributes.Spec, pub crypto.PublicKey, chain []*x509.Certificate, now time.Time) error {
	leaf := chain[0]
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return errors.New("the certificate is not for the private key generated for this volume")
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("certificate %d of the chain is not signed by the next: %w", i, err)
		}
	}
	if cn := spec.CommonName(); cn != "" && leaf.Subject.CommonName != cn {
		return fmt.Errorf("common name is %q, requested %q", leaf.Subject.CommonName, cn)
	}
	if !sameSet(leaf.DNSNames, spec.DNSNames, func(a, b string) bool { return a == b }) {
		return fmt.Errorf("DNS names are %v, requested %v", leaf.DNSNames, spec.DNSNames)
	}
	if !sameSet(leaf.IPAddresses, spec.IPAddresses, net.IP.Equal) {
		return fmt.Errorf("IP addresses are %v, requested %v", leaf.IPAddresses, spec.IPAddresses)
	}
	gotURIs, wantURIs := make([]string, len(leaf.URIs)), make([]string, len(spec.URIs))
	for i, u := range leaf.URIs {
		gotURIs[i] = u.String()
	}
	for i, u := range spec.URIs {
		wantURIs[i] = u.String()
	}
	if !sameSet(gotURIs, wantURIs, func(a, b string) bool { return a == b }) {
		return fmt.Errorf("URIs are %v, requested %v", gotURIs, wantURIs)
	}
	if leaf.IsCA != spec.IsCA {
		return fmt.Errorf("certificate is CA: %v, requested %v", leaf.IsCA, spec.IsCA)
	}
	for _, u := range spec.Usages {
		if !hasUsage(leaf, u) {
			return fmt.Errorf("certificate lacks the requested usage %q", u)
		}
	}
	switch {
	case leaf.NotBefore.After(now.Add(clockSkew)):
		return fmt.Errorf("certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case !leaf.NotAfter.After(now):
		return fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case leaf.NotAfter.After(now.Add(spec.Duration + clockSkew)):
		return fmt.Errorf("certificate is valid until %s, longer than the requested %s", leaf.NotAfter.UTC().Format(time.RFC3339), spec.Duration)
	}
	return nil
}

// verifyTrusted checks that the leaf of chain, with the rest of chain as
// intermediates, leads to a certificate of bundle at time now. Usages are
// checked by verifyIssued against the request, not here.
func verifyTrusted(chain, bundle []*x509.Certificate, now time.Time) error {
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

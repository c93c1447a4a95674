package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"

	"github.com/go-logr/logr"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

// pickChain checks the chain the server issued for st and returns it, as
// DER and as PEM, with its leaf; with spec.acme.preferredChain, the first
// of the server's chains (its default, then its alternates) whose top
// certificate a CA of that name issued. An alternate that cannot be read
// or checked is passed over: the default chain serves as well, if it
// verifies (a trust bundle holding only the preferred root may trust the
// alternate alone).
func (b *Backend) pickChain(ctx context.Context, iss v1alpha1.GenericIssuer, s *session, st *orderState, der [][]byte, pub crypto.PublicKey) ([][]byte, []byte, *x509.Certificate, error) {
	chain, leaf, err := verifyChain(der, pub, s.trust, b.clock.Now())
	preferred := iss.GetSpec().ACME.PreferredChain
	if preferred == "" || topIssuer(der) == preferred || st.certURL == "" {
		return der, chain, leaf, err
	}
	log := logr.FromContextOrDiscard(ctx)
	urls, listErr := s.client.ListCertAlternates(ctx, st.certURL)
	if listErr != nil {
		if err != nil {
			// The default chain is no good here; the list may be next time.
			return nil, nil, nil, fmt.Errorf("listing the ACME server's alternate chains: %w", listErr)
		}
		log.Error(listErr, "listing the ACME server's alternate chains; using its default chain")
		return der, chain, leaf, nil
	}
	for _, url := range urls {
		alt, err := s.client.FetchCert(ctx, url, true)
		if err != nil || topIssuer(alt) != preferred {
			continue
		}
		if altChain, altLeaf, err := verifyChain(alt, pub, s.trust, b.clock.Now()); err == nil {
			return alt, altChain, altLeaf, nil
		}
	}
	log.Info("no chain the ACME server offers leads to spec.acme.preferredChain; using its default chain")
	return der, chain, leaf, err
}

// topIssuer is the common name of the issuer of the last certificate of a
// chain: the root it leads to.
func topIssuer(der [][]byte) string {
	if len(der) == 0 {
		return ""
	}
	top, err := x509.ParseCertificate(der[len(der)-1])
	if err != nil {
		return ""
	}
	return top.Issuer.CommonName
}

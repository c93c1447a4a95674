package acme

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/acme/rfc2136"
)

// dnsClient is the client that writes the TXT records of a dns01 solver,
// with its TSIG secret read from its Secret. A missing Secret or key is
// the issuer's to fix: it is not Ready until then.
func (b *Backend) dnsClient(ctx context.Context, s *v1alpha1.ACMEDNS01Solver) (*rfc2136.Client, error) {
	if s == nil || s.RFC2136 == nil {
		return nil, issuer.Permanentf("the dns01 solver names no way to write records (rfc2136)")
	}
	r := s.RFC2136
	secret, err := b.secretKey(ctx, r.TSIGSecretRef, "spec.acme.solvers[].dns01.rfc2136.tsigSecretRef")
	if err != nil {
		return nil, err
	}
	client, err := rfc2136.New(rfc2136.Options{
		Nameserver:    r.Nameserver,
		TSIGKeyName:   r.TSIGKeyName,
		TSIGAlgorithm: r.TSIGAlgorithm,
		TSIGSecret:    strings.TrimSpace(string(secret)),
	})
	if err != nil {
		return nil, &issuer.NotReadyError{Reason: ReasonInvalidSolver, Message: "spec.acme.solvers[].dns01.rfc2136: " + err.Error()}
	}
	return client, nil
}

// secretKey reads the key ref names of a Secret in the cluster resource
// namespace; field names the reference in messages.
func (b *Backend) secretKey(ctx context.Context, ref v1alpha1.IssuerSecretKeySelector, field string) ([]byte, error) {
	name := types.NamespacedName{Namespace: b.clusterResourceNamespace, Name: ref.Name}
	secret, err := b.secrets.Get(ctx, name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonSecretNotFound, Message: fmt.Sprintf("%s: Secret %s does not exist", field, name)}
	case err != nil:
		return nil, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	v, ok := secret.Data[ref.Key]
	if !ok || len(v) == 0 {
		return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonInvalidSecret, Message: fmt.Sprintf("%s: Secret %s has no key %q", field, name, ref.Key)}
	}
	return v, nil
}

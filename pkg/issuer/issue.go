package issuer

import (
	"context"
	"fmt"
	"time"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

// Reasons of the outcomes of Issue, as request conditions carry them.
const (
	ReasonNoBackend      = "NoBackend"
	ReasonSigningFailed  = "SigningFailed"
	ReasonCANotAllowed   = "CANotAllowed"
	ReasonIssuerNotReady = "IssuerNotReady"
	ReasonCSRRequired    = "CertificateRequestRequired"
)

// IssuerWait is how long a request waits for an issuer that cannot sign
// before it is looked at again. The issuer's own status change normally
// wakes it sooner; this bounds the wait if that event was missed.
const IssuerWait = time.Minute

// Result is what Issue did with a request, and what its controller does
// next.
type Result struct {
	Outcome Outcome
	// Chain is the signed PEM chain, leaf first, roots left out, when
	// Outcome is Issued.
	Chain []byte
	// RetryAfter is when to call again, for Wait and WaitForIssuer.
	RetryAfter time.Duration
	// Reason (CamelCase) and Message say why, for Fail and WaitForIssuer.
	Reason, Message string
	// Err is the transient error, for Retry.
	Err error
}

// Issue takes an approved request along the signing path every kind of
// request shares: the issuer must be Ready for its current spec; its kind
// must be one the registry has; a CA certificate needs a policy that allows
// it; the backend signs; its error is classified; and the chain is handed
// out only once the issuer's published trust bundle trusts it (after a CA
// rotation the backend may sign with the new CA a moment before the issuer
// controller has published it).
func (r *Registry) Issue(ctx context.Context, iss v1alpha1.GenericIssuer, req *Request) Result {
	if !IsReady(iss) {
		return Result{Outcome: WaitForIssuer, RetryAfter: IssuerWait, Reason: ReasonIssuerNotReady,
			Message: fmt.Sprintf("%s is not Ready", RefFor(iss))}
	}
	kind, err := r.For(iss.GetSpec())
	if err != nil {
		return Result{Outcome: Fail, Reason: ReasonNoBackend, Message: err.Error()}
	}
	if kind.NeedsCSR && req.CSR == nil {
		return Result{Outcome: Fail, Reason: ReasonCSRRequired, Message: fmt.Sprintf("%s is an %s issuer, which signs only certificate requests that name what they ask for; this request has none", RefFor(iss), kind.Name)}
	}
	// The policy refuses these itself; checked here again because a CA
	// certificate is the one thing a mistake upstream must never issue.
	if pol := iss.GetSpec().Policy; req.IsCA && (pol == nil || !pol.AllowCA) {
		return Result{Outcome: Fail, Reason: ReasonCANotAllowed, Message: fmt.Sprintf("%s does not issue CA certificates (policy.allowCA)", RefFor(iss))}
	}
	chain, err := kind.Backend.Sign(ctx, iss, req)
	if err != nil {
		outcome, after := Classify(err)
		res := Result{Outcome: outcome, RetryAfter: after, Message: err.Error(), Err: err}
		switch outcome {
		case Fail:
			res.Reason = ReasonSigningFailed
		case WaitForIssuer:
			res.Reason, res.RetryAfter = ReasonIssuerNotReady, IssuerWait
		}
		return res
	}
	trusted, err := PublishedBundleTrusts(iss, chain)
	switch {
	case err != nil:
		return Result{Outcome: Retry, Err: fmt.Errorf("checking the signed chain against the trust bundle: %w", err)}
	case !trusted:
		return Result{Outcome: WaitForIssuer, RetryAfter: IssuerWait, Reason: ReasonIssuerNotReady,
			Message: "waiting for the issuer to publish the CA that signed the request"}
	}
	return Result{Outcome: Issued, Chain: chain}
}

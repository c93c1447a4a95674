// Package issuer is the seam between the request controllers and the
// signing backends. A Backend checks whether an issuer can sign and signs
// approved requests; its errors say whether to wait, retry, or give up, and
// Classify is the one place that reads them. A Registry knows every kind of
// backend, and Registry.Issue is the one signing path every kind of request
// takes.
//
// It knows no request source: a request arrives here as a Request, already
// approved by the policy.
package issuer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// Status is an issuer's readiness as a backend sees it.
type Status struct {
	Ready bool
	// Reason is a CamelCase word and Message a sentence saying what to fix
	// when Ready is false.
	Reason  string
	Message string
	// TrustBundle is the PEM of the CA certificates relying parties should
	// trust; empty when not ready.
	TrustBundle []byte
	// RecheckAt is when readiness changes by itself (the CA expires or
	// becomes valid); zero when it never does.
	RecheckAt time.Time
	// CA is the certificate that signs when Ready, so the controller can
	// tell when it changes; nil for backends that do not sign with a CA
	// of their own.
	CA *x509.Certificate
	// LongestLifetime is, for a backend that chooses lifetimes itself
	// (Kind.MaxLifetime), the longest lifetime of a certificate it issued
	// for the issuer since the controller started; zero when none.
	LongestLifetime time.Duration
}

// Backend is one kind of issuer. Both methods are called concurrently for
// many issuers and must not keep per-call state outside the issuer's own key.
type Backend interface {
	// Ready checks the issuer's configuration and key material. An error
	// means the check could not be made (e.g. the API server was
	// unreachable) and should be retried; a problem the user must fix is a
	// Status with Ready false.
	Ready(ctx context.Context, iss v1alpha1.GenericIssuer) (Status, error)
	// Sign issues a certificate for req and returns the PEM chain: the
	// leaf first, then the intermediates, without the root. Errors are
	// *PendingError, *PermanentError or *NotReadyError; any other error is
	// retried.
	Sign(ctx context.Context, iss v1alpha1.GenericIssuer, req *Request) ([]byte, error)
}

// Labels on a Secret the controller generates for an issuer (a selfSigned
// root, an ACME account key) name that issuer.
const (
	LabelIssuerKind      = "certmint.io/issuer-kind"
	LabelIssuerNamespace = "certmint.io/issuer-namespace"
	LabelIssuerName      = "certmint.io/issuer-name"
)

// LabelsFor returns the labels naming ref on a Secret generated for it.
func LabelsFor(ref request.IssuerRef) map[string]string {
	return map[string]string{
		LabelIssuerKind:      string(ref.Kind),
		LabelIssuerNamespace: ref.Namespace,
		LabelIssuerName:      ref.Name,
	}
}

// GeneratedFor returns the issuer a Secret was generated for, if the
// controller generated it.
func GeneratedFor(secret metav1.Object) (request.IssuerRef, bool) {
	labels := secret.GetLabels()
	kind, ok := labels[LabelIssuerKind]
	if !ok {
		return request.IssuerRef{}, false
	}
	return request.IssuerRef{Kind: request.IssuerKind(kind), Namespace: labels[LabelIssuerNamespace], Name: labels[LabelIssuerName]}, true
}

// RefFor names iss the way signer names do.
func RefFor(iss v1alpha1.GenericIssuer) request.IssuerRef {
	if iss.GetNamespace() == "" {
		return request.IssuerRef{Kind: request.KindClusterIssuer, Name: iss.GetName()}
	}
	return request.IssuerRef{Kind: request.KindIssuer, Namespace: iss.GetNamespace(), Name: iss.GetName()}
}

// Get reads the issuer ref names from reader.
func Get(ctx context.Context, reader client.Reader, ref request.IssuerRef) (v1alpha1.GenericIssuer, error) {
	var iss v1alpha1.GenericIssuer = &v1alpha1.Issuer{}
	if ref.Kind == request.KindClusterIssuer {
		iss = &v1alpha1.ClusterIssuer{}
	}
	return iss, reader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, iss)
}

// PendingError means the backend is working on the request and the same call
// will succeed or fail for good later.
type PendingError struct {
	Err        error
	RetryAfter time.Duration
}

func (e *PendingError) Error() string { return e.Err.Error() }
func (e *PendingError) Unwrap() error { return e.Err }

// PermanentError means retrying the same request cannot succeed.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// NotReadyError means the issuer cannot sign anything right now; requests
// wait until it is Ready again.
type NotReadyError struct {
	Reason  string
	Message string
}

func (e *NotReadyError) Error() string { return fmt.Sprintf("issuer not ready: %s", e.Message) }

// Permanentf builds a *PermanentError.
func Permanentf(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

// Outcome is what the caller should do after a failed Sign.
type Outcome int

const (
	// Retry with backoff: a transient failure.
	Retry Outcome = iota
	// Wait for the returned delay, then call again.
	Wait
	// Fail the request for good.
	Fail
	// WaitForIssuer until the issuer is Ready again.
	WaitForIssuer
	// Issued is Registry.Issue's outcome for a request that got its
	// certificate; Classify never returns it.
	Issued
)

// defaultPendingDelay is used when a backend reports pending without a delay.
const defaultPendingDelay = 5 * time.Second

// Classify says what to do about an error from Sign, and after how long for
// Wait.
func Classify(err error) (Outcome, time.Duration) {
	var pending *PendingError
	var permanent *PermanentError
	var notReady *NotReadyError
	switch {
	case errors.As(err, &pending):
		if pending.RetryAfter <= 0 {
			return Wait, defaultPendingDelay
		}
		return Wait, pending.RetryAfter
	case errors.As(err, &permanent):
		return Fail, 0
	case errors.As(err, &notReady):
		return WaitForIssuer, 0
	}
	return Retry, 0
}

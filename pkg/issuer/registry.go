package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// Kind is one kind of backend, with what the controllers need to know of
// it besides the Backend itself. Each backend's package makes its own.
type Kind struct {
	// Name is the backend's field in the issuer spec, such as "ca".
	Name string
	// Selected reports whether spec selects this kind.
	Selected func(spec *v1alpha1.IssuerSpec) bool
	// Secrets names the Secrets the backend reads for iss: the issuer
	// controller watches them, so a change of one looks at iss again at
	// once. Nil when it reads none.
	Secrets func(iss v1alpha1.GenericIssuer) []types.NamespacedName
	// Forget cleans up after an issuer that was deleted: a Secret the
	// controller generated for it, a session kept in memory. Nil when there
	// is nothing to clean up.
	Forget func(ctx context.Context, ref request.IssuerRef) error
	// MaxLifetime bounds the certificates of a backend that chooses their
	// lifetime itself, whatever it was asked for, as an ACME server does:
	// a CA the backend stops chaining to stays trusted that long. Zero for
	// a backend that issues the lifetime asked for, which the issuer's
	// policy bounds.
	MaxLifetime time.Duration
	// NeedsCSR is true for a backend that must hand on a certificate
	// request the requester signed, with the names in it, as an ACME order
	// is finalized with one: it cannot sign a Request without CSR.
	NeedsCSR bool
	Backend  Backend
}

// Registry holds every kind of backend the controller has.
type Registry struct {
	kinds []Kind
}

// NewRegistry returns a Registry of kinds.
func NewRegistry(kinds ...Kind) (*Registry, error) {
	for _, k := range kinds {
		switch {
		case k.Name == "" || k.Selected == nil || k.Backend == nil:
			return nil, fmt.Errorf("issuer kind %q: Name, Selected and Backend are required", k.Name)
		case k.MaxLifetime < 0:
			return nil, fmt.Errorf("issuer kind %q: MaxLifetime must not be negative", k.Name)
		}
	}
	return &Registry{kinds: slices.Clone(kinds)}, nil
}

// ErrNoBackend is returned for a spec that selects no kind the registry has.
var ErrNoBackend = errors.New("the spec sets no backend this controller supports")

// For returns the kind spec selects.
func (r *Registry) For(spec *v1alpha1.IssuerSpec) (*Kind, error) {
	for i := range r.kinds {
		if r.kinds[i].Selected(spec) {
			return &r.kinds[i], nil
		}
	}
	return nil, ErrNoBackend
}

// Secrets names the Secrets iss's backend reads.
func (r *Registry) Secrets(iss v1alpha1.GenericIssuer) []types.NamespacedName {
	k, err := r.For(iss.GetSpec())
	if err != nil || k.Secrets == nil {
		return nil
	}
	return k.Secrets(iss)
}

// Forget has every kind clean up after the deleted issuer ref: its spec is
// gone with it, so which kind it was is not known any more.
func (r *Registry) Forget(ctx context.Context, ref request.IssuerRef) error {
	var errs []error
	for _, k := range r.kinds {
		if k.Forget != nil {
			if err := k.Forget(ctx, ref); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

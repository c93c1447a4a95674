package ca

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

// Loader reads CA Secrets and keeps each parsed KeyPair until the Secret's
// resourceVersion changes, so signing does not parse a private key per
// request. It is safe for concurrent use.
type Loader struct {
	secrets *issuer.Secrets

	mu     sync.Mutex
	loaded map[types.NamespacedName]loadedKeyPair
}

type loadedKeyPair struct {
	resourceVersion string
	keyPair         *KeyPair
	err             error
}

// NewLoader returns a Loader reading Secrets through secrets.
func NewLoader(secrets *issuer.Secrets) *Loader {
	return &Loader{secrets: secrets, loaded: map[types.NamespacedName]loadedKeyPair{}}
}

// Load returns the KeyPair in the Secret for the issuer user. A missing or
// invalid Secret is an *issuer.NotReadyError; any other error is from the
// API and worth a retry. A Secret the controller generated for an issuer (a
// selfSigned root) serves that issuer only: otherwise anyone who may create
// an Issuer in the controller's namespace could sign with a ClusterIssuer's
// root under a policy of their own.
func (l *Loader) Load(ctx context.Context, ref types.NamespacedName, user request.IssuerRef) (*KeyPair, error) {
	secret, err := l.secrets.Get(ctx, ref)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &issuer.NotReadyError{
				Reason:  v1alpha1.ReasonSecretNotFound,
				Message: fmt.Sprintf("Secret %s of type %s not found", ref, corev1.SecretTypeTLS),
			}
		}
		return nil, fmt.Errorf("reading Secret %s: %w", ref, err)
	}
	if owner, generated := issuer.GeneratedFor(secret); generated && owner != user {
		return nil, &issuer.NotReadyError{
			Reason:  v1alpha1.ReasonSecretNotUsable,
			Message: fmt.Sprintf("Secret %s was generated for %s and serves it alone; give %s a CA Secret of its own", ref, owner, user),
		}
	}
	if secret.Type != corev1.SecretTypeTLS {
		return nil, &issuer.NotReadyError{
			Reason:  v1alpha1.ReasonInvalidSecret,
			Message: fmt.Sprintf("Secret %s is of type %s, not %s", ref, secret.Type, corev1.SecretTypeTLS),
		}
	}

	l.mu.Lock()
	cached, ok := l.loaded[ref]
	l.mu.Unlock()
	if ok && cached.resourceVersion == secret.ResourceVersion {
		return cached.keyPair, cached.err
	}
	kp, err := ParseKeyPair(ref.String(), secret.Data)
	l.mu.Lock()
	l.loaded[ref] = loadedKeyPair{resourceVersion: secret.ResourceVersion, keyPair: kp, err: err}
	l.mu.Unlock()
	return kp, err
}

// Forget drops what Load cached for ref, e.g. when its issuer is deleted.
func (l *Loader) Forget(ref types.NamespacedName) {
	l.mu.Lock()
	delete(l.loaded, ref)
	l.mu.Unlock()
	l.secrets.Forget(ref)
}

// Options configures a Backend.
type Options struct {
	// Loader reads the CA Secrets. Required.
	Loader *Loader
	// ClusterResourceNamespace is where the Secrets of ClusterIssuers live.
	// Required.
	ClusterResourceNamespace string
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Backend signs for issuers with a ca spec.
type Backend struct {
	loader                   *Loader
	clusterResourceNamespace string
	clock                    clock.PassiveClock
}

var _ issuer.Backend = (*Backend)(nil)

// New returns a Backend.
func New(opts Options) (*Backend, error) {
	if opts.Loader == nil {
		return nil, errors.New("ca: Loader is required")
	}
	if opts.ClusterResourceNamespace == "" {
		return nil, errors.New("ca: ClusterResourceNamespace is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Backend{loader: opts.Loader, clusterResourceNamespace: opts.ClusterResourceNamespace, clock: opts.Clock}, nil
}

// Kind is the ca backend's entry in the registry.
func (b *Backend) Kind() issuer.Kind {
	return issuer.Kind{
		Name:     "ca",
		Selected: func(spec *v1alpha1.IssuerSpec) bool { return spec.CA != nil },
		Secrets: func(iss v1alpha1.GenericIssuer) []types.NamespacedName {
			return []types.NamespacedName{b.SecretRef(iss)}
		},
		Backend: b,
	}
}

// SecretRef is where the CA Secret of iss lives.
func (b *Backend) SecretRef(iss v1alpha1.GenericIssuer) types.NamespacedName {
	ns := iss.GetNamespace()
	if ns == "" {
		ns = b.clusterResourceNamespace
	}
	var name string
	if spec := iss.GetSpec(); spec.CA != nil {
		name = spec.CA.SecretName
	}
	return types.NamespacedName{Namespace: ns, Name: name}
}

// Ready loads and checks the CA key pair.
func (b *Backend) Ready(ctx context.Context, iss v1alpha1.GenericIssuer) (issuer.Status, error) {
	kp, err := b.loader.Load(ctx, b.SecretRef(iss), issuer.RefFor(iss))
	return KeyPairStatus(kp, err, b.clock.Now())
}

// Sign signs req with the CA key pair.
func (b *Backend) Sign(ctx context.Context, iss v1alpha1.GenericIssuer, req *issuer.Request) ([]byte, error) {
	kp, err := b.loader.Load(ctx, b.SecretRef(iss), issuer.RefFor(iss))
	if err != nil {
		return nil, err
	}
	return kp.Sign(b.clock.Now(), req)
}

// KeyPairStatus turns the result of Loader.Load into a readiness Status at
// now; errors other than *issuer.NotReadyError are passed on for a retry.
func KeyPairStatus(kp *KeyPair, err error, now time.Time) (issuer.Status, error) {
	if err == nil {
		err = kp.CheckValidity(now)
	}
	var notReady *issuer.NotReadyError
	switch {
	case errors.As(err, &notReady):
		st := issuer.Status{Reason: notReady.Reason, Message: notReady.Message}
		if kp != nil {
			st.RecheckAt = kp.RecheckAt(now)
		}
		return st, nil
	case err != nil:
		return issuer.Status{}, err
	}
	return issuer.Status{
		Ready:       true,
		Reason:      v1alpha1.ReasonReady,
		Message:     fmt.Sprintf("Signing with CA %s, valid until %s", kp.Cert.Subject, kp.Cert.NotAfter.UTC().Format(time.RFC3339)),
		TrustBundle: kp.TrustBundle(),
		RecheckAt:   kp.RecheckAt(now),
		CA:          kp.Cert,
	}, nil
}

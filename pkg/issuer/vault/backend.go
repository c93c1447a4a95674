// Package vault is the backend for issuers with a vault spec: it signs
// with a role of a HashiCorp Vault PKI secrets engine, through the role's
// sign endpoint and the requester's own certificate request, so the key
// never leaves where it was made.
//
// Each issuer has a session: a client for its Vault and the token it
// logged in with, kept and renewed (session.go), so that one login serves
// every signature. Readiness is a successful login plus Vault's health,
// the token's capabilities on the sign path, and the CA the path signs
// with, which the issuer publishes as its trust bundle.
//
// It knows no request source and no Kubernetes object but the Secrets and
// ServiceAccounts an issuer names.
package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"k8s.io/utils/clock"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

// Ready reasons of Vault issuers, besides the shared ones (SecretNotFound,
// InvalidSecret, CAExpired).
const (
	ReasonSealed         = "VaultSealed"
	ReasonNotInitialized = "VaultNotInitialized"
	ReasonDRSecondary    = "VaultDRSecondary"
	ReasonUnreachable    = "VaultUnreachable"
	ReasonLoginFailed    = "VaultLoginFailed"
	// ReasonServiceAccountToken: the TokenRequest for Kubernetes auth
	// was refused, typically for want of RBAC.
	ReasonServiceAccountToken = "ServiceAccountTokenFailed"
	ReasonPermissionDenied    = "VaultPermissionDenied"
	ReasonCAUnavailable       = "VaultCAUnavailable"
	ReasonInvalidCABundle     = "InvalidCABundle"
)

// DefaultCheckInterval is how often a Vault issuer is checked: Vault's
// seal status and CA change without any event the controller could see.
const DefaultCheckInterval = 30 * time.Second

// requestTimeout bounds one request to Vault.
const requestTimeout = 30 * time.Second

// caMinRemaining is the shortest remaining life of Vault's CA with which
// the issuer is Ready: the ca backend's rule.
const caMinRemaining = 10 * time.Minute

// Options configures a Backend.
type Options struct {
	// Secrets reads the Secrets issuers name. Required.
	Secrets *issuer.Secrets
	// Tokens requests ServiceAccount tokens for Kubernetes auth. Required.
	Tokens TokenRequester
	// ClusterResourceNamespace is where the Secrets and ServiceAccounts of
	// ClusterIssuers live. Required.
	ClusterResourceNamespace string
	// CheckInterval is how often Ready looks at Vault again; zero means
	// DefaultCheckInterval.
	CheckInterval time.Duration
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Backend signs for issuers with a vault spec.
type Backend struct {
	secrets                  *issuer.Secrets
	tokens                   TokenRequester
	clusterResourceNamespace string
	checkInterval            time.Duration
	clock                    clock.PassiveClock

	mu       sync.Mutex
	sessions map[string]*session
}

var _ issuer.Backend = (*Backend)(nil)

// New returns a Backend.
func New(opts Options) (*Backend, error) {
	switch {
	case opts.Secrets == nil:
		return nil, errors.New("vault: Secrets is required")
	case opts.Tokens == nil:
		return nil, errors.New("vault: Tokens is required")
	case opts.ClusterResourceNamespace == "":
		return nil, errors.New("vault: ClusterResourceNamespace is required")
	case opts.CheckInterval < 0:
		return nil, errors.New("vault: CheckInterval must not be negative")
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Backend{
		secrets:                  opts.Secrets,
		tokens:                   opts.Tokens,
		clusterResourceNamespace: opts.ClusterResourceNamespace,
		checkInterval:            opts.CheckInterval,
		clock:                    opts.Clock,
		sessions:                 map[string]*session{},
	}, nil
}

// Kind is the vault backend's entry in the registry.
func (b *Backend) Kind() issuer.Kind {
	return issuer.Kind{
		Name:     "vault",
		Selected: func(spec *v1alpha1.IssuerSpec) bool { return spec.Vault != nil },
		Secrets:  b.secretRefs,
		Forget:   b.forget,
		// The role's sign endpoint takes the requester's certificate
		// request; without one Vault would have to make the key.
		NeedsCSR: true,
		Backend:  b,
	}
}

// forget drops the session of a deleted issuer and revokes the token it
// logged in with.
func (b *Backend) forget(ctx context.Context, ref request.IssuerRef) error {
	b.mu.Lock()
	s := b.sessions[ref.String()]
	delete(b.sessions, ref.String())
	b.mu.Unlock()
	if s != nil {
		s.forget(ctx)
	}
	return nil
}

// session returns the session of iss, a new one when the spec or the
// Secrets it names changed since. Problems the user must fix are
// *issuer.NotReadyError.
func (b *Backend) session(ctx context.Context, iss v1alpha1.GenericIssuer) (*session, error) {
	cfg, err := b.resolve(ctx, iss)
	if err != nil {
		return nil, err
	}
	fingerprint := cfg.fingerprint()
	ref := issuer.RefFor(iss)
	s, replaced, err := b.keep(ref, fingerprint, cfg)
	if replaced != nil {
		// Its token serves nobody any more.
		replaced.forget(ctx)
	}
	return s, err
}

// keep returns the session of ref for fingerprint, making it (from cfg)
// when the kept one is for another fingerprint, which it then returns as
// replaced.
func (b *Backend) keep(ref request.IssuerRef, fingerprint string, cfg *config) (s, replaced *session, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.sessions[ref.String()]
	if old != nil && old.fingerprint == fingerprint {
		return old, nil, nil
	}
	base, err := newClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	s = &session{fingerprint: fingerprint, ref: ref, base: base, auth: cfg.auth, clock: b.clock}
	b.sessions[ref.String()] = s
	return s, old, nil
}

// newClient returns a client for Vault as cfg says, carrying no token. The
// library also reads VAULT_* environment variables; an issuer's spec alone
// says how to reach its Vault, so the token and namespace are set here.
func newClient(cfg *config) (*vaultapi.Client, error) {
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	c, err := vaultapi.NewClient(&vaultapi.Config{
		Address: cfg.server,
		HttpClient: &http.Client{
			Transport: transport,
			// The library follows a standby's redirect itself, refusing
			// one from https to http.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout: requestTimeout,
		// Failures go back to the request controller, which retries with
		// backoff; retrying here too would only hold a worker.
		MaxRetries: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("creating a Vault client for %s: %w", cfg.server, err)
	}
	c.ClearToken()
	c.SetWrappingLookupFunc(noWrapping)
	if cfg.namespace != "" {
		c.SetNamespace(cfg.namespace)
	} else {
		c.ClearNamespace()
	}
	return c, nil
}

// Ready checks that Vault is up and unsealed, that the issuer can log in
// and may sign on its path, and reads the CA that signs there.
func (b *Backend) Ready(ctx context.Context, iss v1alpha1.GenericIssuer) (issuer.Status, error) {
	now := b.clock.Now()
	recheck := now.Add(b.checkInterval)
	st, err := b.ready(ctx, iss, now)
	var notReady *issuer.NotReadyError
	switch {
	case errors.As(err, &notReady):
		return issuer.Status{Reason: notReady.Reason, Message: notReady.Message, RecheckAt: recheck}, nil
	case err != nil:
		return issuer.Status{}, err
	}
	if st.RecheckAt.IsZero() || recheck.Before(st.RecheckAt) {
		st.RecheckAt = recheck
	}
	return st, nil
}

func (b *Backend) ready(ctx context.Context, iss v1alpha1.GenericIssuer, now time.Time) (issuer.Status, error) {
	spec := iss.GetSpec().Vault
	if spec == nil {
		return issuer.Status{}, &issuer.NotReadyError{Reason: v1alpha1.ReasonError, Message: "the spec has no vault section"}
	}
	path, err := parsePath(spec.Path)
	if err != nil {
		return issuer.Status{}, err
	}
	s, err := b.session(ctx, iss)
	if err != nil {
		return issuer.Status{}, err
	}
	// sys/health belongs to the root namespace.
	health, err := s.base.WithNamespace("").Sys().HealthWithContext(ctx)
	if err != nil {
		return issuer.Status{}, unreachable(spec.Server, "checking health", err)
	}
	if problem := healthProblem(spec.Server, health); problem != nil {
		return issuer.Status{}, problem
	}
	if err := b.checkCapabilities(ctx, s, spec.Path); err != nil {
		return issuer.Status{}, err
	}
	caSecret, err := s.base.Logical().ReadWithContext(ctx, path.caPath())
	var resp *vaultapi.ResponseError
	switch {
	case errors.As(err, &resp) && refused(resp.StatusCode), err == nil && caSecret == nil:
		msg := "no such issuer"
		if resp != nil {
			msg = vaultMessage(resp)
		}
		return issuer.Status{}, &issuer.NotReadyError{Reason: ReasonCAUnavailable, Message: fmt.Sprintf(
			"reading the CA of %s from %s: %s; check the mount and issuer in spec.vault.path", spec.Path, path.caPath(), msg)}
	case err != nil:
		return issuer.Status{}, unreachable(spec.Server, "reading the CA", err)
	}
	ca, bundle, err := caChain(caSecret)
	if err != nil {
		return issuer.Status{}, &issuer.NotReadyError{Reason: ReasonCAUnavailable, Message: fmt.Sprintf("reading the CA of %s from %s: %v", spec.Path, path.caPath(), err)}
	}
	if !now.Add(caMinRemaining).Before(ca.NotAfter) || now.Before(ca.NotBefore) {
		return issuer.Status{}, &issuer.NotReadyError{Reason: v1alpha1.ReasonCAExpired, Message: fmt.Sprintf(
			"Vault's CA %s for %s is valid from %s until %s, and not for ten minutes from now; rotate it in Vault",
			ca.Subject, spec.Path, ca.NotBefore.UTC().Format(time.RFC3339), ca.NotAfter.UTC().Format(time.RFC3339))}
	}
	// Look again when the token needs renewing (a quiet issuer signs
	// nothing that would renew it) and before the CA is too close to its
	// end.
	recheck := ca.NotAfter.Add(-caMinRemaining)
	if next := s.nextAuth(); !next.IsZero() && next.Before(recheck) {
		recheck = next
	}
	return issuer.Status{
		Ready:       true,
		Reason:      v1alpha1.ReasonReady,
		Message:     fmt.Sprintf("Signing with Vault at %s, %s, as CA %s, valid until %s%s", spec.Server, spec.Path, ca.Subject, ca.NotAfter.UTC().Format(time.RFC3339), healthNote(health)),
		TrustBundle: bundle,
		RecheckAt:   recheck,
		CA:          ca,
	}, nil
}

// checkCapabilities logs in (or renews the token) and checks the token
// may sign on path. A token without the default policy may not ask for
// its capabilities; the check is then left to the first signature.
func (b *Backend) checkCapabilities(ctx context.Context, s *session, path string) error {
	s.mu.Lock()
	skip := s.capabilitiesForbidden
	s.mu.Unlock()
	if skip {
		_, err := s.client(ctx)
		return loginProblem(s, err)
	}
	var caps []string
	err := s.do(ctx, func(c *vaultapi.Client) error {
		var err error
		caps, err = c.Sys().CapabilitiesSelfWithContext(ctx, path)
		return err
	})
	switch {
	case isForbidden(err):
		s.mu.Lock()
		s.capabilitiesForbidden = true
		s.mu.Unlock()
		return nil
	case err != nil:
		return loginProblem(s, err)
	case !slices.Contains(caps, "update") && !slices.Contains(caps, "root"):
		return &issuer.NotReadyError{Reason: ReasonPermissionDenied, Message: fmt.Sprintf(
			"the token from %s login may not sign: its capabilities on %s are %v; its policy needs path %q { capabilities = [\"update\"] }",
			s.auth.method(), path, caps, path)}
	}
	return nil
}

// loginProblem passes on what logging in found wrong, and reports Vault
// as unreachable otherwise.
func loginProblem(s *session, err error) error {
	var notReady *issuer.NotReadyError
	if err == nil || errors.As(err, &notReady) {
		return err
	}
	return unreachable(s.base.Address(), "logging in", err)
}

// unreachable reports a failure to reach server as not ready: Vault may
// be down, or the address or its CA bundle wrong.
func unreachable(server, what string, err error) error {
	var resp *vaultapi.ResponseError
	msg := err.Error()
	if errors.As(err, &resp) {
		msg = fmt.Sprintf("Vault answered %d: %s", resp.StatusCode, vaultMessage(resp))
	}
	return &issuer.NotReadyError{Reason: ReasonUnreachable, Message: fmt.Sprintf("%s at %s: %s", what, server, msg)}
}

// Sign sends req's certificate request to the role's sign endpoint with
// the names and lifetime policy approved, and checks that what Vault
// issued is that.
func (b *Backend) Sign(ctx context.Context, iss v1alpha1.GenericIssuer, req *issuer.Request) ([]byte, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	spec := iss.GetSpec().Vault
	if spec == nil {
		return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonError, Message: "the spec has no vault section"}
	}
	s, err := b.session(ctx, iss)
	if err != nil {
		return nil, err
	}
	var secret *vaultapi.Secret
	err = s.do(ctx, func(c *vaultapi.Client) error {
		var err error
		secret, err = c.Logical().WriteWithContext(ctx, spec.Path, signData(req))
		return err
	})
	var resp *vaultapi.ResponseError
	var notReady *issuer.NotReadyError
	switch {
	case errors.As(err, &notReady):
		return nil, err
	case errors.As(err, &resp) && refused(resp.StatusCode):
		// Vault's own words say what the role refused.
		return nil, issuer.Permanentf("Vault refused to sign at %s: %s", spec.Path, vaultMessage(resp))
	case err != nil:
		// Sealed, failing or unreachable: the request controller retries
		// with backoff; certificates already issued are not touched.
		return nil, fmt.Errorf("signing with Vault at %s: %w", spec.Server, err)
	case secret == nil:
		return nil, fmt.Errorf("signing with Vault at %s: no answer from %s", spec.Server, spec.Path)
	}
	got, err := parseSigned(secret)
	if err != nil {
		return nil, issuer.Permanentf("Vault's answer from %s: %w", spec.Path, err)
	}
	if err := checkSigned(req, got, b.clock.Now()); err != nil {
		return nil, err
	}
	return got.pem(), nil
}

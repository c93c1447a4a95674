// Package acme is the backend for issuers with an acme spec: it registers
// an account with an ACME (RFC 8555) server and gets certificates for DNS
// names by answering HTTP-01 challenges. The node's key never leaves the
// node: orders are finalized with the certificate request the node signed.
//
// An order takes several round trips and, for a real CA, seconds to
// minutes of validation, so Sign never waits for one: it advances the
// order of a request as far as it can and returns *issuer.PendingError
// until the certificate is there, keeping the order between calls.
package acme

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

// Ready reasons of ACME issuers.
const (
	ReasonInvalidTrustBundle = "InvalidTrustBundle"
	ReasonInvalidCABundle    = "InvalidCABundle"
	ReasonAccountError       = "ACMEAccountError"
	ReasonInvalidSolver      = "InvalidSolver"
	// ReasonNamespacedIssuer is the reason of an Issuer with an acme
	// spec: the API server rejects those, so only one stored before that
	// rule existed gets here.
	ReasonNamespacedIssuer = "ACMERequiresClusterIssuer"
)

// accountRecheck is how soon an issuer whose account could not be
// registered is looked at again: the server may have been unreachable.
const accountRecheck = time.Minute

// lifetimeRecheck is how often a Ready issuer is looked at again, so that
// its status soon records the lifetimes issued: a controller that restarts
// knows them from there. It costs no request to the server (the session is
// kept) and a status write only when the longest lifetime grew.
const lifetimeRecheck = time.Minute

// Challenge is an HTTP-01 challenge to answer.
type Challenge struct {
	// DNSName is the name the ACME server validates.
	DNSName string
	// Token is the last segment of the challenge's URL, and
	// KeyAuthorization the answer.
	Token, KeyAuthorization string
	// Ingress, when set, asks for the challenge to be routed through an
	// Ingress controller.
	Ingress *v1alpha1.ACMEHTTP01Ingress
}

// Solver makes key authorizations answerable at
// http://<name>/.well-known/acme-challenge/<token>.
type Solver interface {
	// Present publishes the answer of ch, and its route when it asks for
	// one; publishing it again is not an error.
	Present(ctx context.Context, ch Challenge) error
	// Served reports whether keyAuth is being answered for token by the
	// solver itself.
	Served(ctx context.Context, token, keyAuth string) (bool, error)
	// Reachable reports why the URL of ch, asked as the ACME server asks
	// for it, does not answer its key authorization; nil when it does.
	Reachable(ctx context.Context, ch Challenge) error
	// CleanUp withdraws the answer of ch and its route; what is missing
	// is not an error.
	CleanUp(ctx context.Context, ch Challenge) error
}

// Options configures a Backend.
type Options struct {
	// Client creates account key Secrets. Required.
	Client client.Client
	// Secrets reads account key Secrets. Required.
	Secrets *issuer.Secrets
	// Solver answers HTTP-01 challenges. Required.
	Solver Solver
	// ClusterResourceNamespace is where the account key Secrets of
	// ClusterIssuers live. Required.
	ClusterResourceNamespace string
	// UserAgent identifies the controller to ACME servers; may be empty.
	UserAgent string
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Backend signs for issuers with an acme spec.
type Backend struct {
	client                   client.Client
	secrets                  *issuer.Secrets
	solver                   Solver
	clusterResourceNamespace string
	userAgent                string
	clock                    clock.PassiveClock

	mu       sync.Mutex
	sessions map[string]*session
	orders   map[string]*orderState
	// lifetimes are the longest lifetimes of the certificates issued for
	// each issuer since the controller started.
	lifetimes map[string]time.Duration
	// leftovers are challenges whose withdrawal failed, tried again by
	// Start.
	leftovers []*presented
}

var _ manager.Runnable = (*Backend)(nil)

// collectInterval is how often Start collects idle orders and withdraws
// leftovers.
const collectInterval = time.Minute

// Start collects, on the leader, the orders of requests that went and the
// challenges whose withdrawal failed, until ctx ends: a TXT record must not
// wait for the next signing to be removed.
func (b *Backend) Start(ctx context.Context) error {
	t := time.NewTicker(collectInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			b.collectOrders(ctx)
		}
	}
}

var _ issuer.Backend = (*Backend)(nil)

// New returns a Backend.
func New(opts Options) (*Backend, error) {
	switch {
	case opts.Client == nil:
		return nil, errors.New("acme: Client is required")
	case opts.Secrets == nil:
		return nil, errors.New("acme: Secrets is required")
	case opts.Solver == nil:
		return nil, errors.New("acme: Solver is required")
	case opts.ClusterResourceNamespace == "":
		return nil, errors.New("acme: ClusterResourceNamespace is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Backend{
		client:                   opts.Client,
		secrets:                  opts.Secrets,
		solver:                   opts.Solver,
		clusterResourceNamespace: opts.ClusterResourceNamespace,
		userAgent:                opts.UserAgent,
		clock:                    opts.Clock,
		sessions:                 map[string]*session{},
		orders:                   map[string]*orderState{},
		lifetimes:                map[string]time.Duration{},
	}, nil
}

// MaxLifetime bounds the certificates an ACME server issues: the server
// chooses their lifetime, whatever was asked for (Let's Encrypt ignores
// the notAfter of an order), and public ACME CAs issue for 90 days at
// most. A longer certificate is refused. A root the server stops chaining
// to stays trusted as long as the longest certificate it did issue
// (issuer.Status.LongestLifetime), or this long when it is not known.
const MaxLifetime = 100 * 24 * time.Hour

// Kind is the acme backend's entry in the registry.
func (b *Backend) Kind() issuer.Kind {
	return issuer.Kind{
		Name:        "acme",
		Selected:    func(spec *v1alpha1.IssuerSpec) bool { return spec.ACME != nil },
		Secrets:     b.secretsOf,
		Forget:      b.forget,
		MaxLifetime: MaxLifetime,
		NeedsCSR:    true,
		Backend:     b,
	}
}

// secretsOf names the Secrets iss reads: its account key, the MAC key of
// its external account binding, and the TSIG keys of its dns01 solvers.
func (b *Backend) secretsOf(iss v1alpha1.GenericIssuer) []types.NamespacedName {
	spec := iss.GetSpec().ACME
	names := []string{spec.AccountKeySecretName}
	if eab := spec.ExternalAccountBinding; eab != nil {
		names = append(names, eab.KeySecretRef.Name)
	}
	for _, s := range spec.SolverList() {
		if s.DNS01 != nil && s.DNS01.RFC2136 != nil {
			names = append(names, s.DNS01.RFC2136.TSIGSecretRef.Name)
		}
	}
	out := make([]types.NamespacedName, len(names))
	for i, n := range names {
		out[i] = types.NamespacedName{Namespace: b.clusterResourceNamespace, Name: n}
	}
	return out
}

// forget drops the session and the orders of a deleted issuer. Its account
// key Secret stays, so that a new issuer naming it gets the same account
// back.
func (b *Backend) forget(ctx context.Context, ref request.IssuerRef) error {
	prefix := ref.String() + "/"
	var gone []*orderState
	b.mu.Lock()
	delete(b.sessions, ref.String())
	delete(b.lifetimes, ref.String())
	for key, st := range b.orders {
		if strings.HasPrefix(key, prefix) {
			gone = append(gone, st)
			delete(b.orders, key)
		}
	}
	b.mu.Unlock()
	for _, st := range gone {
		st.mu.Lock()
		b.cleanUp(ctx, st)
		st.mu.Unlock()
	}
	return nil
}

// Ready checks the spec's bundles and registers the account, generating
// its key when the Secret is missing.
func (b *Backend) Ready(ctx context.Context, iss v1alpha1.GenericIssuer) (issuer.Status, error) {
	s, err := b.session(ctx, iss)
	var notReady *issuer.NotReadyError
	switch {
	case errors.As(err, &notReady):
		st := issuer.Status{Reason: notReady.Reason, Message: notReady.Message}
		// An ACME server coming back causes no event: look again after a
		// while.
		if notReady.Reason == ReasonAccountError {
			st.RecheckAt = b.clock.Now().Add(accountRecheck)
		}
		return st, nil
	case err != nil:
		return issuer.Status{}, err
	}
	// A dns01 solver that cannot write records would fail every order
	// that needs it.
	for _, solver := range iss.GetSpec().ACME.SolverList() {
		if solver.DNS01 == nil {
			continue
		}
		_, err := b.dnsClient(ctx, solver.DNS01)
		if errors.As(err, &notReady) {
			return issuer.Status{Reason: notReady.Reason, Message: notReady.Message}, nil
		}
		if err != nil {
			return issuer.Status{}, err
		}
	}
	longest, err := b.longestLifetime(ctx, iss)
	if err != nil {
		return issuer.Status{}, err
	}
	return issuer.Status{
		Ready:           true,
		Reason:          v1alpha1.ReasonReady,
		Message:         fmt.Sprintf("Registered with the ACME server %s as %s", iss.GetSpec().ACME.Server, s.accountURI),
		TrustBundle:     s.trustPEM,
		LongestLifetime: longest,
		// So the issuer's status records the lifetimes issued since, for a
		// controller that restarts before the next rotation.
		RecheckAt: b.clock.Now().Add(lifetimeRecheck),
	}, nil
}

// Sign advances the order for req and returns the chain once the ACME
// server has issued it; until then it returns *issuer.PendingError.
func (b *Backend) Sign(ctx context.Context, iss v1alpha1.GenericIssuer, req *issuer.Request) ([]byte, error) {
	if req.IsCA {
		return nil, issuer.Permanentf("ACME servers do not issue CA certificates")
	}
	if req.CSR == nil {
		// An order is finalized with the requester's own CSR, so that the
		// key never leaves where it was made.
		return nil, issuer.Permanentf("an ACME issuer signs certificate requests only, and this request has none")
	}
	names, err := DNSNames(req)
	if err != nil {
		return nil, &issuer.PermanentError{Err: err}
	}
	// A name no solver can prove control of fails before an order is made.
	if err := solverNames(iss.GetSpec().ACME.SolverList(), names); err != nil {
		return nil, err
	}
	s, err := b.session(ctx, iss)
	if err != nil {
		return nil, err
	}
	b.collectOrders(ctx)
	ctx, cancel := context.WithTimeout(ctx, signTimeout)
	defer cancel()
	return b.advance(ctx, iss, s, names, req)
}

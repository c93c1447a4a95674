package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/acme"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/pki"
)

const (
	// signTimeout bounds one Sign call: the ACME client retries server
	// errors until its context ends.
	signTimeout = 30 * time.Second
	// pollInterval is how soon Sign should be called again while the
	// server validates or issues.
	pollInterval = 2 * time.Second
	// servedWait bounds how long Sign waits for a published challenge to
	// reach the solver's cache before it accepts the challenge; after that
	// it tries again on the next call.
	servedWait = 2 * time.Second
	// finalizeWait bounds how long Sign waits for the certificate after
	// finalizing; a slower server is asked again on the next call.
	finalizeWait = 5 * time.Second
	// reachableWait is how long a challenge routed through an Ingress may
	// fail the controller's own check of its URL before the server is told
	// to validate anyway: some clusters cannot reach their own public
	// address (no hairpin NAT), and the server, which can, may succeed.
	reachableWait = time.Minute
	// orderIdle is how long an order, or the certificate it got, is kept
	// without Sign asking about it: its request was deleted, signed by
	// another replica, or has stored the certificate.
	orderIdle = time.Hour
	// defaultRateLimitWait is how long to wait after a rate limit without
	// a Retry-After.
	defaultRateLimitWait = time.Minute
)

// orderState is what Sign keeps between calls for one request. Backend.mu
// guards lastUsed; mu guards the rest.
type orderState struct {
	mu sync.Mutex
	// fingerprint is the session's: an unfinished order belongs to that
	// account.
	fingerprint string
	url         string
	// challenges are the published challenges, by authorization URL.
	challenges map[string]*presented
	// accepted are the challenges the server has been told to validate.
	accepted map[string]bool
	// issued is the chain the server issued (DER, as it sent it). It is
	// handed out again until the request stops asking: the caller may
	// fail to store it, and ordering again would get a duplicate
	// certificate, which public CAs rate-limit.
	issued   [][]byte
	lastUsed time.Time
}

// reset forgets an unfinished order of another account: it is not ours to
// use any more. Its challenges are left to the solver's sweep, as the
// server may still be validating one that a new order of the same account
// reuses.
func reset(st *orderState, fingerprint string) {
	st.fingerprint = fingerprint
	st.url = ""
	st.challenges = map[string]*presented{}
	st.accepted = map[string]bool{}
}

// presented is a challenge published for an order, and since when.
type presented struct {
	Challenge
	since time.Time
}

// orderKey identifies the order of one request: the certificate request
// the node signed is what the order is finalized with, so two requests
// with the same bytes share an order and its certificate.
func orderKey(iss v1alpha1.GenericIssuer, csrDER []byte) string {
	sum := sha256.Sum256(csrDER)
	return issuer.RefFor(iss).String() + "/" + hex.EncodeToString(sum[:])
}

// advance moves the request's order on as far as it can without waiting
// for the server, and returns the chain when it is issued.
func (b *Backend) advance(ctx context.Context, iss v1alpha1.GenericIssuer, s *session, names []string, req *issuer.Request) ([]byte, error) {
	key := orderKey(iss, req.CSR)
	b.mu.Lock()
	st, ok := b.orders[key]
	if !ok {
		st = &orderState{fingerprint: s.fingerprint, challenges: map[string]*presented{}, accepted: map[string]bool{}}
		b.orders[key] = st
	}
	st.lastUsed = b.clock.Now()
	b.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	// A certificate already issued is for the node's key whichever account
	// got it; checking it again below applies a trust bundle edited since.
	der := st.issued
	var err error
	if der == nil {
		if st.fingerprint != s.fingerprint {
			reset(st, s.fingerprint)
		}
		der, err = b.step(ctx, s, st, names, req, iss.GetSpec().ACME.Solver.HTTP01)
	}
	var chain []byte
	if err == nil {
		chain, err = verifyChain(der, req.PublicKey, s.trust, b.clock.Now())
	}
	switch {
	case err == nil:
		st.issued = der
		b.cleanUp(ctx, st)
	case isPermanent(err):
		b.mu.Lock()
		if b.orders[key] == st {
			delete(b.orders, key)
		}
		b.mu.Unlock()
		b.cleanUp(ctx, st)
	}
	return chain, err
}

func isPermanent(err error) bool {
	var permanent *issuer.PermanentError
	return errors.As(err, &permanent)
}

// step is one pass over the order; it returns the chain as the server
// issued it.
func (b *Backend) step(ctx context.Context, s *session, st *orderState, names []string, req *issuer.Request, http01 *v1alpha1.ACMEHTTP01Solver) ([][]byte, error) {
	var route *v1alpha1.ACMEHTTP01Ingress
	if http01 != nil {
		route = http01.Ingress
	}
	log := logr.FromContextOrDiscard(ctx)
	if st.url == "" {
		ids := make([]acme.AuthzID, len(names))
		for i, n := range names {
			ids[i] = acme.AuthzID{Type: "dns", Value: n}
		}
		order, err := s.client.AuthorizeOrder(ctx, ids)
		if err != nil {
			return nil, b.acmeError("creating the ACME order", err)
		}
		st.url = order.URI
		log.Info("created ACME order", logkeys.ACMEOrder, order.URI)
	}
	// Twice at most: once the last authorization turns valid the order is
	// ready to finalize at once.
	for range 2 {
		order, err := s.client.GetOrder(ctx, st.url)
		if err != nil {
			return nil, b.acmeError("reading the ACME order", err)
		}
		switch order.Status {
		case acme.StatusPending:
			valid, err := b.authorize(ctx, s, st, order, route)
			if err != nil {
				return nil, err
			}
			if !valid {
				return nil, pending("the ACME server is validating the challenges")
			}
		case acme.StatusReady:
			return b.finalize(ctx, s, order, req)
		case acme.StatusProcessing:
			return nil, pending("the ACME server is issuing the certificate")
		case acme.StatusValid:
			der, err := s.client.FetchCert(ctx, order.CertURL, true)
			if err != nil {
				return nil, b.acmeError("downloading the certificate", err)
			}
			return der, nil
		default:
			return nil, issuer.Permanentf("the ACME order is %s: %s", order.Status, problem(order.Error))
		}
	}
	return nil, pending("the ACME server is validating the challenges")
}

// authorize publishes and accepts the HTTP-01 challenge of every pending
// authorization of order, routed through an Ingress when route is set. It
// reports whether all are valid; a nil error with false means waiting for
// the server.
func (b *Backend) authorize(ctx context.Context, s *session, st *orderState, order *acme.Order, route *v1alpha1.ACMEHTTP01Ingress) (bool, error) {
	allValid := true
	for _, url := range order.AuthzURLs {
		authz, err := s.client.GetAuthorization(ctx, url)
		if err != nil {
			return false, b.acmeError("reading an ACME authorization", err)
		}
		name := authz.Identifier.Value
		switch authz.Status {
		case acme.StatusValid:
			if p, ok := st.challenges[url]; ok {
				if err := b.solver.CleanUp(ctx, p.Challenge); err != nil {
					return false, err
				}
				delete(st.challenges, url)
			}
			continue
		case acme.StatusPending:
		case acme.StatusInvalid:
			return false, issuer.Permanentf("the ACME server could not validate %s: %s", name, challengeProblem(authz))
		default:
			return false, issuer.Permanentf("the ACME authorization for %s is %s", name, authz.Status)
		}
		allValid = false
		chal := http01Challenge(authz)
		if chal == nil {
			return false, issuer.Permanentf("the ACME server offers no HTTP-01 challenge for %s", name)
		}
		if st.accepted[chal.URI] {
			continue
		}
		keyAuth, err := s.client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return false, fmt.Errorf("computing the key authorization: %w", err)
		}
		p, ok := st.challenges[url]
		if !ok {
			// Recorded even when already served, as when the server
			// reuses a pending authorization an earlier order published:
			// this order withdraws it once settled.
			p = &presented{Challenge: Challenge{DNSName: name, Token: chal.Token, KeyAuthorization: keyAuth, Ingress: route}, since: b.clock.Now()}
			st.challenges[url] = p
			served, err := b.solver.Served(ctx, chal.Token, keyAuth)
			if err != nil {
				return false, err
			}
			if !served || route != nil {
				if err := b.solver.Present(ctx, p.Challenge); err != nil {
					return false, err
				}
			}
		}
		// Told to validate before it is served, the server would fail the
		// authorization for good.
		if served, err := b.waitServed(ctx, chal.Token, keyAuth); err != nil || !served {
			return false, err
		}
		if route != nil {
			if err := b.solver.Reachable(ctx, p.Challenge); err != nil {
				if b.clock.Since(p.since) < reachableWait {
					return false, pending(fmt.Sprintf("waiting for the Ingress controller to route the HTTP-01 challenge for %s: %v", name, err))
				}
				logr.FromContextOrDiscard(ctx).Info("the HTTP-01 challenge does not answer through the Ingress controller here; asking the ACME server to validate anyway",
					logkeys.DNSName, name, logkeys.Reason, err.Error())
			}
		}
		if _, err := s.client.Accept(ctx, chal); err != nil {
			return false, b.acmeError("accepting the HTTP-01 challenge for "+name, err)
		}
		st.accepted[chal.URI] = true
		logr.FromContextOrDiscard(ctx).Info("accepted HTTP-01 challenge", logkeys.ACMEOrder, st.url, logkeys.DNSName, name)
	}
	return allValid, nil
}

// waitServed polls the solver until it serves keyAuth, for servedWait at
// most.
func (b *Backend) waitServed(ctx context.Context, token, keyAuth string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, servedWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		served, err := b.solver.Served(ctx, token, keyAuth)
		if err != nil || served {
			return served, err
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-tick.C:
		}
	}
}

// finalize asks the server to issue the certificate for the node's own
// request and waits a little for it.
func (b *Backend) finalize(ctx context.Context, s *session, order *acme.Order, req *issuer.Request) ([][]byte, error) {
	finalizeCtx, cancel := context.WithTimeout(ctx, finalizeWait)
	defer cancel()
	der, _, err := s.client.CreateOrderCert(finalizeCtx, order.FinalizeURL, req.CSR, true)
	if err != nil {
		if ctx.Err() == nil && finalizeCtx.Err() != nil {
			return nil, pending("the ACME server is issuing the certificate")
		}
		var orderErr *acme.OrderError
		if errors.As(err, &orderErr) {
			return nil, issuer.Permanentf("the ACME order is %s: %s", orderErr.Status, problem(orderErr.Problem))
		}
		return nil, b.acmeError("finalizing the ACME order", err)
	}
	return der, nil
}

// cleanUp withdraws the challenges st published. A failure is logged: the
// solver sweeps what is left.
func (b *Backend) cleanUp(ctx context.Context, st *orderState) {
	for url, p := range st.challenges {
		if err := b.solver.CleanUp(ctx, p.Challenge); err != nil {
			logr.FromContextOrDiscard(ctx).Error(err, "withdrawing an HTTP-01 challenge")
			continue
		}
		delete(st.challenges, url)
	}
}

// collectOrders forgets orders nobody asked about for orderIdle.
func (b *Backend) collectOrders(ctx context.Context) {
	cutoff := b.clock.Now().Add(-orderIdle)
	var idle []*orderState
	b.mu.Lock()
	for key, st := range b.orders {
		if st.lastUsed.Before(cutoff) {
			idle = append(idle, st)
			delete(b.orders, key)
		}
	}
	b.mu.Unlock()
	for _, st := range idle {
		st.mu.Lock()
		b.cleanUp(ctx, st)
		st.mu.Unlock()
	}
}

// verifyChain checks that the issued chain certifies the request's key pub
// and leads to a root of trust, and returns it as PEM without any root, as
// Backend.Sign promises.
func verifyChain(der [][]byte, pub crypto.PublicKey, trust *x509.CertPool, now time.Time) ([]byte, error) {
	if len(der) == 0 {
		return nil, issuer.Permanentf("the ACME server returned no certificate")
	}
	certs := make([]*x509.Certificate, len(der))
	for i, d := range der {
		cert, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, issuer.Permanentf("the ACME server returned an unparsable certificate: %v", err)
		}
		certs[i] = cert
	}
	leaf := certs[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, pub) {
		return nil, issuer.Permanentf("the ACME server returned a certificate for another key")
	}
	intermediates := x509.NewCertPool()
	var out bytes.Buffer
	for i, cert := range certs {
		if i > 0 {
			if pki.IsSelfSigned(cert) {
				continue
			}
			intermediates.AddCert(cert)
		}
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         trust,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, issuer.Permanentf("the certificate from the ACME server does not chain to spec.acme.trustBundle: %v", err)
	}
	return out.Bytes(), nil
}

func http01Challenge(authz *acme.Authorization) *acme.Challenge {
	for _, c := range authz.Challenges {
		if c.Type == "http-01" {
			return c
		}
	}
	return nil
}

// challengeProblem is what the server said about the failed challenge of
// authz.
func challengeProblem(authz *acme.Authorization) string {
	for _, c := range authz.Challenges {
		if c.Error != nil {
			return problem(c.Error)
		}
	}
	return "no reason given"
}

func problem(err error) string {
	var acmeErr *acme.Error
	switch {
	case err == nil:
		return "no reason given"
	case errors.As(err, &acmeErr) && acmeErr.Detail != "":
		return acmeErr.Detail
	}
	return err.Error()
}

func pending(msg string) error {
	return &issuer.PendingError{Err: errors.New(msg), RetryAfter: pollInterval}
}

// acmeError classifies an error of the ACME client: a rate limit means
// waiting, another refusal is permanent, anything else is worth a retry.
func (b *Backend) acmeError(what string, err error) error {
	var acmeErr *acme.Error
	if errors.As(err, &acmeErr) {
		switch {
		case acmeErr.StatusCode == http.StatusTooManyRequests:
			wait := defaultRateLimitWait
			if secs, convErr := strconv.Atoi(acmeErr.Header.Get("Retry-After")); convErr == nil && secs > 0 {
				wait = time.Duration(secs) * time.Second
			}
			return &issuer.PendingError{Err: fmt.Errorf("%s: rate limited: %s", what, problem(acmeErr)), RetryAfter: wait}
		case acmeErr.StatusCode >= 400 && acmeErr.StatusCode < 500:
			return issuer.Permanentf("%s: the ACME server refused: %s", what, problem(acmeErr))
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

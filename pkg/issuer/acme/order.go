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
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/acme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/acme/rfc2136"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/pki"
)

const (
	// signTimeout bounds one Sign call: the ACME client retries server
	// errors within it.
	signTimeout = 30 * time.Second
	// pollInterval is how soon Sign should be called again while the
	// server validates or issues, or a DNS record is on its way.
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
	// slowPollInterval is how soon a nameserver that has not answered a
	// TXT record for a minute is asked again.
	slowPollInterval = 15 * time.Second
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
	// retryAt is when the server said it may be asked again, after a rate
	// limit; it is not asked before.
	retryAt time.Time
	// certURL is where the server serves the certificate, and its
	// alternate chains.
	certURL string
	// issued is the chain the server issued (DER, as it sent it). It is
	// handed out again until the request stops asking: the caller may
	// fail to store it, and ordering again would get a duplicate
	// certificate, which public CAs rate-limit.
	issued   [][]byte
	lastUsed time.Time
	// records are the Order and Challenges that show the order.
	records records
}

// reset forgets an unfinished order of another account: it is not ours to
// use any more. Its TXT records are withdrawn; its HTTP-01 answers are
// left to the solver's sweep, as the server may still be validating one
// that a new order of the same account reuses.
func (b *Backend) reset(ctx context.Context, st *orderState, fingerprint string) {
	for url, p := range st.challenges {
		if p.dns != nil {
			b.withdrawOrKeep(ctx, p)
			delete(st.challenges, url)
		}
	}
	st.fingerprint = fingerprint
	st.url = ""
	st.challenges = map[string]*presented{}
	st.accepted = map[string]bool{}
}

// presented is a challenge answered for an order, one way or the other,
// and since when.
type presented struct {
	// http is an HTTP-01 answer, dns a DNS-01 one.
	http  *Challenge
	dns   *dnsAnswer
	since time.Time
}

// dnsAnswer is a TXT record written for a DNS-01 challenge.
type dnsAnswer struct {
	client      *rfc2136.Client
	fqdn, value string
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
	if st.records.order == nil {
		st.records.order = &v1alpha1.Order{}
		st.records.challenges = map[string]*challengeRecord{}
	}
	if wait := later(st.retryAt, s.retryAt()).Sub(b.clock.Now()); wait > 0 {
		return nil, &issuer.PendingError{Err: &rateLimitedError{msg: "the ACME server asked to wait after a rate limit"}, RetryAfter: wait}
	}
	// A certificate already issued is for the node's key whichever account
	// got it; checking it again below applies a trust bundle edited since.
	der := st.issued
	var err error
	if der == nil {
		if st.fingerprint != s.fingerprint {
			b.reset(ctx, st, s.fingerprint)
		}
		b.createOrderRecord(ctx, st, iss, req, names)
		der, err = b.step(ctx, iss, s, st, names, req)
	}
	var chain []byte
	var leaf *x509.Certificate
	if err == nil {
		der, chain, leaf, err = b.pickChain(ctx, iss, s, st, der, req.PublicKey)
	}
	switch {
	case err == nil:
		st.issued = der
		b.cleanUp(ctx, st)
		for _, rec := range st.records.challenges {
			rec.challenge.Status = v1alpha1.ChallengeStatus{State: v1alpha1.ACMEStateValid}
		}
		b.observeLifetime(iss, leaf)
		st.records.order.Status.State = v1alpha1.ACMEStateValid
		st.records.order.Status.Reason, st.records.order.Status.Message = "", ""
		st.records.order.Status.NotBefore = &metav1.Time{Time: leaf.NotBefore}
		st.records.order.Status.NotAfter = &metav1.Time{Time: leaf.NotAfter}
	case isPermanent(err):
		b.mu.Lock()
		if b.orders[key] == st {
			delete(b.orders, key)
		}
		b.mu.Unlock()
		b.cleanUp(ctx, st)
		st.records.order.Status.State = v1alpha1.ACMEStateInvalid
		st.records.order.Status.Reason, st.records.order.Status.Message = "Failed", err.Error()
	default:
		var p *issuer.PendingError
		if errors.As(err, &p) {
			st.records.order.Status.Reason, st.records.order.Status.Message = pendingReason(p), p.Err.Error()
		} else {
			st.records.order.Status.Reason, st.records.order.Status.Message = "Error", err.Error()
		}
	}
	st.records.order.Status.RetryAfter = nil
	if retryAt := later(st.retryAt, s.retryAt()); err != nil && retryAt.After(b.clock.Now()) {
		st.records.order.Status.RetryAfter = &metav1.Time{Time: retryAt}
	}
	b.flushRecords(ctx, st)
	return chain, err
}

// pendingReason is the Order's reason while it waits.
func pendingReason(p *issuer.PendingError) string {
	var limited *rateLimitedError
	if errors.As(p.Err, &limited) {
		return "RateLimited"
	}
	return "Waiting"
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func isPermanent(err error) bool {
	var permanent *issuer.PermanentError
	return errors.As(err, &permanent)
}

// step is one pass over the order; it returns the chain as the server
// issued it.
func (b *Backend) step(ctx context.Context, iss v1alpha1.GenericIssuer, s *session, st *orderState, names []string, req *issuer.Request) ([][]byte, error) {
	log := logr.FromContextOrDiscard(ctx)
	if st.url == "" {
		order, err := b.newOrder(ctx, s, names, req.Duration)
		if err != nil {
			err = b.acmeError(st, "creating the ACME order", err)
			var limited *rateLimitedError
			if errors.As(err, &limited) {
				// New orders are limited per account: no request of
				// this issuer asks for one before the time given.
				s.notBefore.Store(st.retryAt.UnixNano())
			}
			return nil, err
		}
		st.url = order.URI
		st.records.order.Status.URL = order.URI
		log.Info("created ACME order", logkeys.ACMEOrder, order.URI)
	}
	// Twice at most: once the last authorization turns valid the order is
	// ready to finalize at once.
	for range 2 {
		order, err := s.client.GetOrder(ctx, st.url)
		if err != nil {
			return nil, b.acmeError(st, "reading the ACME order", err)
		}
		st.records.order.Status.State = order.Status
		switch order.Status {
		case acme.StatusPending:
			valid, err := b.authorize(ctx, iss, s, st, order)
			if err != nil {
				return nil, err
			}
			if !valid {
				return nil, pending("the ACME server is validating the challenges")
			}
		case acme.StatusReady:
			return b.finalize(ctx, s, st, order, req)
		case acme.StatusProcessing:
			return nil, pending("the ACME server is issuing the certificate")
		case acme.StatusValid:
			der, err := s.client.FetchCert(ctx, order.CertURL, true)
			if err != nil {
				return nil, b.acmeError(st, "downloading the certificate", err)
			}
			st.certURL = order.CertURL
			return der, nil
		default:
			if why := b.failedAuthorizations(ctx, s, st, order); why != "" {
				return nil, issuer.Permanentf("%s", why)
			}
			return nil, issuer.Permanentf("the ACME order is %s: %s", order.Status, problem(order.Error))
		}
	}
	return nil, pending("the ACME server is validating the challenges")
}

// failedAuthorizations says, in the server's words, why the authorizations
// of a failed order failed, and records it in their Challenges; "" when
// none did.
func (b *Backend) failedAuthorizations(ctx context.Context, s *session, st *orderState, order *acme.Order) string {
	var why []string
	for _, url := range order.AuthzURLs {
		authz, err := s.client.GetAuthorization(ctx, url)
		if err != nil || authz.Status != acme.StatusInvalid {
			continue
		}
		name := authz.Identifier.Value
		if authz.Wildcard {
			name = "*." + name
		}
		msg := challengeProblem(authz)
		b.challengeState(st, url, v1alpha1.ACMEStateInvalid, "ValidationFailed", msg)
		why = append(why, fmt.Sprintf("the ACME server could not validate %s: %s", name, msg))
	}
	return strings.Join(why, "; ")
}

// newOrder asks for an order of names, with the lifetime asked for as its
// notAfter. A server that will not take a notAfter (as Let's Encrypt
// does not) refuses the order; it is asked again without, and is not
// asked with one again.
func (b *Backend) newOrder(ctx context.Context, s *session, names []string, lifetime time.Duration) (*acme.Order, error) {
	ids := make([]acme.AuthzID, len(names))
	for i, n := range names {
		ids[i] = acme.AuthzID{Type: "dns", Value: n}
	}
	if lifetime <= 0 || s.refusesNotAfter.Load() {
		return s.client.AuthorizeOrder(ctx, ids)
	}
	order, err := s.client.AuthorizeOrder(ctx, ids, acme.WithOrderNotAfter(b.clock.Now().Add(lifetime)))
	if !refusesLifetime(err) {
		return order, err
	}
	order, err = s.client.AuthorizeOrder(ctx, ids)
	if err == nil {
		s.refusesNotAfter.Store(true)
		logr.FromContextOrDiscard(ctx).Info("the ACME server refuses orders with a lifetime; ordering without one from now on")
	}
	return order, err
}

// refusesLifetime reports whether err is a server's refusal of an order
// for its notAfter: a malformed request, or one whose problem names the
// field (servers word it differently). Any other refusal (a rejected
// identifier, CAA) is about the names, and asking without a lifetime would
// not help.
func refusesLifetime(err error) bool {
	var acmeErr *acme.Error
	if !errors.As(err, &acmeErr) || acmeErr.StatusCode < 400 || acmeErr.StatusCode >= 500 {
		return false
	}
	detail := strings.ToLower(acmeErr.Detail)
	return strings.HasSuffix(acmeErr.ProblemType, ":malformed") || strings.Contains(detail, "notafter") || strings.Contains(detail, "not after") || strings.Contains(detail, "notbefore")
}

// authorize answers and accepts the challenge of every pending
// authorization of order, each with the solver that selects its name. It
// reports whether all are valid; a nil error with false means waiting for
// the server or for an answer to be served.
func (b *Backend) authorize(ctx context.Context, iss v1alpha1.GenericIssuer, s *session, st *orderState, order *acme.Order) (bool, error) {
	allValid := true
	var waiting error
	for _, url := range order.AuthzURLs {
		authz, err := s.client.GetAuthorization(ctx, url)
		if err != nil {
			return false, b.acmeError(st, "reading an ACME authorization", err)
		}
		name := authz.Identifier.Value
		if authz.Wildcard {
			name = "*." + name
		}
		switch authz.Status {
		case acme.StatusValid:
			if _, ok := st.records.challenges[url]; !ok {
				// Valid already: the server reused an earlier
				// authorization of the account.
				if c := validChallenge(authz); c != nil {
					b.createChallengeRecord(ctx, st, url, name, c.Type, c.URI, "validated for an earlier order")
				}
			}
			b.challengeState(st, url, v1alpha1.ACMEStateValid, "", "")
			if p, ok := st.challenges[url]; ok {
				// A failed withdrawal does not hold the order up: it is
				// tried again later.
				b.withdrawOrKeep(ctx, p)
				delete(st.challenges, url)
			}
			continue
		case acme.StatusPending:
		case acme.StatusInvalid:
			msg := challengeProblem(authz)
			b.challengeState(st, url, v1alpha1.ACMEStateInvalid, "ValidationFailed", msg)
			return false, issuer.Permanentf("the ACME server could not validate %s: %s", name, msg)
		default:
			return false, issuer.Permanentf("the ACME authorization for %s is %s", name, authz.Status)
		}
		allValid = false
		solver, err := solverFor(iss.GetSpec().ACME.SolverList(), name)
		if err != nil {
			return false, err
		}
		typ := challengeType(solver)
		chal := challengeOf(authz, typ)
		if chal == nil {
			return false, issuer.Permanentf("the ACME server offers no %s challenge for %s", typ, name)
		}
		if st.accepted[chal.URI] {
			continue
		}
		var ready bool
		if typ == typeDNS01 {
			ready, err = b.answerDNS01(ctx, s, st, url, name, chal, solver.DNS01)
		} else {
			ready, err = b.answerHTTP01(ctx, s, st, url, name, chal, solver.HTTP01)
		}
		if err != nil {
			var p *issuer.PendingError
			if !errors.As(err, &p) {
				return false, err
			}
			// Another name may be ready to accept meanwhile.
			waiting = err
			continue
		}
		if !ready {
			continue
		}
		if _, err := s.client.Accept(ctx, chal); err != nil {
			return false, b.acmeError(st, "accepting the "+typ+" challenge for "+name, err)
		}
		st.accepted[chal.URI] = true
		b.challengeState(st, url, v1alpha1.ACMEStateProcessing, "", "")
		logr.FromContextOrDiscard(ctx).Info("accepted ACME challenge", logkeys.ACMEOrder, st.url, logkeys.DNSName, name, logkeys.Type, typ)
	}
	if waiting != nil && !allValid {
		return false, waiting
	}
	return allValid, nil
}

// answerHTTP01 publishes the key authorization of chal and reports whether
// it is served, through an Ingress when http01 asks for one. The server
// must not be told to validate before: it would fail the authorization for
// good.
func (b *Backend) answerHTTP01(ctx context.Context, s *session, st *orderState, url, name string, chal *acme.Challenge, http01 *v1alpha1.ACMEHTTP01Solver) (bool, error) {
	keyAuth, err := s.client.HTTP01ChallengeResponse(chal.Token)
	if err != nil {
		return false, fmt.Errorf("computing the key authorization: %w", err)
	}
	var route *v1alpha1.ACMEHTTP01Ingress
	if http01 != nil {
		route = http01.Ingress
	}
	p, ok := st.challenges[url]
	if !ok {
		// Recorded even when already served, as when the server reuses a
		// pending authorization an earlier order published: this order
		// withdraws it once settled.
		p = &presented{http: &Challenge{DNSName: name, Token: chal.Token, KeyAuthorization: keyAuth, Ingress: route}, since: b.clock.Now()}
		st.challenges[url] = p
		b.createChallengeRecord(ctx, st, url, name, typeHTTP01, chal.URI, "http://"+name+s.client.HTTP01ChallengePath(chal.Token))
		served, err := b.solver.Served(ctx, chal.Token, keyAuth)
		if err != nil {
			return false, err
		}
		if !served || route != nil {
			if err := b.solver.Present(ctx, *p.http); err != nil {
				return false, err
			}
		}
		b.challengeState(st, url, v1alpha1.ACMEStatePresented, "", "")
	}
	if served, err := b.waitServed(ctx, chal.Token, keyAuth); err != nil || !served {
		return false, err
	}
	if route != nil {
		if err := b.solver.Reachable(ctx, *p.http); err != nil {
			if b.clock.Since(p.since) < reachableWait {
				msg := fmt.Sprintf("waiting for the Ingress controller to route the HTTP-01 challenge for %s: %v", name, err)
				b.challengeState(st, url, v1alpha1.ACMEStatePresented, "NotReachable", msg)
				return false, pending(msg)
			}
			logr.FromContextOrDiscard(ctx).Info("the HTTP-01 challenge does not answer through the Ingress controller here; asking the ACME server to validate anyway",
				logkeys.DNSName, name, logkeys.Reason, err.Error())
		}
	}
	return true, nil
}

// answerDNS01 writes the TXT record of chal and reports whether the
// nameserver answers it: a server told to validate before may look at a
// secondary that has not caught up, and fail the authorization for good.
func (b *Backend) answerDNS01(ctx context.Context, s *session, st *orderState, url, name string, chal *acme.Challenge, dns01 *v1alpha1.ACMEDNS01Solver) (bool, error) {
	p, ok := st.challenges[url]
	if !ok {
		client, err := b.dnsClient(ctx, dns01)
		if err != nil {
			return false, err
		}
		value, err := s.client.DNS01ChallengeRecord(chal.Token)
		if err != nil {
			return false, fmt.Errorf("computing the DNS-01 record: %w", err)
		}
		answer := &dnsAnswer{client: client, fqdn: rfc2136.ChallengeRecord(name), value: value}
		b.createChallengeRecord(ctx, st, url, name, typeDNS01, chal.URI, fmt.Sprintf("TXT %s at %s", answer.fqdn, dns01.RFC2136.Nameserver))
		if err := client.Present(ctx, answer.fqdn, value); err != nil {
			msg := fmt.Sprintf("writing the TXT record %s: %v", answer.fqdn, err)
			var permanent *rfc2136.PermanentError
			if errors.As(err, &permanent) {
				b.challengeState(st, url, v1alpha1.ACMEStateInvalid, "UpdateRefused", msg)
				return false, issuer.Permanentf("%s", msg)
			}
			b.challengeState(st, url, v1alpha1.ACMEStatePending, "UpdateFailed", msg)
			return false, errors.New(msg)
		}
		p = &presented{dns: answer, since: b.clock.Now()}
		st.challenges[url] = p
		b.challengeState(st, url, v1alpha1.ACMEStatePresented, "", "")
	}
	answered, err := p.dns.client.Answered(ctx, p.dns.fqdn, p.dns.value)
	var permanent *rfc2136.PermanentError
	if errors.As(err, &permanent) {
		msg := fmt.Sprintf("asking %s for the TXT record %s: %v", dns01.RFC2136.Nameserver, p.dns.fqdn, err)
		b.challengeState(st, url, v1alpha1.ACMEStateInvalid, "QueryRefused", msg)
		return false, issuer.Permanentf("%s", msg)
	}
	if err == nil && !answered {
		err = errors.New("it does not answer the record yet")
	}
	if err != nil {
		msg := fmt.Sprintf("waiting for %s to answer the TXT record %s: %v", dns01.RFC2136.Nameserver, p.dns.fqdn, err)
		b.challengeState(st, url, v1alpha1.ACMEStatePresented, "NotAnswered", msg)
		// A nameserver that takes its time is asked less often.
		wait := pollInterval
		if b.clock.Since(p.since) > time.Minute {
			wait = slowPollInterval
		}
		return false, &issuer.PendingError{Err: errors.New(msg), RetryAfter: wait}
	}
	return true, nil
}

// withdraw removes what was published for a challenge.
func (b *Backend) withdraw(ctx context.Context, p *presented) error {
	if p.dns != nil {
		return p.dns.client.CleanUp(ctx, p.dns.fqdn, p.dns.value)
	}
	return b.solver.CleanUp(ctx, *p.http)
}

// withdrawOrKeep withdraws p, or keeps it to be withdrawn later (see
// Start) when that fails: a TXT record left behind would stay for good.
func (b *Backend) withdrawOrKeep(ctx context.Context, p *presented) {
	if err := b.withdraw(ctx, p); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "withdrawing an ACME challenge; trying again later")
		b.mu.Lock()
		b.leftovers = append(b.leftovers, p)
		b.mu.Unlock()
	}
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
func (b *Backend) finalize(ctx context.Context, s *session, st *orderState, order *acme.Order, req *issuer.Request) ([][]byte, error) {
	finalizeCtx, cancel := context.WithTimeout(ctx, finalizeWait)
	defer cancel()
	der, certURL, err := s.client.CreateOrderCert(finalizeCtx, order.FinalizeURL, req.CSR, true)
	if err != nil {
		if ctx.Err() == nil && finalizeCtx.Err() != nil {
			return nil, pending("the ACME server is issuing the certificate")
		}
		var orderErr *acme.OrderError
		if errors.As(err, &orderErr) {
			return nil, issuer.Permanentf("the ACME order is %s: %s", orderErr.Status, problem(orderErr.Problem))
		}
		return nil, b.acmeError(st, "finalizing the ACME order", err)
	}
	st.certURL = certURL
	return der, nil
}

// cleanUp withdraws the challenges st published, now or later.
func (b *Backend) cleanUp(ctx context.Context, st *orderState) {
	for url, p := range st.challenges {
		b.withdrawOrKeep(ctx, p)
		delete(st.challenges, url)
	}
}

// validChallenge is the challenge that validated authz.
func validChallenge(authz *acme.Authorization) *acme.Challenge {
	for _, c := range authz.Challenges {
		if c.Status == acme.StatusValid {
			return c
		}
	}
	return nil
}

// collectOrders forgets orders nobody asked about for orderIdle, and
// withdraws the challenges whose withdrawal failed before.
func (b *Backend) collectOrders(ctx context.Context) {
	b.mu.Lock()
	leftovers := b.leftovers
	b.leftovers = nil
	b.mu.Unlock()
	for _, p := range leftovers {
		b.withdrawOrKeep(ctx, p)
	}

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
// Backend.Sign promises, with its leaf.
func verifyChain(der [][]byte, pub crypto.PublicKey, trust *x509.CertPool, now time.Time) ([]byte, *x509.Certificate, error) {
	if len(der) == 0 {
		return nil, nil, issuer.Permanentf("the ACME server returned no certificate")
	}
	certs := make([]*x509.Certificate, len(der))
	for i, d := range der {
		cert, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, nil, issuer.Permanentf("the ACME server returned an unparsable certificate: %v", err)
		}
		certs[i] = cert
	}
	leaf := certs[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, pub) {
		return nil, nil, issuer.Permanentf("the ACME server returned a certificate for another key")
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
		return nil, nil, issuer.Permanentf("the certificate from the ACME server does not chain to spec.acme.trustBundle: %v", err)
	}
	return out.Bytes(), leaf, nil
}

// challengeOf is the challenge of type typ authz offers.
func challengeOf(authz *acme.Authorization, typ string) *acme.Challenge {
	for _, c := range authz.Challenges {
		if c.Type == typ {
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

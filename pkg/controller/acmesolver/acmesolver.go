// Package acmesolver answers ACME HTTP-01 challenges from every controller
// replica. Only the leader runs orders, but the solver Service sends the
// ACME server's validation request to any replica, so the leader publishes
// each pending key authorization in a ConfigMap in the controller's
// namespace, every replica serves what its cache holds (asking the API
// server when its cache has not caught up yet), and the leader deletes the
// ConfigMap once the authorization is settled. For an issuer that asks for
// it, the leader also keeps an Ingress of the same name that routes the
// challenge's URL through an Ingress controller to the solver Service.
package acmesolver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/certmint/certmint/pkg/issuer/acme"
	"github.com/certmint/certmint/pkg/logkeys"
)

// LabelChallenge marks the ConfigMaps that hold key authorizations, and
// the Ingresses that route them; the controller caches only those
// ConfigMaps.
const LabelChallenge = "certmint.io/acme-http01-challenge"

// Keys of a challenge ConfigMap.
const (
	KeyToken            = "token"
	KeyKeyAuthorization = "keyAuthorization"
)

// PathPrefix is where ACME servers ask for HTTP-01 key authorizations.
const PathPrefix = "/.well-known/acme-challenge/"

// DefaultService is the solver Service of the deploy manifests, and
// ServicePort the name of its port.
const (
	DefaultService = "certmint-acme-http01"
	ServicePort    = "http"
)

// ObjectName is the name of the ConfigMap holding the key authorization of
// token, and of the Ingress routing it. Tokens are mixed-case base64url,
// which object names cannot be.
func ObjectName(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "certmint-acme-http01-" + hex.EncodeToString(sum[:12])
}

// CacheConfig restricts the manager's ConfigMap cache to challenge objects
// in namespace.
func CacheConfig(namespace string) cache.ByObject {
	return cache.ByObject{
		Namespaces: map[string]cache.Config{namespace: {}},
		Label:      labels.SelectorFromSet(labels.Set{LabelChallenge: "true"}),
	}
}

// ChallengesOptions configures Challenges.
type ChallengesOptions struct {
	// Client writes challenge objects. Required.
	Client client.Client
	// Reader reads them; it must be a cache configured with CacheConfig:
	// Served is true once that cache, the one every replica's Server
	// reads, has the object. Required.
	Reader client.Reader
	// Namespace holds the challenge ConfigMaps. Required.
	Namespace string
	// Service is the solver Service in front of the controller's pods,
	// which challenge Ingresses route to from its namespace; its name
	// defaults to DefaultService and its namespace to Namespace.
	Service types.NamespacedName
	// HTTPClient checks that a routed challenge is answered; it defaults
	// to a client that gives up after selfCheckTimeout.
	HTTPClient *http.Client
}

// selfCheckTimeout bounds one check that a routed challenge is answered.
const selfCheckTimeout = 5 * time.Second

// Challenges publishes and withdraws key authorizations.
type Challenges struct {
	opts ChallengesOptions
}

var _ acme.Solver = (*Challenges)(nil)

// NewChallenges returns Challenges.
func NewChallenges(opts ChallengesOptions) (*Challenges, error) {
	if opts.Client == nil || opts.Reader == nil || opts.Namespace == "" {
		return nil, errors.New("acmesolver: a client, a reader and a namespace are required")
	}
	if opts.Service.Name == "" {
		opts.Service.Name = DefaultService
	}
	if opts.Service.Namespace == "" {
		opts.Service.Namespace = opts.Namespace
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: selfCheckTimeout}
	}
	return &Challenges{opts: opts}, nil
}

// Present publishes the key authorization of ch and, when ch asks for it,
// the Ingress routing it. Publishing the same challenge again is not an
// error.
func (c *Challenges) Present(ctx context.Context, ch acme.Challenge) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: c.objectMeta(ch.Token),
		Data:       map[string]string{KeyToken: ch.Token, KeyKeyAuthorization: ch.KeyAuthorization},
	}
	if err := c.opts.Client.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("publishing HTTP-01 challenge: %w", err)
	}
	if ch.Ingress == nil {
		return nil
	}
	if err := c.opts.Client.Create(ctx, c.route(ch)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the Ingress routing the HTTP-01 challenge for %s: %w", ch.DNSName, err)
	}
	return nil
}

func (c *Challenges) objectMeta(token string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: c.opts.Namespace,
		Name:      ObjectName(token),
		Labels:    map[string]string{LabelChallenge: "true"},
	}
}

// routeMeta is the metadata of the Ingress routing token, which lives
// next to the Service it routes to.
func (c *Challenges) routeMeta(token string) metav1.ObjectMeta {
	meta := c.objectMeta(token)
	meta.Namespace = c.opts.Service.Namespace
	return meta
}

// route is an Ingress that sends exactly the URL of ch, and nothing else
// of its host, to the solver Service: every Ingress controller prefers an
// exact path over the prefixes of the host's own Ingresses, as the API
// requires.
func (c *Challenges) route(ch acme.Challenge) *networkingv1.Ingress {
	exact := networkingv1.PathTypeExact
	return &networkingv1.Ingress{
		ObjectMeta: c.routeMeta(ch.Token),
		Spec: networkingv1.IngressSpec{
			IngressClassName: ch.Ingress.IngressClassName,
			Rules: []networkingv1.IngressRule{{
				Host: ch.DNSName,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     PathPrefix + ch.Token,
						PathType: &exact,
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: c.opts.Service.Name,
							Port: networkingv1.ServiceBackendPort{Name: ServicePort},
						}},
					}},
				}},
			}},
		},
	}
}

// Served reports whether the cache every replica answers from holds
// keyAuth for token.
func (c *Challenges) Served(ctx context.Context, token, keyAuth string) (bool, error) {
	got, err := lookup(ctx, c.opts.Reader, c.opts.Namespace, token)
	if err != nil {
		return false, err
	}
	return got == keyAuth, nil
}

// Reachable checks that http://<name>/.well-known/acme-challenge/<token>
// answers ch's key authorization, as the ACME server will ask for it: an
// Ingress controller loads a new route a moment after it is created, and
// an ACME server that gets an answer from the host's own backend instead
// fails the authorization for good.
func (c *Challenges) Reachable(ctx context.Context, ch acme.Challenge) error {
	url := "http://" + ch.DNSName + PathPrefix + ch.Token
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	// A key authorization is a token and a thumbprint: well under 1 KiB.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s answered %s", url, resp.Status)
	case strings.TrimSpace(string(body)) != ch.KeyAuthorization:
		return fmt.Errorf("GET %s answered something other than the key authorization", url)
	}
	return nil
}

// CleanUp withdraws the answer of ch and the Ingress routing it; what is
// missing is not an error.
func (c *Challenges) CleanUp(ctx context.Context, ch acme.Challenge) error {
	if ch.Ingress != nil {
		if err := c.opts.Client.Delete(ctx, &networkingv1.Ingress{ObjectMeta: c.routeMeta(ch.Token)}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing the Ingress routing the HTTP-01 challenge for %s: %w", ch.DNSName, err)
		}
	}
	if err := c.opts.Client.Delete(ctx, &corev1.ConfigMap{ObjectMeta: c.objectMeta(ch.Token)}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing HTTP-01 challenge: %w", err)
	}
	return nil
}

// Sweep deletes challenge objects created before cutoff: what a leader
// that lost its lease mid-order left behind. Validation takes seconds, so
// an old challenge is nobody's.
func (c *Challenges) Sweep(ctx context.Context, cutoff time.Time) error {
	var configMaps corev1.ConfigMapList
	if err := c.list(ctx, &configMaps, c.opts.Namespace); err != nil {
		return fmt.Errorf("listing HTTP-01 challenges: %w", err)
	}
	var ingresses networkingv1.IngressList
	if err := c.list(ctx, &ingresses, c.opts.Service.Namespace); err != nil {
		return fmt.Errorf("listing the Ingresses of HTTP-01 challenges: %w", err)
	}
	var stale []client.Object
	for i := range configMaps.Items {
		stale = append(stale, &configMaps.Items[i])
	}
	for i := range ingresses.Items {
		stale = append(stale, &ingresses.Items[i])
	}
	for _, o := range stale {
		if !o.GetCreationTimestamp().Time.Before(cutoff) {
			continue
		}
		uid := o.GetUID()
		if err := c.opts.Client.Delete(ctx, o, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing stale HTTP-01 challenge object %s: %w", o.GetName(), err)
		}
	}
	return nil
}

func (c *Challenges) list(ctx context.Context, list client.ObjectList, namespace string) error {
	return c.opts.Reader.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{LabelChallenge: "true"})
}

// lookup returns the key authorization published for token, or "" when
// there is none.
func lookup(ctx context.Context, reader client.Reader, namespace, token string) (string, error) {
	var cm corev1.ConfigMap
	err := reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ObjectName(token)}, &cm)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading HTTP-01 challenge: %w", err)
	}
	// The name is a hash: check the token itself. An uncached read sees
	// ConfigMaps the leader did not publish too: check the label.
	if cm.Labels[LabelChallenge] != "true" || cm.Data[KeyToken] != token {
		return "", nil
	}
	return cm.Data[KeyKeyAuthorization], nil
}

// Uncached reads on a cache miss are limited: the challenge path is open
// to anyone, while a validation reaching a replica before its watch
// delivered the challenge is rare, and ACME servers ask a few times. Each
// source has a small budget of its own, so that one client asking for
// random tokens cannot spend the reads a validation needs; all together
// have a larger one, which guards the API server.
const (
	uncachedReadsPerSecond = 20
	uncachedReadBurst      = 40
	sourceReadsPerSecond   = 1
	sourceReadBurst        = 3
	// maxSources bounds the memory the per-source budgets take; past it
	// they start afresh.
	maxSources = 4096
)

// readBudget limits uncached reads per source and in all.
type readBudget struct {
	all            *rate.Limiter
	trustedProxies []netip.Prefix
	mu             sync.Mutex
	sources        map[string]*rate.Limiter
}

func newReadBudget(trustedProxies []netip.Prefix) *readBudget {
	return &readBudget{
		all:            rate.NewLimiter(uncachedReadsPerSecond, uncachedReadBurst),
		trustedProxies: trustedProxies,
		sources:        map[string]*rate.Limiter{},
	}
}

// allow reports whether the client of r may have an uncached read now. A
// source's refusal spends nothing of the budget of all.
func (b *readBudget) allow(r *http.Request) bool {
	source := b.source(r)
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.limiter(source)
	if l == nil || l.Tokens() < 1 || !b.all.Allow() {
		return false
	}
	return l.Allow()
}

// limiter is the budget of source; nil when too many sources have one
// that is not idle to make another. b.mu is held.
func (b *readBudget) limiter(source string) *rate.Limiter {
	if l, ok := b.sources[source]; ok {
		return l
	}
	if len(b.sources) >= maxSources {
		// A full budget is as good as a new one: forget those.
		for k, l := range b.sources {
			if l.Tokens() >= sourceReadBurst {
				delete(b.sources, k)
			}
		}
		if len(b.sources) >= maxSources {
			return nil
		}
	}
	l := rate.NewLimiter(sourceReadsPerSecond, sourceReadBurst)
	b.sources[source] = l
	return l
}

// source is who asks: the peer's address or, when the peer is a trusted
// proxy (an Ingress controller, a load balancer), the address it added
// last to X-Forwarded-For. Anyone else's X-Forwarded-For is the client's
// own choice, and ignored.
func (b *readBudget) source(r *http.Request) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	addr := peer.Addr().Unmap()
	forwarded := r.Header.Values("X-Forwarded-For")
	if len(forwarded) == 0 || !slices.ContainsFunc(b.trustedProxies, func(p netip.Prefix) bool { return p.Contains(addr) }) {
		return addr.String()
	}
	hops := strings.Split(forwarded[len(forwarded)-1], ",")
	return strings.TrimSpace(hops[len(hops)-1])
}

// Handler answers GET /.well-known/acme-challenge/<token> with the key
// authorization published for token, and 404 otherwise. It looks in cached
// first and, when the challenge is not there, in apiReader: the leader
// waits for its own cache only, so a validation may reach a replica whose
// watch has not delivered the challenge yet, and a 404 fails the
// authorization for good.
//
// trustedProxies are the addresses of the proxies in front of the solver
// Service whose X-Forwarded-For names the client, for the per-source
// budget of uncached reads.
func Handler(cached, apiReader client.Reader, namespace string, trustedProxies []netip.Prefix, log logr.Logger) http.Handler {
	budget := newReadBudget(trustedProxies)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
		if !ok || token == "" || strings.Contains(token, "/") {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		keyAuth, err := lookup(r.Context(), cached, namespace, token)
		if err == nil && keyAuth == "" && budget.allow(r) {
			keyAuth, err = lookup(r.Context(), apiReader, namespace, token)
		}
		if err != nil {
			log.Error(err, "answering HTTP-01 challenge")
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		if keyAuth == "" {
			log.V(1).Info("HTTP-01 challenge not found", logkeys.Endpoint, r.URL.Path)
			http.NotFound(w, r)
			return
		}
		log.V(1).Info("answered HTTP-01 challenge", logkeys.Endpoint, r.URL.Path)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(keyAuth))
	})
}

// ServerOptions configures a Server.
type ServerOptions struct {
	// Addr is the address to listen on. Required.
	Addr string
	// Cache is the manager's cache, configured with CacheConfig. Required.
	Cache cache.Cache
	// APIReader reads a challenge the cache does not hold yet, typically
	// the manager's uncached reader, which needs get on ConfigMaps in
	// Namespace. Required.
	APIReader client.Reader
	// Namespace holds the challenge objects. Required.
	Namespace string
	// TrustedProxies are the proxies in front of the solver Service (the
	// Ingress controllers' pods) whose X-Forwarded-For names the client;
	// none by default.
	TrustedProxies []netip.Prefix
	// Logger defaults to a logger that discards.
	Logger logr.Logger
}

// Server serves HTTP-01 challenges on every replica, leader or not.
type Server struct {
	opts      ServerOptions
	listening atomic.Bool
}

var (
	_ manager.Runnable               = (*Server)(nil)
	_ manager.LeaderElectionRunnable = (*Server)(nil)
)

// NewServer returns a Server to add to the manager.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Addr == "" || opts.Cache == nil || opts.APIReader == nil || opts.Namespace == "" {
		return nil, errors.New("acmesolver: an address, a cache, an API reader and a namespace are required")
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return &Server{opts: opts}, nil
}

// NeedLeaderElection is false: standbys answer challenges too.
func (s *Server) NeedLeaderElection() bool { return false }

// Check is a readiness check: the Service must not send validation
// requests to a replica that cannot answer them yet.
func (s *Server) Check(*http.Request) error {
	if !s.listening.Load() {
		return errors.New("not serving HTTP-01 challenges yet")
	}
	return nil
}

// Start serves until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	// Start the informer now rather than on the first challenge, so a
	// validation request never waits for a cold cache.
	if _, err := s.opts.Cache.GetInformer(ctx, &corev1.ConfigMap{}); err != nil {
		return fmt.Errorf("watching HTTP-01 challenges: %w", err)
	}
	l, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening for HTTP-01 challenges: %w", err)
	}
	srv := &http.Server{
		Handler:           Handler(s.opts.Cache, s.opts.APIReader, s.opts.Namespace, s.opts.TrustedProxies, s.opts.Logger),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	s.listening.Store(true)
	defer s.listening.Store(false)
	s.opts.Logger.Info("serving ACME HTTP-01 challenges", logkeys.Endpoint, l.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP-01 challenges: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// Janitor sweeps stale challenge objects on the leader.
type Janitor struct {
	challenges *Challenges
	clock      clock.WithTicker
	maxAge     time.Duration
	log        logr.Logger
}

var _ manager.Runnable = (*Janitor)(nil)

// DefaultMaxAge is how old a challenge object gets before Janitor removes
// it. ACME servers validate within seconds of the challenge being
// accepted; an hour leaves room for slow ones.
const DefaultMaxAge = time.Hour

// NewJanitor returns a Janitor removing challenges older than maxAge
// (DefaultMaxAge when zero) every maxAge/4.
func NewJanitor(challenges *Challenges, clk clock.WithTicker, maxAge time.Duration, log logr.Logger) *Janitor {
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Janitor{challenges: challenges, clock: clk, maxAge: maxAge, log: log}
}

// Start sweeps until ctx is done; it runs on the leader only.
func (j *Janitor) Start(ctx context.Context) error {
	t := j.clock.NewTicker(j.maxAge / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
		if err := j.challenges.Sweep(ctx, j.clock.Now().Add(-j.maxAge)); err != nil {
			j.log.Error(err, "sweeping stale HTTP-01 challenges")
		}
	}
}

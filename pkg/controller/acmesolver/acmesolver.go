// Package acmesolver answers ACME HTTP-01 challenges from every controller
// replica. Only the leader runs orders, but the solver Service sends the
// ACME server's validation request to any replica, so the leader publishes
// each pending key authorization in a ConfigMap in the controller's
// namespace, every replica serves what its cache holds (asking the API
// server when its cache has not caught up yet), and the leader deletes the
// ConfigMap once the authorization is settled.
package acmesolver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/certmint/certmint/pkg/logkeys"
)

// LabelChallenge marks the ConfigMaps that hold key authorizations; the
// controller caches only those.
const LabelChallenge = "certmint.io/acme-http01-challenge"

// Keys of a challenge ConfigMap.
const (
	KeyToken            = "token"
	KeyKeyAuthorization = "keyAuthorization"
)

// PathPrefix is where ACME servers ask for HTTP-01 key authorizations.
const PathPrefix = "/.well-known/acme-challenge/"

// ObjectName is the name of the ConfigMap holding the key authorization of
// token. Tokens are mixed-case base64url, which object names cannot be.
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

// Challenges publishes and withdraws key authorizations.
type Challenges struct {
	client    client.Client
	reader    client.Reader
	namespace string
}

// NewChallenges returns Challenges writing through c and reading through
// reader, which must be a cache configured with CacheConfig: Served is
// true once that cache, the one every replica's Server reads, has the
// object.
func NewChallenges(c client.Client, reader client.Reader, namespace string) (*Challenges, error) {
	if c == nil || reader == nil || namespace == "" {
		return nil, errors.New("acmesolver: a client, a reader and a namespace are required")
	}
	return &Challenges{client: c, reader: reader, namespace: namespace}, nil
}

// Present publishes keyAuth as the answer for token. Publishing the same
// token again is not an error.
func (c *Challenges) Present(ctx context.Context, token, keyAuth string) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.namespace,
			Name:      ObjectName(token),
			Labels:    map[string]string{LabelChallenge: "true"},
		},
		Data: map[string]string{KeyToken: token, KeyKeyAuthorization: keyAuth},
	}
	if err := c.client.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("publishing HTTP-01 challenge: %w", err)
	}
	return nil
}

// Served reports whether the cache every replica answers from holds
// keyAuth for token.
func (c *Challenges) Served(ctx context.Context, token, keyAuth string) (bool, error) {
	got, err := lookup(ctx, c.reader, c.namespace, token)
	if err != nil {
		return false, err
	}
	return got == keyAuth, nil
}

// CleanUp withdraws the answer for token; a missing one is not an error.
func (c *Challenges) CleanUp(ctx context.Context, token string) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: ObjectName(token)}}
	if err := c.client.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing HTTP-01 challenge: %w", err)
	}
	return nil
}

// Sweep deletes challenge objects created before cutoff: what a leader
// that lost its lease mid-order left behind. Validation takes seconds, so
// an old challenge is nobody's.
func (c *Challenges) Sweep(ctx context.Context, cutoff time.Time) error {
	var list corev1.ConfigMapList
	if err := c.reader.List(ctx, &list, client.InNamespace(c.namespace), client.MatchingLabels{LabelChallenge: "true"}); err != nil {
		return fmt.Errorf("listing HTTP-01 challenges: %w", err)
	}
	for i := range list.Items {
		cm := &list.Items[i]
		if !cm.CreationTimestamp.Time.Before(cutoff) {
			continue
		}
		if err := c.client.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing stale HTTP-01 challenge %s: %w", cm.Name, err)
		}
	}
	return nil
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
// delivered the challenge is rare, and ACME servers ask a few times.
const (
	uncachedReadsPerSecond = 5
	uncachedReadBurst      = 20
)

// Handler answers GET /.well-known/acme-challenge/<token> with the key
// authorization published for token, and 404 otherwise. It looks in cached
// first and, when the challenge is not there, in apiReader: the leader
// waits for its own cache only, so a validation may reach a replica whose
// watch has not delivered the challenge yet, and a 404 fails the
// authorization for good.
func Handler(cached, apiReader client.Reader, namespace string, log logr.Logger) http.Handler {
	misses := rate.NewLimiter(uncachedReadsPerSecond, uncachedReadBurst)
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
		if err == nil && keyAuth == "" && misses.Allow() {
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
		Handler:           Handler(s.opts.Cache, s.opts.APIReader, s.opts.Namespace, s.opts.Logger),
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

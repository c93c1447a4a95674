package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/request"
)

// session is one issuer's connection to Vault and the token it logged in
// with. The token is kept, renewed while Vault allows, and replaced by a
// new login only when renewal is refused, the token reaches its maximum
// lifetime or Vault stops accepting it: one login serves every signature,
// so Vault does not pile up a lease per request.
//
// The token is renewed when something needs it past two thirds of its
// lifetime: a signature, or the issuer's readiness check, which Ready asks
// the issuer controller to make by then (Status.RecheckAt). That is what
// the library's LifetimeWatcher does, without a goroutine per issuer that
// would outlive the call that started it.
type session struct {
	fingerprint string
	ref         request.IssuerRef
	// base reaches Vault without a token; logins use it.
	base  *vaultapi.Client
	auth  authenticator
	clock clock.PassiveClock

	mu    sync.Mutex
	token *token
	// capabilitiesForbidden is set when Vault refused a fresh token the
	// capabilities check: the token lacks the default policy, and Ready
	// does without the check rather than take the refusal for a revoked
	// token and log in again.
	capabilitiesForbidden bool
}

// token is a granted token and the client that sends it.
type token struct {
	grant
	client *vaultapi.Client
	// granted is when the token's current lifetime began: its login or
	// its last renewal.
	granted time.Time
	// atMax is set when a renewal gave less than asked: the token has
	// reached its maximum lifetime and is replaced by a login next time.
	atMax bool
}

// renewAt is when the token is renewed, or replaced when it cannot be;
// zero for a token that never expires.
func (t *token) renewAt() time.Time {
	if t.ttl == 0 {
		return time.Time{}
	}
	return t.granted.Add(t.ttl * 2 / 3)
}

// expired reports whether the token is too close to its end at now to be
// sent: a request sent just before is refused by the time it arrives.
func (t *token) expired(now time.Time) bool {
	return t.ttl != 0 && !now.Before(t.granted.Add(t.ttl-t.ttl/10))
}

// client returns a client carrying a valid token: the kept one, renewed
// when due, or a new login's.
func (s *session) client(ctx context.Context) (*vaultapi.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	t := s.token
	switch {
	case t == nil || t.expired(now):
		return s.loginLocked(ctx)
	case t.ttl == 0 || now.Before(t.renewAt()):
		return t.client, nil
	case !t.renewable || t.atMax:
		return s.loginLocked(ctx)
	}
	err := s.renewLocked(ctx, t, now)
	var resp *vaultapi.ResponseError
	switch {
	case err == nil:
		return t.client, nil
	case errors.As(err, &resp) && refused(resp.StatusCode):
		// Renewal refused (revoked, or past its maximum lifetime): log in
		// again, as the library's lifetime watcher would have us do.
		log.FromContext(ctx).Info("Vault refused to renew the token; logging in again", logkeys.Issuer, s.ref.String(), logkeys.Message, vaultMessage(resp))
		return s.loginLocked(ctx)
	}
	// Vault could not be reached: the token is still valid for a while,
	// so use it, and renew next time.
	return t.client, nil
}

// renewLocked renews t, asking for the lifetime it was first granted.
func (s *session) renewLocked(ctx context.Context, t *token, now time.Time) error {
	secret, err := t.client.Auth().Token().RenewSelfWithContext(ctx, int(t.ttl/time.Second))
	if err != nil {
		return err
	}
	if secret == nil || secret.Auth == nil {
		return errors.New("the answer to the renewal holds no token")
	}
	renewals.WithLabelValues(s.ref.SignerName()).Inc()
	ttl := time.Duration(secret.Auth.LeaseDuration) * time.Second
	// A token renewed to less than its first lifetime is at its maximum:
	// it lives out the rest, and a login replaces it at two thirds of it.
	t.atMax = ttl+time.Second < t.ttl
	if t.atMax {
		t.ttl = ttl
	}
	t.granted = now
	t.renewable = secret.Auth.Renewable
	return nil
}

// loginLocked logs in and keeps the new token, revoking the one it
// replaces if a login made that one.
func (s *session) loginLocked(ctx context.Context) (*vaultapi.Client, error) {
	g, err := s.auth.login(ctx, s.base)
	if err != nil {
		return nil, err
	}
	c, err := s.base.CloneWithHeaders()
	if err != nil {
		return nil, fmt.Errorf("creating a Vault client: %w", err)
	}
	c.SetToken(g.token)
	c.SetWrappingLookupFunc(noWrapping)
	old := s.token
	s.token = &token{grant: g, client: c, granted: s.clock.Now()}
	if g.owned {
		logins.WithLabelValues(s.ref.SignerName(), s.auth.method()).Inc()
		log.FromContext(ctx).Info("logged in to Vault", logkeys.Issuer, s.ref.String(), logkeys.RenewAt, s.token.renewAt())
	}
	if old != nil && old.owned {
		revoke(ctx, old)
	}
	return c, nil
}

// invalidate forgets the token c carries if it is still the kept one, so
// the next client call logs in; c is a client client returned.
func (s *session) invalidate(c *vaultapi.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != nil && s.token.client == c {
		s.token = nil
	}
}

// nextAuth is when the kept token needs renewing or replacing; zero when
// it never does or there is none.
func (s *session) nextAuth() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == nil {
		return time.Time{}
	}
	return s.token.renewAt()
}

// do runs call with a client carrying a valid token. When Vault refuses
// the token (403) and a lookup of the token shows it is not valid any more
// (revoked, or lost with a restore of Vault's storage), it logs in again
// and runs call once more. A 403 for a valid token is a refusal by policy,
// returned as it is: logging in again would not change it, and would pile
// up leases.
func (s *session) do(ctx context.Context, call func(*vaultapi.Client) error) error {
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	err = call(c)
	if !isForbidden(err) || tokenValid(ctx, c) {
		return err
	}
	log.FromContext(ctx).Info("Vault no longer accepts the token; logging in again", logkeys.Issuer, s.ref.String())
	s.invalidate(c)
	if c, err = s.client(ctx); err != nil {
		return err
	}
	return call(c)
}

// forget drops the token, revoking it if a login made it.
func (s *session) forget(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != nil && s.token.owned {
		revoke(ctx, s.token)
	}
	s.token = nil
}

func isForbidden(err error) bool {
	var resp *vaultapi.ResponseError
	return errors.As(err, &resp) && resp.StatusCode == http.StatusForbidden
}

// tokenValid reports whether Vault still accepts the token c carries; a
// lookup that fails for another reason than a refusal counts as valid, so
// an unreachable Vault causes no login.
func tokenValid(ctx context.Context, c *vaultapi.Client) bool {
	_, err := c.Auth().Token().LookupSelfWithContext(ctx)
	return !isForbidden(err)
}

// revokeTimeout bounds revoking a token no longer used: Vault would let it
// expire anyway.
const revokeTimeout = 10 * time.Second

// revoke revokes t so its lease does not linger in Vault until it expires.
// A failure is only logged: the token expires by itself.
func revoke(ctx context.Context, t *token) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if err := t.client.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		log.FromContext(ctx).V(1).Info("revoking a Vault token no longer used", logkeys.Message, err.Error())
	}
}

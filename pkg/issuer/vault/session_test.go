package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmint/certmint/pkg/request"
)

// fakeVault answers the token endpoints a session uses, as Vault does,
// for the session's unit tests; the tests against a real Vault are in
// test/integration/controller.
type fakeVault struct {
	clock *clocktesting.FakeClock
	ttl   time.Duration
	// maxTTL bounds a token's life from its login; zero for none.
	maxTTL time.Duration

	mu sync.Mutex
	// tokens maps a live token to when it was created.
	tokens                               map[string]time.Time
	logins, renewals, revocations        int
	refuseRenewal, denySign, failRenewal bool
	// namespaces are the X-Vault-Namespace headers requests carried.
	namespaces map[string]bool
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.namespaces[r.Header.Get("X-Vault-Namespace")] = true
	token := r.Header.Get("X-Vault-Token")
	created, live := f.tokens[token]
	reply := func(status int, body any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
	denied := func() { reply(http.StatusForbidden, map[string]any{"errors": []string{"permission denied"}}) }
	switch r.URL.Path {
	case "/v1/auth/approle/login":
		f.logins++
		token = fmt.Sprintf("token-%d", f.logins)
		f.tokens[token] = f.clock.Now()
		reply(http.StatusOK, map[string]any{"auth": map[string]any{"client_token": token, "lease_duration": int(f.ttl / time.Second), "renewable": true}})
	case "/v1/auth/token/renew-self":
		switch {
		case !live || f.refuseRenewal:
			denied()
			return
		case f.failRenewal:
			reply(http.StatusInternalServerError, map[string]any{"errors": []string{"local node not active"}})
			return
		}
		f.renewals++
		ttl := f.ttl
		if f.maxTTL > 0 {
			ttl = min(ttl, created.Add(f.maxTTL).Sub(f.clock.Now()))
		}
		reply(http.StatusOK, map[string]any{"auth": map[string]any{"client_token": token, "lease_duration": int(ttl / time.Second), "renewable": true}})
	case "/v1/auth/token/lookup-self":
		if !live {
			denied()
			return
		}
		reply(http.StatusOK, map[string]any{"data": map[string]any{"ttl": int(f.ttl / time.Second), "renewable": true}})
	case "/v1/auth/token/revoke-self":
		f.revocations++
		delete(f.tokens, token)
		w.WriteHeader(http.StatusNoContent)
	case "/v1/pki/sign/web":
		if !live || f.denySign {
			denied()
			return
		}
		reply(http.StatusOK, map[string]any{"data": map[string]any{"certificate": "signed with " + token}})
	default:
		reply(http.StatusNotFound, map[string]any{"errors": []string{"no handler for route " + r.URL.Path}})
	}
}

func (f *fakeVault) counts() (logins, renewals, revocations int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins, f.renewals, f.revocations
}

func (f *fakeVault) revoke(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tokens, token)
}

func (f *fakeVault) set(change func(*fakeVault)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// newTestSession returns a session logging in to a fake Vault with
// AppRole, in the Vault namespace team-a; its tokens live ttl.
func newTestSession(t *testing.T, ttl time.Duration) (*session, *fakeVault) {
	t.Helper()
	clk := clocktesting.NewFakeClock(now)
	fake := &fakeVault{clock: clk, ttl: ttl, tokens: map[string]time.Time{}, namespaces: map[string]bool{}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	base, err := vaultapi.NewClient(&vaultapi.Config{Address: srv.URL, HttpClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	base.ClearToken()
	base.SetNamespace("team-a")
	return &session{
		ref:   request.IssuerRef{Kind: request.KindClusterIssuer, Name: "vault"},
		base:  base,
		auth:  appRole{mount: "approle", roleID: "role", secretID: "secret"},
		clock: clk,
	}, fake
}

// sign signs through s.do, as Backend.Sign does, and returns which token
// Vault saw.
func sign(t *testing.T, s *session) (string, error) {
	t.Helper()
	var got string
	err := s.do(context.Background(), func(c *vaultapi.Client) error {
		secret, err := c.Logical().WriteWithContext(context.Background(), "pki/sign/web", map[string]any{})
		if err == nil {
			got, _ = secret.Data["certificate"].(string)
		}
		return err
	})
	return got, err
}

func wantCounts(t *testing.T, f *fakeVault, logins, renewals, revocations int) {
	t.Helper()
	if l, r, v := f.counts(); l != logins || r != renewals || v != revocations {
		t.Errorf("logins, renewals, revocations = %d, %d, %d; want %d, %d, %d", l, r, v, logins, renewals, revocations)
	}
}

func TestOneLoginServesEverySignature(t *testing.T) {
	s, fake := newTestSession(t, time.Hour)
	for i := range 20 {
		got, err := sign(t, s)
		if err != nil || got != "signed with token-1" {
			t.Fatalf("signature %d: %q, %v", i, got, err)
		}
		s.clock.(*clocktesting.FakeClock).Step(time.Minute)
	}
	wantCounts(t, fake, 1, 0, 0)
	if len(fake.namespaces) != 1 || !fake.namespaces["team-a"] {
		t.Errorf("requests carried the Vault namespaces %v, want team-a alone", fake.namespaces)
	}
}

func TestSignaturesAtOnceShareOneLogin(t *testing.T) {
	s, fake := newTestSession(t, time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if _, err := sign(t, s); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	wantCounts(t, fake, 1, 0, 0)
}

func TestTheTokenIsRenewedAtTwoThirdsOfItsLife(t *testing.T) {
	s, fake := newTestSession(t, 30*time.Second)
	clk := s.clock.(*clocktesting.FakeClock)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	if got, want := s.nextAuth(), now.Add(20*time.Second); !got.Equal(want) {
		t.Errorf("nextAuth = %s, want %s", got, want)
	}
	clk.Step(19 * time.Second)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, fake, 1, 0, 0)
	clk.Step(2 * time.Second)
	if got, err := sign(t, s); err != nil || got != "signed with token-1" {
		t.Fatalf("after renewal: %q, %v", got, err)
	}
	wantCounts(t, fake, 1, 1, 0)
	if got, want := s.nextAuth(), now.Add(21*time.Second+20*time.Second); !got.Equal(want) {
		t.Errorf("after renewal nextAuth = %s, want %s", got, want)
	}
}

func TestATokenAtItsMaximumLifeIsReplacedByALogin(t *testing.T) {
	s, fake := newTestSession(t, 30*time.Second)
	fake.set(func(f *fakeVault) { f.maxTTL = 45 * time.Second })
	clk := s.clock.(*clocktesting.FakeClock)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	// At 21s the renewal gives 24s, less than the 30s asked: the token
	// is at its maximum and lives out the rest.
	clk.Step(21 * time.Second)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, fake, 1, 1, 0)
	// Two thirds of those 24s later, a login replaces it, and the old
	// token is revoked rather than left to expire.
	clk.Step(17 * time.Second)
	if got, err := sign(t, s); err != nil || got != "signed with token-2" {
		t.Fatalf("after the maximum: %q, %v", got, err)
	}
	wantCounts(t, fake, 2, 1, 1)
}

func TestARefusedRenewalLogsInAgain(t *testing.T) {
	s, fake := newTestSession(t, 30*time.Second)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	fake.set(func(f *fakeVault) { f.refuseRenewal = true })
	s.clock.(*clocktesting.FakeClock).Step(21 * time.Second)
	if got, err := sign(t, s); err != nil || got != "signed with token-2" {
		t.Fatalf("after a refused renewal: %q, %v", got, err)
	}
	wantCounts(t, fake, 2, 0, 1)
}

func TestAVaultFailingAtRenewalKeepsTheValidToken(t *testing.T) {
	s, fake := newTestSession(t, 30*time.Second)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	fake.set(func(f *fakeVault) { f.failRenewal = true })
	s.clock.(*clocktesting.FakeClock).Step(21 * time.Second)
	if got, err := sign(t, s); err != nil || got != "signed with token-1" {
		t.Fatalf("with renewal failing: %q, %v", got, err)
	}
	wantCounts(t, fake, 1, 0, 0)
	// Once Vault is back, the due renewal happens.
	fake.set(func(f *fakeVault) { f.failRenewal = false })
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, fake, 1, 1, 0)
}

func TestAnExpiredTokenIsNeverSent(t *testing.T) {
	s, fake := newTestSession(t, 30*time.Second)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	// Nothing renewed it (a controller that was stopped, say).
	s.clock.(*clocktesting.FakeClock).Step(28 * time.Second)
	if got, err := sign(t, s); err != nil || got != "signed with token-2" {
		t.Fatalf("after expiry: %q, %v", got, err)
	}
	wantCounts(t, fake, 2, 0, 1)
}

func TestARevokedTokenLeadsToOneFreshLogin(t *testing.T) {
	s, fake := newTestSession(t, time.Hour)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	fake.revoke("token-1")
	for range 5 {
		if got, err := sign(t, s); err != nil || got != "signed with token-2" {
			t.Fatalf("after revocation: %q, %v", got, err)
		}
	}
	wantCounts(t, fake, 2, 0, 0)
}

func TestARefusalByPolicyLogsInNoMore(t *testing.T) {
	s, fake := newTestSession(t, time.Hour)
	fake.set(func(f *fakeVault) { f.denySign = true })
	for range 5 {
		if _, err := sign(t, s); !isForbidden(err) {
			t.Fatalf("sign = %v, want Vault's 403", err)
		}
	}
	wantCounts(t, fake, 1, 0, 0)
}

func TestForgetRevokesTheTokenALoginMade(t *testing.T) {
	s, fake := newTestSession(t, time.Hour)
	if _, err := sign(t, s); err != nil {
		t.Fatal(err)
	}
	s.forget(context.Background())
	wantCounts(t, fake, 1, 0, 1)
	if !s.nextAuth().IsZero() {
		t.Error("a forgotten session still has a token")
	}
}

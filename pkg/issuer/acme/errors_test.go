package acme

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmint/certmint/pkg/issuer"
)

func TestACMEErrorsAreClassifiedAsTheServerMeantThem(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	b := &Backend{clock: clocktesting.NewFakePassiveClock(now)}
	header := func(retryAfter string) http.Header {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return h
	}
	for _, c := range []struct {
		name      string
		err       error
		wantClass string // pending, permanent, retry
		wantWait  time.Duration
		wantText  string
	}{
		{"a 429 with Retry-After waits as long as it says", &acme.Error{StatusCode: 429, Header: header("120"), Detail: "too many orders"}, "pending", 2 * time.Minute, "too many orders"},
		{"a Retry-After as an HTTP date", &acme.Error{StatusCode: 429, Header: header(now.Add(90 * time.Second).Format(http.TimeFormat))}, "pending", 90 * time.Second, "rate limited"},
		{"a rateLimited problem without Retry-After waits a minute", &acme.Error{StatusCode: 403, ProblemType: "urn:ietf:params:acme:error:rateLimited"}, "pending", defaultRateLimitWait, "rate limited"},
		{"a 503 with Retry-After waits as long as it says", &acme.Error{StatusCode: 503, Header: header("30")}, "pending", 30 * time.Second, "asked to wait"},
		{"a 500 without Retry-After is retried", &acme.Error{StatusCode: 500}, "retry", 0, "500"},
		{"a bad nonce is retried", &acme.Error{StatusCode: 400, ProblemType: "urn:ietf:params:acme:error:badNonce"}, "retry", 0, ""},
		{"a rejected identifier fails with the server's words", &acme.Error{StatusCode: 400, ProblemType: "urn:ietf:params:acme:error:rejectedIdentifier", Detail: "policy forbids issuing for name"}, "permanent", 0, "policy forbids issuing for name"},
		{"an error of the network is retried", errors.New("dial tcp: connection refused"), "retry", 0, "connection refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := &orderState{}
			err := b.acmeError(st, "creating the ACME order", c.err)
			var pending *issuer.PendingError
			var permanent *issuer.PermanentError
			class := "retry"
			switch {
			case errors.As(err, &pending):
				class = "pending"
			case errors.As(err, &permanent):
				class = "permanent"
			}
			if class != c.wantClass {
				t.Fatalf("%v is %s, want %s", err, class, c.wantClass)
			}
			if class == "pending" && (pending.RetryAfter != c.wantWait || !st.retryAt.Equal(now.Add(c.wantWait))) {
				t.Errorf("waits %s (retryAt %s), want %s", pending.RetryAfter, st.retryAt, c.wantWait)
			}
			if !strings.Contains(err.Error(), c.wantText) {
				t.Errorf("%q does not say %q", err, c.wantText)
			}
		})
	}
}

func TestOnlyARefusalOfTheLifetimeOrdersWithoutOne(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&acme.Error{StatusCode: 400, ProblemType: "urn:ietf:params:acme:error:malformed", Detail: "NotBefore and NotAfter are not supported"}, true},
		{&acme.Error{StatusCode: 400, Detail: "notAfter too far in the future"}, true},
		{&acme.Error{StatusCode: 400, ProblemType: "urn:ietf:params:acme:error:rejectedIdentifier"}, false},
		{&acme.Error{StatusCode: 403, ProblemType: "urn:ietf:params:acme:error:unauthorized"}, false},
		{&acme.Error{StatusCode: 500, Detail: "notAfter"}, false},
		{errors.New("notAfter"), false},
	} {
		if got := refusesLifetime(c.err); got != c.want {
			t.Errorf("refusesLifetime(%v) = %t, want %t", c.err, got, c.want)
		}
	}
}

func TestTheClientRetriesWithinAPassOnlyWhatPassesQuickly(t *testing.T) {
	b := &Backend{clock: clocktesting.NewFakePassiveClock(time.Now())}
	resp := func(code int, retryAfter string) *http.Response {
		r := &http.Response{StatusCode: code, Header: http.Header{}}
		if retryAfter != "" {
			r.Header.Set("Retry-After", retryAfter)
		}
		return r
	}
	if d := b.retryBackoff(1, nil, resp(429, "1")); d != 0 {
		t.Errorf("a rate limit is retried within the pass after %s", d)
	}
	if d := b.retryBackoff(1, nil, resp(503, "600")); d != 0 {
		t.Errorf("a Retry-After of ten minutes is waited for within the pass (%s)", d)
	}
	if d := b.retryBackoff(1, nil, resp(503, "2")); d != 2*time.Second {
		t.Errorf("a short Retry-After is waited for %s, want 2s", d)
	}
	if d := b.retryBackoff(1, nil, resp(400, "")); d != badNonceWait {
		t.Errorf("a bad nonce is retried after %s", d)
	}
	if d := b.retryBackoff(maxInPassRetries+1, nil, resp(500, "")); d != 0 {
		t.Errorf("a server error is retried more than %d times within a pass", maxInPassRetries)
	}
}

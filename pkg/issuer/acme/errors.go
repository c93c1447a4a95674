package acme

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/certmint/certmint/pkg/issuer"
)

// How requests the ACME server refused for now are retried within one
// pass (the ACME client's RetryBackoff): a bad nonce at once, with a fresh
// one; a server error a few times with a short backoff. A rate limit is
// never retried within a pass: the pass ends, and the request is looked at
// again when the server said (see acmeError), without holding a worker.
const (
	maxInPassRetries = 3
	badNonceWait     = 50 * time.Millisecond
	serverErrorWait  = time.Second
)

// retryBackoff is the ACME client's RetryBackoff.
func (b *Backend) retryBackoff(n int, _ *http.Request, resp *http.Response) time.Duration {
	switch {
	case n > maxInPassRetries, resp == nil, resp.StatusCode == http.StatusTooManyRequests:
		return 0
	case resp.StatusCode < 500:
		// A bad nonce, which the client has already replaced.
		return badNonceWait
	}
	if after, ok := retryAfter(resp.Header, b.clock.Now()); ok {
		if after > serverErrorWait<<maxInPassRetries {
			return 0
		}
		return after
	}
	// Jitter spreads the retries of many orders after one outage.
	wait := serverErrorWait << (n - 1)
	return wait + rand.N(wait/2+1)
}

// retryAfter reads a Retry-After header, in seconds or as an HTTP date.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// rateLimitedError is a refusal to be asked again before a time.
type rateLimitedError struct{ msg string }

func (e *rateLimitedError) Error() string { return e.msg }

// acmeError classifies an error of the ACME client. A rate limit (429, or
// a rateLimited problem), or any answer with a Retry-After, means waiting
// until the server said (a minute for a rate limit that says nothing), and
// st is not asked of the server before; another refusal (4xx) is
// permanent, with the server's own words; anything else (5xx, bad nonces,
// the network) is retried, with the caller's backoff.
func (b *Backend) acmeError(st *orderState, what string, err error) error {
	var acmeErr *acme.Error
	if !errors.As(err, &acmeErr) {
		return fmt.Errorf("%s: %w", what, err)
	}
	now := b.clock.Now()
	limited := acmeErr.StatusCode == http.StatusTooManyRequests || strings.HasSuffix(acmeErr.ProblemType, ":rateLimited")
	wait, told := retryAfter(acmeErr.Header, now)
	if limited || told {
		if !told {
			wait = defaultRateLimitWait
		}
		if st != nil {
			st.retryAt = now.Add(wait)
		}
		msg := fmt.Sprintf("%s: the ACME server asked to wait until %s: %s", what, now.Add(wait).UTC().Format(time.RFC3339), problem(acmeErr))
		if limited {
			msg = fmt.Sprintf("%s: rate limited by the ACME server until %s: %s", what, now.Add(wait).UTC().Format(time.RFC3339), problem(acmeErr))
		}
		return &issuer.PendingError{Err: &rateLimitedError{msg: msg}, RetryAfter: wait}
	}
	if strings.HasSuffix(strings.ToLower(acmeErr.ProblemType), ":badnonce") {
		// Nonces that kept going stale: the next pass tries again.
		return fmt.Errorf("%s: %w", what, err)
	}
	if acmeErr.StatusCode >= 400 && acmeErr.StatusCode < 500 {
		return issuer.Permanentf("%s: the ACME server refused: %s", what, problem(acmeErr))
	}
	return fmt.Errorf("%s: %w", what, err)
}

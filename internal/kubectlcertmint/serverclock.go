package kubectlcertmint

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
)

// ServerClock tells the time on the API server.
type ServerClock interface {
	// Now is the API server's time, at most a second behind it.
	Now(ctx context.Context) (time.Time, error)
}

var _ ServerClock = (*APIServerClock)(nil)

// APIServerClock reads the API server's clock from the Date header of its
// answer to GET /version.
//
// reissueBefore is compared with the creation times the API server gives
// requests. Set from a workstation whose clock runs ahead, it would lie in
// the API server's future: every certificate re-issued until then would
// still have been requested before it, and would be re-issued again, over
// and over, until the API server's clock caught up.
type APIServerClock struct {
	client *http.Client
	url    string
}

// NewAPIServerClock returns the clock of cfg's API server.
func NewAPIServerClock(cfg *rest.Config) (*APIServerClock, error) {
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, err
	}
	return &APIServerClock{client: client, url: base.JoinPath("version").String()}, nil
}

// Now asks the API server. Date has whole seconds, rounded down, so the
// time returned is never ahead of the API server's.
func (c *APIServerClock) Now(ctx context.Context) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the API server's clock: %w", err)
	}
	// Only the header is read; the body's close cannot fail the read.
	defer func() { _ = resp.Body.Close() }()
	date := resp.Header.Get("Date")
	if date == "" {
		return time.Time{}, errors.New("reading the API server's clock: its answer to GET /version has no Date header")
	}
	t, err := http.ParseTime(date)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the API server's clock: Date %q: %w", date, err)
	}
	return t.UTC(), nil
}

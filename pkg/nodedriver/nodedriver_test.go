package nodedriver

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRunRejectsMissingOptions(t *testing.T) {
	for _, o := range []Options{
		{NodeName: "n", StateDir: "s", DataRoot: "d"},
		{Endpoint: "/x.sock", StateDir: "s", DataRoot: "d"},
		{Endpoint: "/x.sock", NodeName: "n", DataRoot: "d"},
		{Endpoint: "/x.sock", NodeName: "n", StateDir: "s"},
	} {
		if err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) succeeded", o)
		}
	}
}

func TestHealthzReportsEveryFailingCheck(t *testing.T) {
	var failing error
	var stranded error
	checks := []func() error{func() error { return nil }, func() error { return failing }}
	readiness := append(slices.Clone(checks), func() error { return stranded })
	muxes := httpMuxes(Options{HealthAddr: ":1", MetricsAddr: ":1"}, prometheus.NewRegistry(), checks, readiness)
	if len(muxes) != 1 {
		t.Fatalf("health and metrics on one address got %d muxes", len(muxes))
	}
	mux := muxes[":1"]
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("healthy driver: /healthz = %d", code)
	}
	failing = errors.New("watch not established")
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "watch not established") {
		t.Errorf("unhealthy driver: /healthz = %d %q", code, body)
	}
	failing = nil
	stranded = errors.New("volume csi-1 is not renewed")
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("a stranded volume failed /healthz (%d): a restart mends nothing", code)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "csi-1") {
		t.Errorf("a stranded volume: /readyz = %d %q, want 503 naming it", code, body)
	}
	if code, _ := get("/metrics"); code != http.StatusOK {
		t.Errorf("/metrics = %d", code)
	}
}

func TestHealthAndMetricsCanBeSeparateOrOff(t *testing.T) {
	if n := len(httpMuxes(Options{HealthAddr: ":1", MetricsAddr: ":2"}, prometheus.NewRegistry(), nil, nil)); n != 2 {
		t.Errorf("separate addresses: %d muxes", n)
	}
	if n := len(httpMuxes(Options{}, prometheus.NewRegistry(), nil, nil)); n != 0 {
		t.Errorf("both off: %d muxes", n)
	}
}

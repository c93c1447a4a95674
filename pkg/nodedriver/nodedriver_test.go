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
	muxes := httpMuxes(Options{HealthAddr: ":1", MetricsAddr: ":1"}, prometheus.NewRegistry(), http.NotFoundHandler(), checks, readiness)
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
	if n := len(httpMuxes(Options{HealthAddr: ":1", MetricsAddr: ":2"}, prometheus.NewRegistry(), http.NotFoundHandler(), nil, nil)); n != 2 {
		t.Errorf("separate addresses: %d muxes", n)
	}
	if n := len(httpMuxes(Options{}, prometheus.NewRegistry(), http.NotFoundHandler(), nil, nil)); n != 0 {
		t.Errorf("both off: %d muxes", n)
	}
}

func TestVolumesIsServedWithMetricsForGETOnly(t *testing.T) {
	volumes := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"volumes":[]}`)) })
	muxes := httpMuxes(Options{HealthAddr: ":1", MetricsAddr: ":2"}, prometheus.NewRegistry(), volumes, nil, nil)
	serve := func(addr, method, path string) int {
		rec := httptest.NewRecorder()
		muxes[addr].ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code
	}
	if code := serve(":2", http.MethodGet, "/volumes?namespace=shop"); code != http.StatusOK {
		t.Errorf("GET /volumes on the metrics address = %d", code)
	}
	if code := serve(":1", http.MethodGet, "/volumes"); code != http.StatusNotFound {
		t.Errorf("GET /volumes on the health address = %d, want 404", code)
	}
	for _, method := range []string{http.MethodPost, http.MethodDelete} {
		if code := serve(":2", method, "/volumes"); code != http.StatusMethodNotAllowed {
			t.Errorf("%s /volumes = %d, want 405: it is read-only", method, code)
		}
	}
}

package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// apiCounts are requests the API server served, from its own metrics.
type apiCounts struct {
	reads, writes, watches float64
	// csrWrites are the writes to CertificateSigningRequests and their
	// subresources: what one issuance costs etcd.
	csrWrites float64
	// csrWriteSeconds is the time the API server spent serving them,
	// etcd included.
	csrWriteSeconds float64
}

func (a apiCounts) sub(b apiCounts) apiCounts {
	return apiCounts{reads: a.reads - b.reads, writes: a.writes - b.writes, watches: a.watches - b.watches,
		csrWrites: a.csrWrites - b.csrWrites, csrWriteSeconds: a.csrWriteSeconds - b.csrWriteSeconds}
}

func (a apiCounts) total() float64 { return a.reads + a.writes + a.watches }

// apiServerMetrics scrapes kube-apiserver's /metrics.
type apiServerMetrics struct {
	host, url string
	client    *http.Client
}

func newAPIServerMetrics(cfg *rest.Config) (*apiServerMetrics, error) {
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &apiServerMetrics{host: cfg.Host, url: cfg.Host + "/metrics", client: c}, nil
}

// counts sums apiserver_request_total by kind of verb. A watch is counted in
// apiserver_request_total only when it ends, so watches started are those
// that ended plus those still open (apiserver_longrunning_requests).
func (m *apiServerMetrics) counts(ctx context.Context) (apiCounts, error) {
	body, err := m.scrape(ctx)
	if err != nil {
		return apiCounts{}, err
	}
	return parseCounts(body), nil
}

// parseCounts sums the request counters of the API server's metrics.
func parseCounts(body []byte) apiCounts {
	var c apiCounts
	for _, line := range strings.Split(string(body), "\n") {
		name, labels, value, ok := parseSample(line)
		if !ok {
			continue
		}
		verb := labels["verb"]
		switch name {
		case "apiserver_request_total":
			switch verb {
			case "GET", "LIST":
				c.reads += value
			case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY":
				c.writes += value
				if labels["resource"] == "certificatesigningrequests" {
					c.csrWrites += value
				}
			case "WATCH", "WATCHLIST":
				c.watches += value
			}
		case "apiserver_request_duration_seconds_sum":
			if labels["resource"] == "certificatesigningrequests" && isWrite(verb) {
				c.csrWriteSeconds += value
			}
		case "apiserver_longrunning_requests":
			if verb == "WATCH" || verb == "WATCHLIST" {
				c.watches += value
			}
		}
	}
	return c
}

// save writes the API server's metrics to path, for a closer look at a
// run: latencies by verb, admission, etcd.
func (m *apiServerMetrics) save(ctx context.Context, path string) error {
	body, err := m.scrape(ctx)
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// profile saves a CPU profile of the API server over d to path; the API
// server must run with --profiling.
func (m *apiServerMetrics) profile(ctx context.Context, d time.Duration, path string) error {
	body, err := m.get(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", m.host, int(d.Seconds())))
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

func (m *apiServerMetrics) scrape(ctx context.Context) ([]byte, error) {
	return m.get(ctx, m.url)
}

func (m *apiServerMetrics) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading kube-apiserver %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading kube-apiserver %s: %s", url, resp.Status)
	}
	return body, nil
}

func isWrite(verb string) bool {
	switch verb {
	case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY":
		return true
	}
	return false
}

// parseSample splits a line of the Prometheus text format.
func parseSample(line string) (name string, labels map[string]string, value float64, ok bool) {
	if line == "" || line[0] == '#' {
		return "", nil, 0, false
	}
	sp := strings.LastIndexByte(line, ' ')
	if sp < 0 {
		return "", nil, 0, false
	}
	value, err := strconv.ParseFloat(line[sp+1:], 64)
	if err != nil {
		return "", nil, 0, false
	}
	series := line[:sp]
	labels = map[string]string{}
	open := strings.IndexByte(series, '{')
	if open < 0 {
		return series, labels, value, true
	}
	name = series[:open]
	for _, pair := range strings.Split(strings.TrimSuffix(series[open+1:], "}"), ",") {
		k, v, found := strings.Cut(pair, "=")
		if found {
			labels[k] = strings.Trim(v, `"`)
		}
	}
	return name, labels, value, true
}

// requestKey is one verb on one resource, or on one of its subresources.
type requestKey struct{ resource, subresource, verb string }

func (k requestKey) String() string {
	if k.subresource == "" {
		return k.verb + " " + k.resource
	}
	return k.verb + " " + k.resource + "/" + k.subresource
}

// requestStat is what the API server served for one requestKey.
type requestStat struct {
	count     float64 // apiserver_request_total, every response code
	conflicts float64 // of those, 409 Conflict
	// seconds and timed are the sum and count of
	// apiserver_request_duration_seconds: the time serving them, etcd
	// included.
	seconds, timed float64
}

// meanSeconds is the mean time the API server took for one request.
func (s requestStat) meanSeconds() float64 {
	if s.timed == 0 {
		return 0
	}
	return s.seconds / s.timed
}

// requestStats are the API server's requests by resource and verb, from its
// metrics; resources of the same name in different groups (core and
// events.k8s.io Events) are counted together.
type requestStats map[requestKey]requestStat

func parseRequestStats(body []byte) requestStats {
	stats := requestStats{}
	for _, line := range strings.Split(string(body), "\n") {
		name, labels, value, ok := parseSample(line)
		if !ok {
			continue
		}
		k := requestKey{resource: labels["resource"], subresource: labels["subresource"], verb: labels["verb"]}
		s := stats[k]
		switch name {
		case "apiserver_request_total":
			s.count += value
			if labels["code"] == "409" {
				s.conflicts += value
			}
		case "apiserver_request_duration_seconds_sum":
			s.seconds += value
		case "apiserver_request_duration_seconds_count":
			s.timed += value
		default:
			continue
		}
		stats[k] = s
	}
	return stats
}

// since is what was served between earlier and s.
func (s requestStats) since(earlier requestStats) requestStats {
	out := requestStats{}
	for k, v := range s {
		e := earlier[k]
		d := requestStat{count: v.count - e.count, conflicts: v.conflicts - e.conflicts, seconds: v.seconds - e.seconds, timed: v.timed - e.timed}
		if d != (requestStat{}) {
			out[k] = d
		}
	}
	return out
}

// conflicts is how many requests of every kind were refused with 409
// Conflict.
func (s requestStats) conflicts() float64 {
	var n float64
	for _, v := range s {
		n += v.conflicts
	}
	return n
}

// perIssuance lists the writes of s, or its reads, per each of n issuances,
// most frequent first, leaving out those rarer than one in twenty
// issuances: "POST secrets 1.00, PUT certificates/status 1.00".
func (s requestStats) perIssuance(n float64, writes bool) string {
	type entry struct {
		key  requestKey
		per  float64
		name string
	}
	var entries []entry
	for k, v := range s {
		if isWrite(k.verb) != writes || k.verb == "WATCH" || k.verb == "WATCHLIST" || v.count/n < 0.05 {
			continue
		}
		entries = append(entries, entry{k, v.count / n, k.String()})
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := cmp.Compare(b.per, a.per); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	parts := make([]string, len(entries))
	for i, e := range entries {
		parts[i] = fmt.Sprintf("%s %.2f", e.name, e.per)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

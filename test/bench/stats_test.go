package main

import (
	"testing"
	"time"
)

func TestQuantileIsTheNearestRank(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, ms(i))
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"the median of 1..100 is 50", hundred, 0.5, ms(50)},
		{"the 99th percentile of 1..100 is 99", hundred, 0.99, ms(99)},
		{"the 90th percentile of 1..100 is 90", hundred, 0.9, ms(90)},
		{"a single value is every quantile", []time.Duration{ms(7)}, 0.99, ms(7)},
		{"the median of three is the middle one", []time.Duration{ms(1), ms(2), ms(30)}, 0.5, ms(2)},
		{"no values give zero", nil, 0.5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantile(tc.sorted, tc.q); got != tc.want {
				t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestCountsSplitsAPIServerRequestsByVerb(t *testing.T) {
	const metrics = `# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",resource="certificatesigningrequests",subresource="",verb="POST",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",resource="certificatesigningrequests",subresource="approval",verb="PUT",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",resource="leases",subresource="",verb="PUT",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",resource="pods",subresource="",verb="GET",version="v1"} 4
apiserver_request_total{code="200",component="apiserver",resource="pods",subresource="",verb="LIST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",resource="pods",subresource="",verb="WATCH",version="v1"} 2
apiserver_longrunning_requests{component="apiserver",resource="certificatesigningrequests",scope="cluster",subresource="",verb="WATCH"} 5
apiserver_request_duration_seconds_sum{component="apiserver",resource="certificatesigningrequests",subresource="",verb="POST",version="v1"} 0.25
apiserver_request_duration_seconds_sum{component="apiserver",resource="certificatesigningrequests",subresource="",verb="GET",version="v1"} 9
`
	got := parseCounts([]byte(metrics))
	want := apiCounts{reads: 5, writes: 23, watches: 7, csrWrites: 20, csrWriteSeconds: 0.25}
	if got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
}

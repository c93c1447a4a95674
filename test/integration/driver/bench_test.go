package driver_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
)

// BenchmarkNodePublishVolume measures NodePublishVolume as the kubelet sees
// it, against the real API server with a signer that answers at once: key
// generation, CSR create, watch, verification, tmpfs, atomic write, bind
// mount. Unpublishing is not timed. Besides ns/op it reports the p50 and
// p99 latency in milliseconds.
//
//	go test ./test/integration/driver/ -run '^$' -bench NodePublishVolume -benchtime 200x
func BenchmarkNodePublishVolume(b *testing.B) {
	requireEnv(b)
	pod := workloadPod(b, "bench-0")
	ctx := context.Background()
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		req := publishRequest(b, pod, fmt.Sprintf("csi-bench-%d", i))
		b.StartTimer()
		start := time.Now()
		if _, err := env.node.NodePublishVolume(ctx, req); err != nil {
			b.Fatal(err)
		}
		latencies = append(latencies, time.Since(start))
		b.StopTimer()
		if _, err := env.node.NodeUnpublishVolume(ctx, &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(latencies)
	ms := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

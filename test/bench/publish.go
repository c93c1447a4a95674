package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/test/stack"
)

// volume is one pod's inline certmint volume.
type volume = stack.Volume

// createVolumes creates n pods bound to the driver's node with their
// volumes.
func createVolumes(ctx context.Context, e *env, prefix string, n int) ([]volume, error) {
	vols := make([]volume, n)
	err := parallel(ctx, 16, n, func(ctx context.Context, i int) error {
		v, err := e.NewVolume(ctx, workloadNS, workloadSA, prefix+"-"+strconv.Itoa(i))
		vols[i] = v
		return err
	})
	return vols, err
}

// publishRequest is what the kubelet sends for the volume: a certificate
// from the ClusterIssuer issuer for the pod's Service-style name and SPIFFE
// ID.
func publishRequest(issuer string, v volume, duration, renewBefore time.Duration) *csispec.NodePublishVolumeRequest {
	return v.PublishRequest(map[string]string{
		attributes.IssuerName:  issuer,
		attributes.IssuerKind:  "ClusterIssuer",
		attributes.DNSNames:    "${POD_NAME}.${POD_NAMESPACE}.svc",
		attributes.SPIFFEID:    "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}",
		attributes.Duration:    duration.String(),
		attributes.RenewBefore: renewBefore.String(),
	})
}

// publishRun is one run of publishes at a fixed concurrency.
type publishRun struct {
	concurrency int
	latencies   []time.Duration // sorted
	wall        time.Duration
}

func (r publishRun) perSecond() float64 { return float64(len(r.latencies)) / r.wall.Seconds() }

// publishAll publishes vols, with certificates from the ClusterIssuer
// issuer, with concurrency calls in flight and times each call from
// request to response: when NodePublishVolume returns, the files are
// written and mounted. Each volume's files are checked afterwards, off the
// clock.
func publishAll(ctx context.Context, node csispec.NodeClient, issuer string, vols []volume, concurrency int, renewBefore time.Duration) (publishRun, error) {
	lat := make([]time.Duration, len(vols))
	start := time.Now()
	err := parallel(ctx, concurrency, len(vols), func(ctx context.Context, i int) error {
		req := publishRequest(issuer, vols[i], certDuration, renewBefore)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t := time.Now()
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			return fmt.Errorf("publishing %s: %w", vols[i].ID, err)
		}
		lat[i] = time.Since(t)
		return nil
	})
	wall := time.Since(start)
	if err != nil {
		return publishRun{}, err
	}
	for _, v := range vols {
		for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if fi, err := os.Stat(filepath.Join(v.Target, f)); err != nil || fi.Size() == 0 {
				return publishRun{}, fmt.Errorf("volume %s was published without %s: %w", v.ID, f, err)
			}
		}
	}
	slices.Sort(lat)
	return publishRun{concurrency: concurrency, latencies: lat, wall: wall}, nil
}

func unpublishAll(ctx context.Context, node csispec.NodeClient, vols []volume, concurrency int) error {
	return parallel(ctx, concurrency, len(vols), func(ctx context.Context, i int) error {
		_, err := node.NodeUnpublishVolume(ctx, &csispec.NodeUnpublishVolumeRequest{VolumeId: vols[i].ID, TargetPath: vols[i].Target})
		if err != nil {
			return fmt.Errorf("unpublishing %s: %w", vols[i].ID, err)
		}
		return nil
	})
}

// parallel calls fn for 0..n-1 with at most workers calls at once, and
// returns the first error; the others stop at the next index.
func parallel(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

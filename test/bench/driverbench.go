package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/certmint/certmint/test/stack"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// certDuration is the shortest lifetime a volume may ask for; the storm
// needs short lifetimes, and the other runs do not depend on it.
const certDuration = 10 * time.Minute

// cleanTimeout bounds the wait for the driver's background deletions.
const cleanTimeout = 30 * time.Second

// runDriverBench measures publishing, memory, API cost and the renewal
// storm on a control plane with the real controller and driver.
func runDriverBench(ctx context.Context, e *env, opts options, res *results) (err error) {
	// Renewals must not start before the storm: every certificate is due
	// dueAfter after it was issued.
	renewBefore := certDuration - opts.dueAfter

	// At rest, with its watches established.
	time.Sleep(2 * time.Second)
	if res.driverRSS.idle, err = e.Driver.RSS(); err != nil {
		return err
	}
	// The Go runtime's view of that memory, for a closer look.
	if err := e.Driver.SaveMetrics(filepath.Join(opts.logDir, "driver-metrics-idle.txt")); err != nil {
		return err
	}

	logf("creating %d pods bound to %s", opts.warmup+2*opts.volumes, e.Node)
	warm, err := createVolumes(ctx, e, "warmup", opts.warmup)
	if err != nil {
		return err
	}
	serial, err := createVolumes(ctx, e, "serial", opts.volumes)
	if err != nil {
		return err
	}
	concurrent, err := createVolumes(ctx, e, "concurrent", opts.volumes)
	if err != nil {
		return err
	}

	logf("warming up: %d publishes", len(warm))
	if _, err := publishAll(ctx, e.Driver.Node, issuerName, warm, 1, renewBefore); err != nil {
		return err
	}
	if err := unpublishAll(ctx, e.Driver.Node, warm, 1); err != nil {
		return err
	}

	logf("publishing %d volumes one at a time", len(serial))
	apiMetrics, err := newAPIServerMetrics(e.CP.Config)
	if err != nil {
		return err
	}
	serialStart, err := e.breakdownCounters(ctx, apiMetrics)
	if err != nil {
		return err
	}
	first, err := publishAll(ctx, e.Driver.Node, issuerName, serial[:100], 1, renewBefore)
	if err != nil {
		return err
	}
	if res.driverRSS.at100, err = e.Driver.RSS(); err != nil {
		return err
	}
	rest, err := publishAll(ctx, e.Driver.Node, issuerName, serial[100:], 1, renewBefore)
	if err != nil {
		return err
	}
	res.serial = merge(first, rest)
	serialEnd, err := e.breakdownCounters(ctx, apiMetrics)
	if err != nil {
		return err
	}
	res.breakdown = serialEnd.since(serialStart)
	if err := apiMetrics.save(ctx, filepath.Join(opts.logDir, "kube-apiserver-metrics-after-serial.txt")); err != nil {
		return err
	}

	// The concurrent run is the one whose API cost is counted: start it
	// with no request of the earlier runs left.
	if _, err := waitNoCSRs(ctx, e); err != nil {
		return err
	}
	before, err := apiMetrics.counts(ctx)
	if err != nil {
		return err
	}
	cpu := e.CPUTimes()
	logf("publishing %d volumes, %d at a time", len(concurrent), opts.concurrency)
	profiled := make(chan error, 1)
	if opts.profile {
		go func() {
			profiled <- apiMetrics.profile(ctx, 5*time.Second, filepath.Join(opts.logDir, "kube-apiserver.pprof"))
		}()
	} else {
		profiled <- nil
	}
	if res.concurrent, err = publishAll(ctx, e.Driver.Node, issuerName, concurrent, opts.concurrency, renewBefore); err != nil {
		return err
	}
	lastPublish := time.Now()
	if err := <-profiled; err != nil {
		return err
	}
	if res.cleanup, err = waitNoCSRs(ctx, e); err != nil {
		return err
	}
	after, err := apiMetrics.counts(ctx)
	if err != nil {
		return err
	}
	if err := apiMetrics.save(ctx, filepath.Join(opts.logDir, "kube-apiserver-metrics-after-concurrent.txt")); err != nil {
		return err
	}
	n := float64(len(concurrent))
	res.api = after.sub(before)
	res.issuances = n
	for i, after := range e.CPUTimes() {
		res.cpu[i] = (after - cpu[i]) / time.Duration(n)
	}
	res.volumes = len(serial) + len(concurrent)
	if res.driverRSS.atAll, err = e.Driver.RSS(); err != nil {
		return err
	}
	if res.controllerRSS, err = e.Controller.RSS(); err != nil {
		return err
	}

	all := append(append([]volume{}, serial...), concurrent...)
	if opts.storm {
		if res.storm, err = renewalStorm(ctx, e, len(all), lastPublish.Add(opts.dueAfter), opts.keys, res); err != nil {
			return err
		}
	}
	logf("unpublishing %d volumes", len(all))
	if err := unpublishAll(ctx, e.Driver.Node, all, opts.concurrency); err != nil {
		return err
	}
	return nil
}

func merge(a, b publishRun) publishRun {
	lat := append(append([]time.Duration{}, a.latencies...), b.latencies...)
	slices.Sort(lat)
	return publishRun{concurrency: a.concurrency, latencies: lat, wall: a.wall + b.wall}
}

// cleanup is how the requests of a run went away after it.
type cleanup struct {
	left int           // requests still there after cleanTimeout
	took time.Duration // until none was left
}

// waitNoCSRs waits until no CertificateSigningRequest is left: the driver
// deletes each one once it has its outcome, in the background.
func waitNoCSRs(ctx context.Context, e *env) (cleanup, error) {
	start := time.Now()
	for {
		list, err := e.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return cleanup{}, err
		}
		if len(list.Items) == 0 || time.Since(start) > cleanTimeout {
			return cleanup{left: len(list.Items), took: time.Since(start)}, nil
		}
		select {
		case <-ctx.Done():
			return cleanup{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unmountUnder removes every mount below dir, deepest first, so the
// directory can be removed whatever state the driver left.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && isUnder(fields[4], dir) {
			mounts = append(mounts, fields[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil {
			logf("unmounting %s: %v", mounts[i], err)
		}
	}
}

func isUnder(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// breakdown is where the time of a publish goes, as means over a run.
type breakdown struct {
	// roundTrip is from creating the request to seeing its certificate,
	// as the driver measures it.
	roundTrip time.Duration
	// apiWrites is the API server's time for the writes to requests, per
	// issuance: the driver's create, the controller's approval and
	// certificate (and the driver's delete, off the critical path).
	apiWrites time.Duration
	// sign is the controller's signing backend.
	sign time.Duration
}

type breakdownCounters struct {
	issued, roundTrip, signs, signSeconds float64
	api                                   apiCounts
}

func (e *env) breakdownCounters(ctx context.Context, m *apiServerMetrics) (breakdownCounters, error) {
	var c breakdownCounters
	var err error
	if c.issued, err = e.Driver.Metric(`certmint_driver_issuance_duration_seconds_count{result="issued"}`); err != nil {
		return c, err
	}
	if c.roundTrip, err = e.Driver.Metric(`certmint_driver_issuance_duration_seconds_sum{result="issued"}`); err != nil {
		return c, err
	}
	if c.signs, err = stack.ScrapeSum(e.ControllerMetrics, "certmint_sign_duration_seconds_count"); err != nil {
		return c, err
	}
	if c.signSeconds, err = stack.ScrapeSum(e.ControllerMetrics, "certmint_sign_duration_seconds_sum"); err != nil {
		return c, err
	}
	c.api, err = m.counts(ctx)
	return c, err
}

func (c breakdownCounters) since(start breakdownCounters) breakdown {
	n := c.issued - start.issued
	if n <= 0 {
		return breakdown{}
	}
	seconds := func(s float64) time.Duration { return time.Duration(s / n * float64(time.Second)) }
	return breakdown{
		roundTrip: seconds(c.roundTrip - start.roundTrip),
		apiWrites: seconds(c.api.csrWriteSeconds - start.api.csrWriteSeconds),
		sign:      seconds(c.signSeconds - start.signSeconds),
	}
}

package main

import (
	"context"
	"fmt"
	"time"
)

// stormTimeout bounds the renewal storm.
const stormTimeout = 5 * time.Minute

// stormResult is how the driver got through renewing every volume at once.
type stormResult struct {
	volumes int
	took    time.Duration
	// Peak rates over one second.
	peakRenewals, peakAPI float64
	failed                float64
	cleanup               cleanup
}

const (
	renewedMetric = `certmint_driver_renewals_total{result="renewed"}`
	failedMetric  = `certmint_driver_renewals_total{result="failed"}`
)

// renewalStorm makes every published volume due for renewal at once, the
// way it happens in a cluster: the driver is down (a rollout, a node
// hiccup) while its certificates fall due, and the new driver finds all of
// them due when it resumes. The volumes' certificates are due at due; the
// driver is stopped before that and started after it, and then renews with
// its default limits. Key generation is benchmarked while the driver is
// down and the machine otherwise idle.
func renewalStorm(ctx context.Context, e *env, volumes int, due time.Time, keys bool, res *results) (*stormResult, error) {
	// A renewal before the storm means the publish runs outlasted
	// -storm-due-after, and the storm would wait for volumes not due.
	if early, err := e.Driver.Metric(renewedMetric); err != nil || early > 0 {
		return nil, fmt.Errorf("renewal storm: %v volumes were renewed before the storm (%w); raise -storm-due-after", early, err)
	}
	logf("renewal storm: stopping the driver until its %d certificates are due at %s", volumes, due.Format(time.TimeOnly))
	e.Driver.Stop()
	e.Driver = nil
	if keys {
		logf("benchmarking key generation meanwhile")
		res.keys = benchmarkKeys()
	}
	// Jitter only brings renewals forward, never later than due.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Until(due.Add(2 * time.Second))):
	}
	apiMetrics, err := newAPIServerMetrics(e.CP.Config)
	if err != nil {
		return nil, err
	}
	apiStart, err := apiMetrics.counts(ctx)
	if err != nil {
		return nil, err
	}

	logf("renewal storm: starting the driver again")
	start := time.Now()
	if err := e.StartDriver(ctx, "driver-restarted.log"); err != nil {
		return nil, err
	}
	d := e.Driver

	type sample struct {
		at               time.Time
		renewed, failed  float64
		apiRequestsSoFar float64
	}
	samples := []sample{{at: start, apiRequestsSoFar: 0}}
	const every = 200 * time.Millisecond
	deadline := start.Add(stormTimeout)
	for {
		renewed, err := d.Metric(renewedMetric)
		if err != nil {
			return nil, err
		}
		failed, err := d.Metric(failedMetric)
		if err != nil {
			return nil, err
		}
		api, err := apiMetrics.counts(ctx)
		if err != nil {
			return nil, err
		}
		samples = append(samples, sample{at: time.Now(), renewed: renewed, failed: failed, apiRequestsSoFar: api.sub(apiStart).total()})
		if int(renewed) >= volumes {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("renewal storm: %d of %d volumes renewed after %s, %d failures", int(renewed), volumes, stormTimeout, int(failed))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(every):
		}
	}
	last := samples[len(samples)-1]
	r := &stormResult{volumes: volumes, took: last.at.Sub(start), failed: last.failed}
	// Peak rates over windows of at least a second.
	for i := range samples {
		for j := i + 1; j < len(samples); j++ {
			if span := samples[j].at.Sub(samples[i].at); span >= time.Second {
				r.peakRenewals = max(r.peakRenewals, (samples[j].renewed-samples[i].renewed)/span.Seconds())
				r.peakAPI = max(r.peakAPI, (samples[j].apiRequestsSoFar-samples[i].apiRequestsSoFar)/span.Seconds())
				break
			}
		}
	}
	if r.cleanup, err = waitNoCSRs(ctx, e); err != nil {
		return nil, err
	}
	return r, nil
}

package manager

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmint/certmint/pkg/csr"
)

// Metrics are the manager's Prometheus metrics.
type Metrics struct {
	issuance *prometheus.HistogramVec
	stranded prometheus.Gauge
}

// NewMetrics registers the manager's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		issuance: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "certmint",
			Subsystem: "driver",
			Name:      "issuance_duration_seconds",
			Help:      "Time from creating a CertificateSigningRequest to its outcome, by result (issued, denied, failed, timeout, error).",
			Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"result"}),
		stranded: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "certmint",
			Subsystem: "driver",
			Name:      "stranded_volumes",
			Help:      "Volumes the driver found at start but cannot renew, because their state cannot be read; each is named in the driver's /readyz and log.",
		}),
	}
	reg.MustRegister(m.issuance, m.stranded)
	return m
}

func (m *Metrics) setStranded(n int) {
	if m == nil {
		return
	}
	m.stranded.Set(float64(n))
}

func (m *Metrics) observeIssuance(err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "issued"
	var denied *csr.DeniedError
	var failed *csr.FailedError
	switch {
	case err == nil:
	case errors.As(err, &denied):
		result = "denied"
	case errors.As(err, &failed):
		result = "failed"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		result = "timeout"
	default:
		result = "error"
	}
	m.issuance.WithLabelValues(result).Observe(d.Seconds())
}

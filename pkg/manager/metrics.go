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
	}
	reg.MustRegister(m.issuance)
	return m
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

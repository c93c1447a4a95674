package renewal

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the scheduler's Prometheus metrics.
type Metrics struct {
	renewals *prometheus.CounterVec
}

const (
	resultRenewed = "renewed"
	resultFailed  = "failed"
)

// NewMetrics registers the scheduler's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "certmint",
			Subsystem: "driver",
			Name:      "renewals_total",
			Help:      "Certificate renewals by result (renewed, failed); a failed renewal is retried with backoff.",
		}, []string{"result"}),
	}
	// Both series exist from the start, so a rate of failures is zero
	// rather than missing until the first one.
	m.renewals.WithLabelValues(resultRenewed)
	m.renewals.WithLabelValues(resultFailed)
	reg.MustRegister(m.renewals)
	return m
}

func (m *Metrics) observe(result string) {
	if m == nil {
		return
	}
	m.renewals.WithLabelValues(result).Inc()
}

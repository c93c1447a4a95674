// Package metrics defines the controller's Prometheus metrics. They are
// registered with controller-runtime's registry, which the manager serves on
// /metrics.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results counted by Requests.
const (
	ResultApproved = "approved"
	ResultDenied   = "denied"
	ResultSigned   = "signed"
	ResultFailed   = "failed"
	// ResultIssued is a PodCertificateRequest's; the others are shared.
	ResultIssued = "issued"
)

var (
	// Requests counts certificate requests by signer name and result.
	Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "certmint",
		Name:      "requests_total",
		Help:      "Certificate requests handled, by signer name and result (approved, denied, signed, failed).",
	}, []string{"signer", "result"})

	// PodCertificateRequests counts the kubelet's PodCertificateRequests by
	// signer name and result.
	PodCertificateRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "certmint",
		Name:      "pod_certificate_requests_total",
		Help:      "PodCertificateRequests handled, by signer name and result (issued, denied, failed).",
	}, []string{"signer", "result"})

	// Certificates counts issuances for Certificates by signer name and
	// result.
	Certificates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "certmint",
		Name:      "certificate_issuances_total",
		Help:      "Issuances for Certificates, by signer name and result (issued, denied, failed).",
	}, []string{"signer", "result"})

	// SignDuration is how long backends take to sign, by signer name.
	SignDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "certmint",
		Name:      "sign_duration_seconds",
		Help:      "Time the issuer backend took to sign one request.",
		Buckets:   []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"signer"})

	// IssuerReady is 1 for a Ready issuer, 0 otherwise.
	IssuerReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "certmint",
		Name:      "issuer_ready",
		Help:      "Whether an issuer is Ready (1) or not (0), by signer name.",
	}, []string{"signer"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(Requests, PodCertificateRequests, Certificates, SignDuration, IssuerReady)
}

// Package metrics defines the controller's Prometheus metrics. They are
// registered with controller-runtime's registry, which the manager serves on
// /metrics. Only the leader reports them: the other replicas do no work to
// count, and a series reported by every replica would alert once for each.
//
// Labels are bounded by the objects the cluster has: a signer name per
// issuer, a result out of a fixed set, a namespace and name per
// Certificate; never one per request or per serial number.
package metrics

import (
	"crypto/x509"

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

	// IssuerCANotAfter is when the CA certificate a Ready issuer signs
	// with expires. Backends without a CA of their own (ACME) have none,
	// and an issuer that is not Ready has none: it signs with no CA.
	IssuerCANotAfter = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "certmint",
		Name:      "issuer_ca_not_after_timestamp_seconds",
		Help:      "When the CA certificate a Ready issuer signs with expires, in seconds since the epoch, by signer name; none for backends without a CA of their own (ACME).",
	}, []string{"signer"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(Requests, PodCertificateRequests, Certificates, SignDuration, IssuerReady, IssuerCANotAfter)
}

// ObserveIssuer records an issuer's readiness and, when it is Ready and
// signs with a CA of its own, when that CA expires.
func ObserveIssuer(signer string, ready bool, ca *x509.Certificate) {
	if !ready {
		IssuerReady.WithLabelValues(signer).Set(0)
		IssuerCANotAfter.DeleteLabelValues(signer)
		return
	}
	IssuerReady.WithLabelValues(signer).Set(1)
	if ca == nil {
		IssuerCANotAfter.DeleteLabelValues(signer)
		return
	}
	IssuerCANotAfter.WithLabelValues(signer).Set(float64(ca.NotAfter.Unix()))
}

// ForgetIssuer removes the series of a deleted issuer.
func ForgetIssuer(signer string) {
	IssuerReady.DeleteLabelValues(signer)
	IssuerCANotAfter.DeleteLabelValues(signer)
}

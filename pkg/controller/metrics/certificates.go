package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// The per-Certificate series, one of each per Certificate that has a
// certificate.
var (
	certificateLabels = []string{"namespace", "name", "issuer"}

	certificateNotAfterDesc = prometheus.NewDesc("certmint_certificate_not_after_timestamp_seconds",
		"When the certificate in a Certificate's Secret expires, in seconds since the epoch, by the Certificate's namespace and name and its issuer (the signer name).",
		certificateLabels, nil)
	certificateRenewalDesc = prometheus.NewDesc("certmint_certificate_renewal_timestamp_seconds",
		"When a Certificate is due for renewal, in seconds since the epoch; a renewal moves it forward, so a value in the past means the renewal is late.",
		certificateLabels, nil)
)

// listTimeout bounds the read of the cache at a scrape; it waits only while
// the cache is not filled yet.
const listTimeout = 5 * time.Second

// CertificatesOptions configure NewCertificates.
type CertificatesOptions struct {
	// Reader lists Certificates: the manager's cache. Required.
	Reader client.Reader
	// Elected is closed once this replica leads; nil means it does from
	// the start.
	Elected <-chan struct{}
	// Logger; zero discards.
	Logger logr.Logger
}

// NewCertificates returns the collector of the per-Certificate series.
//
// It reads the Certificates from the cache at each scrape rather than
// keeping gauges the Certificate controller sets and deletes: a series
// then goes with its Certificate however it goes, and the controller needs
// no code for it.
func NewCertificates(opts CertificatesOptions) (prometheus.Collector, error) {
	if opts.Reader == nil {
		return nil, errors.New("metrics: Reader is required")
	}
	return &certificates{opts: opts}, nil
}

type certificates struct {
	opts CertificatesOptions
}

func (c *certificates) Describe(ch chan<- *prometheus.Desc) {
	ch <- certificateNotAfterDesc
	ch <- certificateRenewalDesc
}

func (c *certificates) Collect(ch chan<- prometheus.Metric) {
	if c.opts.Elected != nil {
		select {
		case <-c.opts.Elected:
		default:
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	var list v1alpha1.CertificateList
	if err := c.opts.Reader.List(ctx, &list); err != nil {
		// Not an invalid metric, which would fail the whole scrape and
		// take the issuers' series with it.
		c.opts.Logger.Error(err, "listing Certificates for their metrics")
		return
	}
	for i := range list.Items {
		cert := &list.Items[i]
		if cert.Status.NotAfter == nil {
			continue
		}
		labels := []string{cert.Namespace, cert.Name, issuerOf(cert).SignerName()}
		ch <- prometheus.MustNewConstMetric(certificateNotAfterDesc, prometheus.GaugeValue, float64(cert.Status.NotAfter.Unix()), labels...)
		if cert.Status.RenewalTime != nil {
			ch <- prometheus.MustNewConstMetric(certificateRenewalDesc, prometheus.GaugeValue, float64(cert.Status.RenewalTime.Unix()), labels...)
		}
	}
}

// issuerOf is the issuer a Certificate names: a ClusterIssuer, or an Issuer
// in its namespace, the default kind.
func issuerOf(cert *v1alpha1.Certificate) request.IssuerRef {
	if cert.Spec.IssuerRef.Kind == string(request.KindClusterIssuer) {
		return request.IssuerRef{Kind: request.KindClusterIssuer, Name: cert.Spec.IssuerRef.Name}
	}
	return request.IssuerRef{Kind: request.KindIssuer, Namespace: cert.Namespace, Name: cert.Spec.IssuerRef.Name}
}

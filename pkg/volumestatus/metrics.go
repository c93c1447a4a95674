package volumestatus

import (
	"cmp"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmint/certmint/pkg/manager"
)

// The per-volume series. Their labels are bounded by the volumes the node
// holds: one series of each per volume, never one per certificate or
// request, and none left once the volume is gone.
var (
	volumeLabels = []string{"namespace", "pod", "volume", "issuer"}

	notAfterDesc = prometheus.NewDesc("certmint_driver_certificate_not_after_timestamp_seconds",
		"When the certificate of a volume expires, in seconds since the epoch, by pod namespace, pod, volume (its name in the pod spec) and issuer (the signer name).",
		volumeLabels, nil)
	renewalDesc = prometheus.NewDesc("certmint_driver_certificate_renewal_timestamp_seconds",
		"When the certificate of a volume is due for renewal, in seconds since the epoch; a renewed certificate moves it forward, so a value in the past means the renewal is late.",
		volumeLabels, nil)
)

var _ prometheus.Collector = (*Reporter)(nil)

// Describe sends the descriptions of the per-volume series.
func (r *Reporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- notAfterDesc
	ch <- renewalDesc
}

// Collect sends a volume's series for every volume the driver holds now.
//
// A collector reading the volumes at scrape time rather than gauges set on
// publish and deleted on unpublish: a volume leaves by several ways (an
// unpublish, a failed publish, garbage collection, a restart that finds it
// gone), and a gauge whose delete one of them forgot would report a
// certificate nobody holds until the driver restarts, and alert on it.
func (r *Reporter) Collect(ch chan<- prometheus.Metric) {
	vols := r.volumes.Volumes()
	// A pod recreated under the same name (a StatefulSet's) can hold a
	// volume of the same name while its predecessor's is being torn down;
	// two series with one label set would fail the whole scrape. The newer
	// certificate is the one that matters.
	slices.SortStableFunc(vols, func(a, b manager.Volume) int { return b.NotBefore.Compare(a.NotBefore) })
	seen := map[[4]string]bool{}
	for _, v := range vols {
		if v.NotAfter.IsZero() {
			continue
		}
		labels := [4]string{v.Pod.Namespace, v.Pod.Name, cmp.Or(volumeName(v.TargetPath), v.ID), ""}
		if v.Issuer.Name != "" {
			labels[3] = v.Issuer.SignerName()
		}
		if seen[labels] {
			continue
		}
		seen[labels] = true
		ch <- prometheus.MustNewConstMetric(notAfterDesc, prometheus.GaugeValue, float64(v.NotAfter.Unix()), labels[:]...)
		if !v.RenewAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(renewalDesc, prometheus.GaugeValue, float64(v.RenewAt.Unix()), labels[:]...)
		}
	}
}

// Package volumestatus tells those outside the driver what it holds: the
// per-volume expiry metrics on /metrics, and GET /volumes, a JSON list of
// the node's volumes with their certificates' names, serials, validity and
// renewal state.
//
// It keeps no state of its own: each scrape and each request reads the
// manager's volumes and the renewal scheduler's state afresh, so a volume's
// series and entry go exactly when the volume does. It knows no gRPC and
// writes nothing; it never sees a key or a token, as the manager's Volume
// holds neither.
package volumestatus

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/pkg/renewal"
)

// Volumes lists the volumes the driver holds.
type Volumes interface {
	Volumes() []manager.Volume
}

// Renewals tells where a volume stands in the renewal schedule.
type Renewals interface {
	// Status reports false for a volume that is not scheduled.
	Status(volumeID string) (renewal.Status, bool)
}

var (
	_ Volumes  = (*manager.Manager)(nil)
	_ Renewals = (*renewal.Scheduler)(nil)
)

// Options configure a Reporter.
type Options struct {
	// Volumes are the driver's volumes. Required.
	Volumes Volumes
	// Renewals is the renewal schedule; nil leaves the next attempt and
	// the last failure out of /volumes.
	Renewals Renewals
	// NodeName names the node in /volumes.
	NodeName string
}

// Reporter serves GET /volumes (it is an http.Handler) and collects the
// per-volume metrics (it is a prometheus.Collector).
type Reporter struct {
	volumes  Volumes
	renewals Renewals
	node     string
}

// New returns a Reporter.
func New(opts Options) (*Reporter, error) {
	if opts.Volumes == nil {
		return nil, errors.New("volumestatus: Volumes is required")
	}
	return &Reporter{volumes: opts.Volumes, renewals: opts.Renewals, node: opts.NodeName}, nil
}

// List is the answer to GET /volumes.
type List struct {
	// Node is the node whose driver answers.
	Node    string   `json:"node"`
	Volumes []Volume `json:"volumes"`
}

// Volume is one volume in /volumes. Times are UTC.
type Volume struct {
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	PodUID    string    `json:"podUID"`
	Volume    VolumeRef `json:"volume"`
	// Issuer is absent for a stranded volume.
	Issuer *Issuer `json:"issuer,omitempty"`
	// Certificate is absent when the volume's state cannot be read.
	Certificate *Certificate `json:"certificate,omitempty"`
	// RenewalTime is when the certificate is due for renewal: the driver
	// renews it then or a little before, unless renewing fails.
	RenewalTime *time.Time `json:"renewalTime,omitempty"`
	// NextRenewalAttempt is when the driver next starts renewing it: before
	// RenewalTime (the random spread), or after a failure its retry.
	// Absent while a renewal runs, and for a stranded volume.
	NextRenewalAttempt *time.Time `json:"nextRenewalAttempt,omitempty"`
	// Renewing: a renewal runs now.
	Renewing bool `json:"renewing,omitempty"`
	// LastRenewalError is the last renewal's failure; absent once one
	// succeeds.
	LastRenewalError *RenewalError `json:"lastRenewalError,omitempty"`
	// Stranded says why the driver does not renew this volume at all (its
	// state cannot be read); the pod must be recreated before the
	// certificate expires.
	Stranded string `json:"stranded,omitempty"`
}

// VolumeRef identifies a volume as the kubelet and the pod know it.
type VolumeRef struct {
	// ID is the CSI volume ID the kubelet chose.
	ID string `json:"id"`
	// Name is the volume's name in the pod spec, when the target path is
	// in the kubelet's layout.
	Name string `json:"name,omitempty"`
	// TargetPath is where the kubelet had the volume mounted, on the node.
	TargetPath string `json:"targetPath,omitempty"`
}

// Issuer names the Issuer or ClusterIssuer of a volume.
type Issuer struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Certificate is what a volume's current certificate says: its subject,
// subject alternative names, serial number and validity. Only the validity
// is known for a stranded volume.
type Certificate struct {
	Subject        string   `json:"subject,omitempty"`
	DNSNames       []string `json:"dnsNames,omitempty"`
	IPAddresses    []string `json:"ipAddresses,omitempty"`
	URIs           []string `json:"uris,omitempty"`
	EmailAddresses []string `json:"emailAddresses,omitempty"`
	// SerialNumber is lower-case hexadecimal, without separators.
	SerialNumber string    `json:"serialNumber,omitempty"`
	NotBefore    time.Time `json:"notBefore"`
	NotAfter     time.Time `json:"notAfter"`
}

// RenewalError is a volume's last failed renewal.
type RenewalError struct {
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
	// FailuresInARow counts the renewals failed since the last success.
	FailuresInARow int `json:"failuresInARow"`
}

// list describes the volumes that match keep, ordered by namespace, pod
// and volume.
func (r *Reporter) list(keep func(manager.Volume) bool) List {
	out := List{Node: r.node, Volumes: []Volume{}}
	for _, v := range r.volumes.Volumes() {
		if keep(v) {
			out.Volumes = append(out.Volumes, r.describe(v))
		}
	}
	slices.SortFunc(out.Volumes, func(a, b Volume) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod),
			cmp.Compare(a.Volume.Name, b.Volume.Name), cmp.Compare(a.Volume.ID, b.Volume.ID))
	})
	return out
}

func (r *Reporter) describe(v manager.Volume) Volume {
	out := Volume{
		Namespace: v.Pod.Namespace, Pod: v.Pod.Name, PodUID: v.Pod.UID,
		Volume:   VolumeRef{ID: v.ID, Name: volumeName(v.TargetPath), TargetPath: v.TargetPath},
		Stranded: v.Stranded,
	}
	if v.Issuer.Name != "" {
		out.Issuer = &Issuer{Kind: string(v.Issuer.Kind), Namespace: v.Issuer.Namespace, Name: v.Issuer.Name}
	}
	if !v.NotAfter.IsZero() {
		out.Certificate = describeCertificate(v.Certificate)
		out.Certificate.NotBefore, out.Certificate.NotAfter = v.NotBefore.UTC(), v.NotAfter.UTC()
	}
	if !v.RenewAt.IsZero() {
		out.RenewalTime = utc(v.RenewAt)
	}
	if r.renewals == nil {
		return out
	}
	st, ok := r.renewals.Status(v.ID)
	if !ok {
		return out
	}
	out.Renewing = st.Renewing
	if !st.Next.IsZero() {
		out.NextRenewalAttempt = utc(st.Next)
	}
	if st.LastError != nil {
		out.LastRenewalError = &RenewalError{Message: st.LastError.Error(), Time: st.LastFailure.UTC(), FailuresInARow: st.Failures}
	}
	return out
}

// describeCertificate is what leaf says of itself; only the validity, set
// by the caller, when leaf is nil.
func describeCertificate(leaf *x509.Certificate) *Certificate {
	if leaf == nil {
		return &Certificate{}
	}
	c := &Certificate{
		Subject:        leaf.Subject.String(),
		DNSNames:       leaf.DNSNames,
		EmailAddresses: leaf.EmailAddresses,
		SerialNumber:   fmt.Sprintf("%x", leaf.SerialNumber),
	}
	for _, ip := range leaf.IPAddresses {
		c.IPAddresses = append(c.IPAddresses, ip.String())
	}
	for _, u := range leaf.URIs {
		c.URIs = append(c.URIs, u.String())
	}
	return c
}

func utc(t time.Time) *time.Time {
	t = t.UTC()
	return &t
}

// volumeName is the pod spec's name of the volume mounted at target, from
// the kubelet's layout <root>/pods/<uid>/volumes/kubernetes.io~csi/<name>/mount;
// empty for a target outside it.
func volumeName(target string) string {
	dir, base := filepath.Split(filepath.Clean(target))
	if base != "mount" {
		return ""
	}
	plugin, name := filepath.Split(strings.TrimSuffix(dir, "/"))
	if filepath.Base(plugin) != "kubernetes.io~csi" {
		return ""
	}
	return name
}

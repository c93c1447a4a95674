package kubectlcertmint

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/request"
)

// InspectOptions choose the pod to inspect.
type InspectOptions struct {
	Namespace, Pod string
	// CertmintNamespace is where the driver's pods run.
	CertmintNamespace string
}

// InspectReport is what the driver on a pod's node holds of its certmint
// volumes.
type InspectReport struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	PodUID    string `json:"podUID"`
	Node      string `json:"node,omitempty"`
	// DriverPod is the driver pod that answered, namespace/name.
	DriverPod string         `json:"driverPod,omitempty"`
	Volumes   []VolumeReport `json:"volumes"`
}

// VolumeReport is one certmint volume of the pod.
type VolumeReport struct {
	// Name is the volume's name in the pod spec.
	Name string `json:"name"`
	// Issuer is the issuer the driver renews it from; the pod spec's when
	// the driver does not hold the volume.
	Issuer      *Issuer      `json:"issuer,omitempty"`
	Certificate *Certificate `json:"certificate,omitempty"`
	// RenewalTime is when the certificate is due for renewal, and
	// NextRenewalAttempt when the driver next starts renewing it.
	RenewalTime        *time.Time    `json:"renewalTime,omitempty"`
	NextRenewalAttempt *time.Time    `json:"nextRenewalAttempt,omitempty"`
	Renewing           bool          `json:"renewing,omitempty"`
	LastRenewalError   *RenewalError `json:"lastRenewalError,omitempty"`
	Stranded           string        `json:"stranded,omitempty"`
	// Problem says why the volume needs attention; empty when it does not.
	Problem string `json:"problem,omitempty"`
}

func (r *InspectReport) healthy() bool {
	for _, v := range r.Volumes {
		if v.Problem != "" {
			return false
		}
	}
	return true
}

func (r *InspectReport) writeTable(t *textWriter) {
	where := "not scheduled to a node"
	if r.Node != "" {
		where = "on node " + r.Node
		if r.DriverPod != "" {
			where += ", driver pod " + r.DriverPod
		}
	}
	t.printf("Pod %s/%s (%s) %s\n\n", r.Namespace, r.Pod, r.PodUID, where)
	t.row("VOLUME", "ISSUER", "SUBJECT", "SANS", "SERIAL", "NOT AFTER", "NEXT RENEWAL", "STATUS")
	for _, v := range r.Volumes {
		issuer, subject, sans, serial, notAfter := "-", "-", "-", "-", "-"
		if v.Issuer != nil {
			issuer = v.Issuer.String()
		}
		if c := v.Certificate; c != nil {
			subject = orDash(c.Subject)
			sans = orDash(strings.Join(sansOf(c), ","))
			serial = orDash(c.SerialNumber)
			notAfter = c.NotAfter.Format(time.RFC3339)
		}
		t.row(v.Name, issuer, subject, sans, serial, notAfter, nextRenewal(v), volumeStatus(v))
	}
}

// sansOf lists a certificate's subject alternative names, each kind in
// the order the certificate has them.
func sansOf(c *Certificate) []string {
	var out []string
	for _, n := range c.DNSNames {
		out = append(out, "DNS:"+n)
	}
	for _, n := range c.IPAddresses {
		out = append(out, "IP:"+n)
	}
	for _, n := range c.URIs {
		out = append(out, "URI:"+n)
	}
	for _, n := range c.EmailAddresses {
		out = append(out, "email:"+n)
	}
	return out
}

func nextRenewal(v VolumeReport) string {
	switch {
	case v.Renewing:
		return "renewing now"
	case v.NextRenewalAttempt != nil:
		return v.NextRenewalAttempt.Format(time.RFC3339)
	case v.RenewalTime != nil:
		return v.RenewalTime.Format(time.RFC3339)
	}
	return "-"
}

func volumeStatus(v VolumeReport) string {
	if v.Problem != "" {
		return v.Problem
	}
	return "OK"
}

// Inspect asks the driver on the pod's node what it holds of the pod's
// certmint volumes: the driver reads them from its own records, which hold
// no key, and the answer comes through the API server's pod proxy.
func Inspect(ctx context.Context, env *Env, opts InspectOptions) (*InspectReport, error) {
	pod, err := env.Kube.CoreV1().Pods(opts.Namespace).Get(ctx, opts.Pod, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading pod %s/%s: %w", opts.Namespace, opts.Pod, err)
	}
	volumes := certmintVolumes(pod)
	if len(volumes) == 0 {
		return nil, fmt.Errorf("pod %s/%s has no %s volume", opts.Namespace, opts.Pod, request.DriverName)
	}
	report := &InspectReport{Namespace: pod.Namespace, Pod: pod.Name, PodUID: string(pod.UID), Node: pod.Spec.NodeName}
	if pod.Spec.NodeName == "" {
		for _, v := range volumes {
			report.Volumes = append(report.Volumes, VolumeReport{Name: v.name, Issuer: v.specIssuer(), Problem: "the pod is not scheduled to a node yet"})
		}
		return report, nil
	}
	namespace := opts.CertmintNamespace
	if namespace == "" {
		namespace = DefaultCertmintNamespace
	}
	driver, err := driverPod(ctx, env.Kube, namespace, pod.Spec.NodeName)
	if err != nil {
		return nil, err
	}
	report.DriverPod = driver.Namespace + "/" + driver.Name
	held, err := volumesOf(ctx, env.Kube, driver, pod.Namespace, pod.Name)
	if err != nil {
		return nil, err
	}
	report.Volumes = matchVolumes(pod, volumes, held.Volumes, env.clock().Now())
	return report, nil
}

// matchVolumes reports each certmint volume of pod with what the driver
// holds of it. The driver's entries for an earlier pod of the same name
// (another UID) are not this pod's.
func matchVolumes(pod *corev1.Pod, volumes []podVolume, held []driverVolume, now time.Time) []VolumeReport {
	byName := map[string]driverVolume{}
	for _, h := range held {
		if h.PodUID == string(pod.UID) {
			byName[h.Volume.Name] = h
		}
	}
	out := make([]VolumeReport, 0, len(volumes))
	for _, v := range volumes {
		h, ok := byName[v.name]
		if !ok {
			out = append(out, VolumeReport{Name: v.name, Issuer: v.specIssuer(), Problem: notHeld(pod)})
			continue
		}
		r := VolumeReport{
			Name: v.name, Issuer: h.Issuer, Certificate: h.Certificate,
			RenewalTime: h.RenewalTime, NextRenewalAttempt: h.NextRenewalAttempt, Renewing: h.Renewing,
			LastRenewalError: h.LastRenewalError, Stranded: h.Stranded,
		}
		switch {
		case h.Stranded != "":
			r.Problem = "stranded, not renewed: " + h.Stranded
		case h.Certificate != nil && !now.Before(h.Certificate.NotAfter):
			r.Problem = "the certificate has expired"
		case h.LastRenewalError != nil:
			r.Problem = fmt.Sprintf("renewal failed (%d in a row, last at %s): %s",
				h.LastRenewalError.FailuresInARow, h.LastRenewalError.Time.Format(time.RFC3339), h.LastRenewalError.Message)
		}
		out = append(out, r)
	}
	return out
}

// notHeld says why the driver may hold no volume of pod.
func notHeld(pod *corev1.Pod) string {
	if pod.Status.Phase == corev1.PodPending {
		return "the driver holds no such volume: the pod is Pending, its volume not published yet (kubectl describe pod shows why)"
	}
	return "the driver on the pod's node holds no such volume"
}

// podVolume is a certmint volume of a pod spec.
type podVolume struct {
	name   string
	issuer request.IssuerRef
}

func (v podVolume) specIssuer() *Issuer {
	if v.issuer.Name == "" {
		return nil
	}
	i := issuerOf(v.issuer)
	return &i
}

// certmintVolumes lists the pod's inline certmint volumes and the issuer
// each names, as the driver reads its attributes: an Issuer of the pod's
// namespace unless the kind says ClusterIssuer.
func certmintVolumes(pod *corev1.Pod) []podVolume {
	var out []podVolume
	for _, v := range pod.Spec.Volumes {
		if v.CSI == nil || v.CSI.Driver != request.DriverName {
			continue
		}
		ref := request.IssuerRef{Kind: request.KindIssuer, Namespace: pod.Namespace, Name: v.CSI.VolumeAttributes[attributes.IssuerName]}
		if request.IssuerKind(v.CSI.VolumeAttributes[attributes.IssuerKind]) == request.KindClusterIssuer {
			ref = request.IssuerRef{Kind: request.KindClusterIssuer, Name: ref.Name}
		}
		out = append(out, podVolume{name: v.Name, issuer: ref})
	}
	return out
}

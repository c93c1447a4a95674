package policy

import (
	"slices"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/request"
)

// Reasons a PodCertificateRequest is denied besides those it shares with
// the driver's requests.
const (
	ReasonServiceAccountMismatch = "ServiceAccountMismatch"
	ReasonNotMounted             = "PodCertificateNotMounted"
)

// PodCertificateSource is a PodCertificateRequest the kubelet made for a
// podCertificate projection, with the live objects it names.
type PodCertificateSource struct {
	PCR *certificatesv1.PodCertificateRequest
	// Pod is the live pod spec.podName names, nil if it does not exist.
	Pod *corev1.Pod
	// NodeUID and ServiceAccountUID are the UIDs of the live node and
	// ServiceAccount the request names; empty when they do not exist.
	NodeUID           types.UID
	ServiceAccountUID types.UID
}

// BindPodCertificate is node binding for PodCertificateRequests. The API
// server's NodeRestriction admission checks a node's request against the
// pod, its node and its ServiceAccount when the request is created; this
// checks the same against the live objects when it is signed, since the
// request does not record who created it (anyone granted create on
// podcertificaterequests is checked by nobody else) and the pod may have
// gone since. The pod must exist with the request's UID on the request's
// node, whose UID must match too; must be neither finished nor being
// deleted, nor a mirror pod; must run as the request's ServiceAccount, by
// name and UID; and must mount a podCertificate projection for the
// request's signer. It returns the binding, or a denial.
func BindPodCertificate(in PodCertificateSource) (Binding, Decision, bool) {
	spec := in.PCR.Spec
	ns, name, uid, node := in.PCR.Namespace, spec.PodName, string(spec.PodUID), string(spec.NodeName)
	if err := request.ValidatePodReference(ns, name, uid); err != nil {
		return Binding{}, deny(ReasonInvalidPodRef, "the request names no pod that can exist: %v", err), false
	}
	if d, ok := checkLivePod(in.Pod, ns, name, uid, node, "the request is for node"); !ok {
		return Binding{}, d, false
	}
	pod := in.Pod
	switch {
	case in.NodeUID == "":
		return Binding{}, deny(ReasonNodeMismatch, "node %q the request is for does not exist", node), false
	case in.NodeUID != spec.NodeUID:
		return Binding{}, deny(ReasonNodeMismatch, "node %q has UID %s but the request is for UID %s; the node was replaced", node, in.NodeUID, spec.NodeUID), false
	case pod.Spec.ServiceAccountName != spec.ServiceAccountName:
		return Binding{}, deny(ReasonServiceAccountMismatch, "pod %s/%s runs as ServiceAccount %q but the request is for %q", ns, name, pod.Spec.ServiceAccountName, spec.ServiceAccountName), false
	case in.ServiceAccountUID == "":
		return Binding{}, deny(ReasonServiceAccountMismatch, "ServiceAccount %s/%s does not exist", ns, spec.ServiceAccountName), false
	case in.ServiceAccountUID != spec.ServiceAccountUID:
		return Binding{}, deny(ReasonServiceAccountMismatch, "ServiceAccount %s/%s has UID %s but the request is for UID %s; it was replaced", ns, spec.ServiceAccountName, in.ServiceAccountUID, spec.ServiceAccountUID), false
	case !MountsPodCertificate(pod, spec.SignerName):
		return Binding{}, deny(ReasonNotMounted, "pod %s/%s has no podCertificate projection for signer %s; only a pod that asks for this signer in its spec gets its certificates", ns, name, spec.SignerName), false
	}
	return Binding{Namespace: ns, Pod: pod}, Decision{}, true
}

// MountsPodCertificate reports whether pod has a podCertificate projection
// for signerName.
func MountsPodCertificate(pod *corev1.Pod, signerName string) bool {
	return slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool {
			return s.PodCertificate != nil && s.PodCertificate.SignerName == signerName
		})
	})
}

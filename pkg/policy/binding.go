package policy

import (
	"fmt"
	"slices"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/request"
)

// Binding is who a request is for, as its source established it from what
// the API server vouches for, never from what the request claims: the
// namespace, and the pod for a request made for a pod.
type Binding struct {
	Namespace string
	// Pod is the live pod the certificate is for; nil for a request that
	// is for no pod.
	Pod *corev1.Pod
	// NodePodCIDRs are the spec.podCIDRs of the pod's node, for a policy
	// that certifies only pod addresses within them; nil when its source
	// did not look them up, or the node has none.
	NodePodCIDRs []string
}

func (b Binding) String() string {
	if b.Pod != nil {
		return fmt.Sprintf("pod %s/%s on node %s", b.Pod.Namespace, b.Pod.Name, b.Pod.Spec.NodeName)
	}
	return "namespace " + b.Namespace
}

// templateValues are the values of the templates for b: a template of
// the pod's (${POD_NAME}, ${SERVICE_ACCOUNT_NAME}) is empty for a binding
// without a pod, which leaves out the patterns that use it.
func (b Binding) templateValues(clusterDomain, trustDomain string) map[string]string {
	values := map[string]string{
		TemplatePodNamespace:  b.Namespace,
		TemplateClusterDomain: clusterDomain,
		TemplateTrustDomain:   trustDomain,
	}
	if b.Pod != nil {
		values[TemplatePodName] = b.Pod.Name
		values[TemplateServiceAccountName] = b.Pod.Spec.ServiceAccountName
	}
	return values
}

// CSRSource is a CertificateSigningRequest from the CSI driver, with what
// the API server knows of it.
type CSRSource struct {
	// DriverUsername is the only requester approved, e.g.
	// system:serviceaccount:certmint:certmint-driver.
	DriverUsername string
	// DriverNamespace is where the driver's pods run.
	DriverNamespace string
	// DriverDaemonSet is the DaemonSet (in DriverNamespace) that must
	// control the requesting driver pod, and DriverDaemonSetUID the UID of
	// the live one; empty when it does not exist.
	DriverDaemonSet    string
	DriverDaemonSetUID types.UID

	// CSR is the request as the API server stored it.
	CSR *certificatesv1.CertificateSigningRequest
	// Pod is the pod the request names, nil if it does not exist.
	Pod *corev1.Pod
	// DriverPod is the pod the requester's token is bound to, nil if it does
	// not exist.
	DriverPod *corev1.Pod
	// NodePodCIDRs are the spec.podCIDRs of Pod's node, looked up for a
	// request whose issuer certifies only pod addresses within them.
	NodePodCIDRs []string
}

// BindCSR is node binding for the CSI driver's requests: the request comes
// from the driver's ServiceAccount with a pod-bound token; that driver pod
// is its live DaemonSet's, runs on the node the token names and is not
// being deleted; the pod the request is for exists with the named UID, runs
// on that same node, has neither terminated nor is being deleted, is no
// mirror pod and has a ServiceAccount. It returns the binding, or a denial.
func BindCSR(in CSRSource) (Binding, Decision, bool) {
	if d, ok := checkRequester(in); !ok {
		return Binding{}, d, false
	}
	if d, ok := checkPod(in); !ok {
		return Binding{}, d, false
	}
	return Binding{Namespace: in.Pod.Namespace, Pod: in.Pod, NodePodCIDRs: in.NodePodCIDRs}, Decision{}, true
}

func extraValue(csr *certificatesv1.CertificateSigningRequest, key string) string {
	if v := csr.Spec.Extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// checkRequester is node binding's first half: who asked, from which node.
func checkRequester(in CSRSource) (Decision, bool) {
	csr := in.CSR
	if csr.Spec.Username != in.DriverUsername {
		return deny(ReasonNotDriver, "only the certmint driver (%s) may request certificates from %s; this request came from %s",
			in.DriverUsername, csr.Spec.SignerName, csr.Spec.Username), false
	}
	node := extraValue(csr, request.ExtraNodeName)
	podName, podUID := extraValue(csr, request.ExtraPodName), extraValue(csr, request.ExtraPodUID)
	if node == "" || podName == "" || podUID == "" {
		return deny(ReasonNotPodBound, "the request was not made with a pod-bound ServiceAccount token, so the API server recorded no node for it; run the driver as a pod of its DaemonSet"), false
	}
	dp := in.DriverPod
	switch {
	case dp == nil:
		return deny(ReasonDriverPodMismatch, "the requesting driver pod %s/%s no longer exists", in.DriverNamespace, podName), false
	case string(dp.UID) != podUID:
		return deny(ReasonDriverPodMismatch, "the requesting driver pod %s/%s has been replaced (UID %s, token for %s)", in.DriverNamespace, podName, dp.UID, podUID), false
	case dp.Spec.NodeName != node:
		return deny(ReasonDriverPodMismatch, "the requesting driver pod %s/%s runs on node %q, not %q as its token says", in.DriverNamespace, podName, dp.Spec.NodeName, node), false
	case dp.DeletionTimestamp != nil:
		return deny(ReasonDriverPodMismatch, "the requesting driver pod %s/%s is being deleted", in.DriverNamespace, podName), false
	case !controlledByDaemonSet(dp, in.DriverDaemonSet, in.DriverDaemonSetUID):
		// The ServiceAccount alone is not enough: anyone who may create pods
		// in the driver's namespace could run one as it, on any node.
		return deny(ReasonNotDriver, "the requesting pod %s/%s runs as the driver's ServiceAccount but is not a pod of DaemonSet %s/%s%s", in.DriverNamespace, podName, in.DriverNamespace, in.DriverDaemonSet, missingDaemonSet(in.DriverDaemonSetUID)), false
	}
	return Decision{}, true
}

// controlledByDaemonSet reports whether pod's controller is the live apps/v1
// DaemonSet name, whose UID is uid. Anyone who may create pods in the
// driver's namespace can write an owner reference naming the DaemonSet; only
// its UID, which the API server chose, ties the pod to the DaemonSet that
// exists.
func controlledByDaemonSet(pod *corev1.Pod, name string, uid types.UID) bool {
	ref := metav1.GetControllerOfNoCopy(pod)
	return uid != "" && ref != nil && ref.APIVersion == "apps/v1" && ref.Kind == "DaemonSet" && ref.Name == name && ref.UID == uid
}

func missingDaemonSet(uid types.UID) string {
	if uid == "" {
		return " (that DaemonSet does not exist)"
	}
	return ""
}

// checkPod is node binding's second half: the pod is real and on that node.
func checkPod(in CSRSource) (Decision, bool) {
	csr := in.CSR
	node := extraValue(csr, request.ExtraNodeName)
	ns, name, uid := PodReference(csr)
	if ns == "" || name == "" || uid == "" {
		return deny(ReasonMissingPodRef, "the request does not name its pod (annotations %s and %s, label %s)",
			request.AnnotationPodNamespace, request.AnnotationPodName, request.LabelPodUID), false
	}
	if err := request.ValidatePodReference(ns, name, uid); err != nil {
		return deny(ReasonInvalidPodRef, "the request names no pod that can exist: %v", err), false
	}
	if claimed := csr.Labels[request.LabelNode]; claimed != "" && claimed != node {
		return deny(ReasonNodeMismatch, "the request is labelled for node %q but came from the driver on node %q", claimed, node), false
	}
	return checkLivePod(in.Pod, ns, name, uid, node, "the request came from the driver on node")
}

// checkLivePod checks that pod, the live pod namespace/name, is the one a
// request names by uid, runs on node (from origin, which says how the API
// server knows of that node), is neither finished nor being deleted, is no
// mirror pod and has a ServiceAccount.
func checkLivePod(pod *corev1.Pod, ns, name, uid, node, origin string) (Decision, bool) {
	switch {
	case pod == nil || pod.Namespace != ns || pod.Name != name:
		return deny(ReasonPodNotFound, "pod %s/%s does not exist", ns, name), false
	case string(pod.UID) != uid:
		return deny(ReasonPodUIDMismatch, "pod %s/%s has UID %s but the request is for UID %s; the pod was replaced", ns, name, pod.UID, uid), false
	case pod.Spec.NodeName != node:
		return deny(ReasonNodeMismatch, "pod %s/%s is on node %q but %s %q", ns, name, pod.Spec.NodeName, origin, node), false
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return deny(ReasonPodTerminated, "pod %s/%s has terminated (phase %s)", ns, name, pod.Status.Phase), false
	case pod.DeletionTimestamp != nil:
		// A pod being deleted will not use a new certificate, and its name
		// may soon belong to a replacement.
		return deny(ReasonPodTerminated, "pod %s/%s is being deleted", ns, name), false
	case isMirrorPod(pod):
		// A node may create mirror pods of any name in any namespace, so
		// their names prove nothing; Kubernetes gives them no identity, and
		// neither does certmint.
		return deny(ReasonMirrorPod, "pod %s/%s is the mirror of a static pod; static pods get no identity, since a node may name them as it likes: run the workload as a regular pod", ns, name), false
	case pod.Spec.ServiceAccountName == "":
		return deny(ReasonNoServiceAccount, "pod %s/%s has no ServiceAccount, so it has no identity to certify", ns, name), false
	}
	return Decision{}, true
}

// PodReference returns the pod a request names, as its labels and
// annotations claim it.
func PodReference(csr *certificatesv1.CertificateSigningRequest) (namespace, name, uid string) {
	return csr.Annotations[request.AnnotationPodNamespace], csr.Annotations[request.AnnotationPodName], csr.Labels[request.LabelPodUID]
}

// isMirrorPod reports whether pod is the API server's mirror of a static
// pod: the kubelet marks those with an annotation and makes its Node their
// owner.
func isMirrorPod(pod *corev1.Pod) bool {
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return true
	}
	return slices.ContainsFunc(pod.OwnerReferences, func(r metav1.OwnerReference) bool {
		return r.Kind == "Node" && r.APIVersion == "v1"
	})
}

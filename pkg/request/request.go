// Package request is the contract between the node driver and the controller:
// the driver and signer names, and how a certmint CertificateSigningRequest
// names the pod, volume and node it was made for.
//
// The labels and annotations are claims made by the requester. The controller
// trusts none of them on their own: it checks them against what the API server
// stamped on the request (spec.username and spec.extra) and against the Pod.
package request

import (
	"fmt"
	"strings"
)

// DriverName is the CSI driver name pods put in their inline volumes.
const DriverName = "csi.certmint.io"

// Labels let the driver on one node watch only its own requests and let the
// controller and users select certmint requests.
const (
	// LabelManagedBy is set to DriverName on every request the driver creates.
	LabelManagedBy = "certmint.io/managed-by"
	// LabelNode names the node whose driver created the request.
	LabelNode = "certmint.io/node"
	// LabelPodUID is the UID of the pod the certificate is for.
	LabelPodUID = "certmint.io/pod-uid"
)

// Annotations carry values that do not fit label syntax.
const (
	AnnotationPodName      = "certmint.io/pod-name"
	AnnotationPodNamespace = "certmint.io/pod-namespace"
	// AnnotationVolumeID is the CSI volume ID the kubelet gave the volume.
	AnnotationVolumeID = "certmint.io/volume-id"
	// AnnotationPodIPs says that the volume asks for its pod's addresses
	// as IP SANs: PodIPsPrimary or PodIPsAll. A volume's first request is
	// made before its pod has an address and names none; this lets the
	// controller refuse it at once when the issuer would never certify
	// them, rather than refuse every re-issue that names them later. Like
	// every claim here it can only lead to a denial, never widen anything.
	AnnotationPodIPs = "certmint.io/pod-ips"
)

// The values of AnnotationPodIPs.
const (
	// PodIPsPrimary: the pod's primary address (status.podIP).
	PodIPsPrimary = "primary"
	// PodIPsAll: every address of the pod (status.podIPs).
	PodIPsAll = "all"
)

// Extra keys the API server stamps on a request made with a pod-bound
// ServiceAccount token; the requester cannot set them.
const (
	ExtraNodeName = "authentication.kubernetes.io/node-name"
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
)

// IssuerKind is the kind of issuer a signer name addresses.
type IssuerKind string

// The kinds of issuer.
const (
	KindIssuer        IssuerKind = "Issuer"
	KindClusterIssuer IssuerKind = "ClusterIssuer"
)

const (
	issuerSignerDomain        = "issuers.certmint.io"
	clusterIssuerSignerDomain = "clusterissuers.certmint.io"
)

// IssuerRef names an Issuer (Namespace set) or a ClusterIssuer (Namespace empty).
type IssuerRef struct {
	Kind      IssuerKind
	Namespace string
	Name      string
}

// SignerName returns the signer name requests for this issuer are addressed to:
// issuers.certmint.io/<namespace>.<name> or clusterissuers.certmint.io/<name>.
func (r IssuerRef) SignerName() string {
	if r.Kind == KindClusterIssuer {
		return clusterIssuerSignerDomain + "/" + r.Name
	}
	return issuerSignerDomain + "/" + r.Namespace + "." + r.Name
}

func (r IssuerRef) String() string {
	if r.Kind == KindClusterIssuer {
		return "ClusterIssuer " + r.Name
	}
	return "Issuer " + r.Namespace + "/" + r.Name
}

// ParseSignerName is the inverse of IssuerRef.SignerName. It reports false for
// signer names that are not certmint's, so callers can ignore those requests.
// Namespace names cannot contain dots, so the first dot ends the namespace.
func ParseSignerName(signerName string) (IssuerRef, bool) {
	domain, rest, ok := strings.Cut(signerName, "/")
	if !ok || rest == "" {
		return IssuerRef{}, false
	}
	switch domain {
	case clusterIssuerSignerDomain:
		return IssuerRef{Kind: KindClusterIssuer, Name: rest}, true
	case issuerSignerDomain:
		ns, name, ok := strings.Cut(rest, ".")
		if !ok || ns == "" || name == "" {
			return IssuerRef{}, false
		}
		return IssuerRef{Kind: KindIssuer, Namespace: ns, Name: name}, true
	}
	return IssuerRef{}, false
}

// ParseIssuerKind accepts the values of the issuer-kind volume attribute.
func ParseIssuerKind(s string) (IssuerKind, error) {
	switch IssuerKind(s) {
	case KindIssuer, KindClusterIssuer:
		return IssuerKind(s), nil
	}
	return "", fmt.Errorf("must be %q or %q, not %q", KindIssuer, KindClusterIssuer, s)
}

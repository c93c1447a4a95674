// Package policy decides whether a certmint certificate request may be
// issued, in two parts, both pure: the caller gathers the request, the pods
// and the issuer's policy, and gets back an approval or a denial a user can
// act on.
//
//   - Binding establishes who asks, and for whom: which namespace and which
//     pod, from facts the API server vouches for. Each source of requests
//     has its own (BindCSR for the CSI driver's CertificateSigningRequests).
//   - Allow applies the issuer's policy to a neutral description of what is
//     asked for (an issuer.Request), for that binding.
//
// Decide is both, for a CertificateSigningRequest from the driver.
package policy

import (
	"crypto/x509"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

// Defaults for issuers whose policy leaves an aspect out.
const (
	DefaultMaxDuration = 30 * 24 * time.Hour
	// DefaultDuration is used when a request sets no expirationSeconds,
	// shortened to the maximum when that is lower.
	DefaultDuration = 24 * time.Hour
)

// Templates usable in DNS and URI patterns.
const (
	TemplatePodName            = "${POD_NAME}"
	TemplatePodNamespace       = "${POD_NAMESPACE}"
	TemplateServiceAccountName = "${SERVICE_ACCOUNT_NAME}"
	TemplateClusterDomain      = "${CLUSTER_DOMAIN}"
	TemplateTrustDomain        = "${TRUST_DOMAIN}"
)

// DefaultDNSNames are the DNS patterns allowed when a policy sets none: the
// Service-style names of the pod and of its ServiceAccount, in the pod's
// namespace under the cluster's service domain. Every one names the
// namespace and ends in .svc (or .svc.<cluster domain>), so two tenants'
// pods of one name never share a name, and a namespace named like a
// top-level domain ("com") gives nobody a real-looking domain name. Bare
// labels and names outside the service domain need a policy that lists
// them.
var DefaultDNSNames = []string{
	TemplatePodName + "." + TemplatePodNamespace + ".svc",
	TemplatePodName + "." + TemplatePodNamespace + ".svc." + TemplateClusterDomain,
	TemplateServiceAccountName + "." + TemplatePodNamespace + ".svc",
	TemplateServiceAccountName + "." + TemplatePodNamespace + ".svc." + TemplateClusterDomain,
}

// DefaultURIs are the URI patterns allowed when a policy sets none: the
// pod's SPIFFE ID.
var DefaultURIs = []string{
	"spiffe://" + TemplateTrustDomain + "/ns/" + TemplatePodNamespace + "/sa/" + TemplateServiceAccountName,
}

// DefaultKeyTypes are the keys allowed when a policy sets none.
var DefaultKeyTypes = []v1alpha1.KeyType{
	{Algorithm: v1alpha1.KeyAlgorithmECDSA},
	{Algorithm: v1alpha1.KeyAlgorithmRSA},
	{Algorithm: v1alpha1.KeyAlgorithmEd25519},
}

// AllowedUsages are the only key usages a pod certificate may have: enough
// for TLS servers and clients.
var AllowedUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageSigning,
	certificatesv1.UsageDigitalSignature,
	certificatesv1.UsageKeyEncipherment,
	certificatesv1.UsageKeyAgreement,
	certificatesv1.UsageServerAuth,
	certificatesv1.UsageClientAuth,
}

// CAUsages are allowed besides AllowedUsages when the policy allows CA
// certificates.
var CAUsages = []certificatesv1.KeyUsage{certificatesv1.UsageCertSign, certificatesv1.UsageCRLSign}

// Reasons a request is denied, set as the reason of the Denied condition and
// of the Event on the pod.
const (
	ReasonNotDriver          = "RequesterNotDriver"
	ReasonNotPodBound        = "RequestNotPodBound"
	ReasonDriverPodMismatch  = "DriverPodMismatch"
	ReasonMissingPodRef      = "MissingPodReference"
	ReasonPodNotFound        = "PodNotFound"
	ReasonPodUIDMismatch     = "PodUIDMismatch"
	ReasonNodeMismatch       = "NodeMismatch"
	ReasonPodTerminated      = "PodTerminated"
	ReasonMirrorPod          = "MirrorPod"
	ReasonNoServiceAccount   = "NoServiceAccount"
	ReasonInvalidPodRef      = "InvalidPodReference"
	ReasonWrongNamespace     = "IssuerInOtherNamespace"
	ReasonInvalidRequest     = "InvalidRequest"
	ReasonCANotAllowed       = "CANotAllowed"
	ReasonUsageNotAllowed    = "UsageNotAllowed"
	ReasonKeyTypeNotAllowed  = "KeyTypeNotAllowed"
	ReasonDurationTooLong    = "DurationTooLong"
	ReasonNoIdentity         = "NoIdentity"
	ReasonNameNotAllowed     = "NameNotAllowed"
	ReasonIPAddressForbidden = "IPAddressNotAllowed"
	ReasonEmailForbidden     = "EmailNotAllowed"
	ReasonSubjectNotAllowed  = "SubjectNotAllowed"
)

// ReasonApproved is the reason of the Approved condition.
const ReasonApproved = "CertmintPolicy"

// Input is everything the decision on a CertificateSigningRequest from the
// CSI driver depends on.
type Input struct {
	CSRSource
	// ClusterDomain and TrustDomain fill ${CLUSTER_DOMAIN} and
	// ${TRUST_DOMAIN}.
	ClusterDomain string
	TrustDomain   string

	// Issuer is the issuer the request is addressed to.
	Issuer request.IssuerRef
	// Policy is the issuer's policy block; nil means the defaults.
	Policy *v1alpha1.Policy
	// Request is CSR's spec.request, parsed and its signature checked; nil
	// when it is not a valid one.
	Request *x509.CertificateRequest
}

// Decision is the outcome of Decide.
type Decision struct {
	Allowed bool
	// Reason (CamelCase) and Message (what to do about it) explain a denial,
	// and Part says which part of the request it is about, for sources that
	// point at the field a user wrote it in; empty for a denial of who asks.
	Reason  string
	Message string
	Part    Part
	// Duration is the certificate lifetime to issue when Allowed.
	Duration time.Duration
}

// Part is a part of a request a denial is about.
type Part string

// The parts of a request.
const (
	PartIssuer         Part = "issuer"
	PartIsCA           Part = "isCA"
	PartUsages         Part = "usages"
	PartDuration       Part = "duration"
	PartKey            Part = "key"
	PartIdentity       Part = "identity"
	PartCommonName     Part = "commonName"
	PartSubject        Part = "subject"
	PartDNSNames       Part = "dnsNames"
	PartURIs           Part = "uris"
	PartIPAddresses    Part = "ipAddresses"
	PartEmailAddresses Part = "emailAddresses"
)

func deny(reason, format string, args ...any) Decision {
	return Decision{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// in says which part of the request d is about.
func (d Decision) in(p Part) Decision {
	d.Part = p
	return d
}

// Decide binds a request of the CSI driver and applies the issuer's policy
// to it.
func Decide(in Input) Decision {
	b, d, ok := BindCSR(in.CSRSource)
	if !ok {
		return d
	}
	if in.Request == nil {
		return deny(ReasonInvalidRequest, "spec.request is not a valid PEM certificate request")
	}
	return Allow(Allowed{
		Issuer: in.Issuer, Policy: in.Policy, ClusterDomain: in.ClusterDomain, TrustDomain: in.TrustDomain,
		Binding: b, Request: CSRRequest(in.CSR, in.Request), AsksForPodIPs: in.CSR.Annotations[request.AnnotationPodIPs] != "",
	})
}

// CSRRequest describes what a CertificateSigningRequest asks for: its X.509
// request req, the usages and the lifetime its spec asks for.
func CSRRequest(csr *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest) *issuer.Request {
	var duration time.Duration
	if s := csr.Spec.ExpirationSeconds; s != nil {
		duration = time.Duration(*s) * time.Second
	}
	return issuer.RequestFromCSR(req, csr.Spec.Usages, duration)
}

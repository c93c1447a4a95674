// Package policy decides whether a certmint certificate request may be
// approved. Decide is pure: the caller gathers the request, the pods and the
// issuer's policy, and gets back an approval or a denial a user can act on.
//
// The rules are, in order: the request comes from the driver's
// ServiceAccount with a pod-bound token; that driver pod is its DaemonSet's,
// runs on the node the token names and is not being deleted; the pod the
// request is for exists with the named UID, runs on that same node and has
// neither terminated nor is being deleted; a namespaced Issuer serves only
// its own namespace; and the certificate asked for (subject, names,
// lifetime, usages, CA flag, key) is within the issuer's policy for that pod.
package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
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

// Input is everything a decision depends on.
type Input struct {
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
	// ClusterDomain and TrustDomain fill ${CLUSTER_DOMAIN} and ${TRUST_DOMAIN}.
	ClusterDomain string
	TrustDomain   string

	// Issuer is the issuer the request is addressed to.
	Issuer request.IssuerRef
	// Policy is the issuer's policy block; nil means the defaults.
	Policy *v1alpha1.Policy

	// CSR is the request as the API server stored it.
	CSR *certificatesv1.CertificateSigningRequest
	// Request is CSR's spec.request, parsed and its signature checked.
	Request *x509.CertificateRequest

	// Pod is the pod the request names, nil if it does not exist.
	Pod *corev1.Pod
	// DriverPod is the pod the requester's token is bound to, nil if it does
	// not exist.
	DriverPod *corev1.Pod
}

// Decision is the outcome of Decide.
type Decision struct {
	Allowed bool
	// Reason (CamelCase) and Message (what to do about it) explain a denial.
	Reason  string
	Message string
	// Duration is the certificate lifetime to issue when Allowed.
	Duration time.Duration
}

func deny(reason, format string, args ...any) Decision {
	return Decision{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Decide applies the rules in the package documentation to in.
func Decide(in Input) Decision {
	if d, ok := checkRequester(in); !ok {
		return d
	}
	if d, ok := checkPod(in); !ok {
		return d
	}
	return checkCertificate(in)
}

func extraValue(csr *certificatesv1.CertificateSigningRequest, key string) string {
	if v := csr.Spec.Extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// checkRequester is node binding's first half: who asked, from which node.
func checkRequester(in Input) (Decision, bool) {
	csr := in.CSR
	if csr.Spec.Username != in.DriverUsername {
		return deny(ReasonNotDriver, "only the certmint driver (%s) may request certificates from %s; this request came from %s",
			in.DriverUsername, in.Issuer, csr.Spec.Username), false
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
func checkPod(in Input) (Decision, bool) {
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
	pod := in.Pod
	switch {
	case pod == nil || pod.Namespace != ns || pod.Name != name:
		return deny(ReasonPodNotFound, "pod %s/%s does not exist", ns, name), false
	case string(pod.UID) != uid:
		return deny(ReasonPodUIDMismatch, "pod %s/%s has UID %s but the request is for UID %s; the pod was replaced", ns, name, pod.UID, uid), false
	case pod.Spec.NodeName != node:
		return deny(ReasonNodeMismatch, "pod %s/%s is on node %q but the request came from the driver on node %q", ns, name, pod.Spec.NodeName, node), false
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
	case in.Issuer.Kind == request.KindIssuer && in.Issuer.Namespace != ns:
		return deny(ReasonWrongNamespace, "%s issues only for pods in namespace %s; pod %s/%s should use an Issuer in its own namespace or a ClusterIssuer", in.Issuer, in.Issuer.Namespace, ns, name), false
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

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// checkCertificate is the issuer policy: what the certificate may say.
func checkCertificate(in Input) Decision {
	req, pol := in.Request, in.Policy
	if pol == nil {
		pol = &v1alpha1.Policy{}
	}
	if req == nil {
		return deny(ReasonInvalidRequest, "spec.request is not a valid PEM certificate request")
	}

	if RequestsCA(req) && !pol.AllowCA {
		return deny(ReasonCANotAllowed, "the request asks for a CA certificate, which %s does not allow (policy.allowCA)", in.Issuer)
	}
	allowedUsages := AllowedUsages
	if pol.AllowCA {
		allowedUsages = slices.Concat(AllowedUsages, CAUsages)
	}
	for _, u := range in.CSR.Spec.Usages {
		if slices.Contains(CAUsages, u) && !pol.AllowCA {
			return deny(ReasonCANotAllowed, "usage %q is for CA certificates, which %s does not allow (policy.allowCA)", u, in.Issuer)
		}
		if !slices.Contains(allowedUsages, u) {
			return deny(ReasonUsageNotAllowed, "usage %q is not allowed; allowed usages are %s", u, joinUsages(allowedUsages))
		}
	}

	if d, ok := checkKey(req, pol); !ok {
		return d
	}

	maxDuration, duration := MaxDuration(pol), requestedDuration(in.CSR, pol)
	if duration > maxDuration {
		return deny(ReasonDurationTooLong, "the requested duration %s is longer than %s allows (%s); ask for %s or less", duration, in.Issuer, maxDuration, maxDuration)
	}

	if len(req.IPAddresses) > 0 {
		ips := make([]string, len(req.IPAddresses))
		for i, ip := range req.IPAddresses {
			ips[i] = ip.String()
		}
		return deny(ReasonIPAddressForbidden, "IP address SANs (%s) are not allowed: a pod's IP is not known when its volume is mounted; use DNS names", strings.Join(ips, ", "))
	}
	if len(req.EmailAddresses) > 0 {
		return deny(ReasonEmailForbidden, "email address SANs (%s) are not allowed", request.QuoteAll(req.EmailAddresses))
	}
	if d, ok := checkSubject(req); !ok {
		return d
	}
	if req.Subject.CommonName == "" && len(req.DNSNames) == 0 && len(req.URIs) == 0 {
		return deny(ReasonNoIdentity, "the request names no identity: set a common name, DNS names or URIs")
	}

	values := templateValues(in)
	dnsRaw := orDefault(pol.AllowedDNSNames, DefaultDNSNames)
	dnsPatterns := expandDNS(dnsRaw, values)
	uriPatterns := expand(orDefault(pol.AllowedURIs, DefaultURIs), values)
	dnsAllowed := func(n string) bool {
		n = strings.ToLower(n)
		if isLocalhost(n) {
			// Resolves to the verifier itself wherever it is checked, so
			// only a policy that names it outright grants it.
			return slices.Contains(dnsRaw, n)
		}
		return matchAny(dnsPatterns, n, dnsLabelChar)
	}
	for _, n := range req.DNSNames {
		if !isDNSName(n) {
			return deny(ReasonNameNotAllowed, "DNS name %s is not a valid DNS name (RFC 1123, optionally with a leading *.)", request.Quote(n))
		}
		if !dnsAllowed(n) {
			return deny(ReasonNameNotAllowed, "DNS name %s is not allowed for pod %s/%s; allowed: %s", request.Quote(n), in.Pod.Namespace, in.Pod.Name, listOrNone(dnsPatterns))
		}
	}
	for _, u := range req.URIs {
		// Matched as the certificate will spell it. A query, fragment,
		// user info or %-escape passes only where the pattern has it
		// literally, since '*' never matches '?', '#', '@' or '%'.
		if !matchAny(uriPatterns, u.String(), uriWildcardChar) {
			return deny(ReasonNameNotAllowed, "URI %s is not allowed for pod %s/%s; allowed: %s", request.Quote(u.String()), in.Pod.Namespace, in.Pod.Name, listOrNone(uriPatterns))
		}
	}
	if cn := req.Subject.CommonName; cn != "" &&
		!(isDNSName(cn) && dnsAllowed(cn)) &&
		!matchAny(uriPatterns, cn, uriWildcardChar) {
		return deny(ReasonNameNotAllowed, "common name %s is not allowed for pod %s/%s; it must be an allowed DNS name or URI", request.Quote(cn), in.Pod.Namespace, in.Pod.Name)
	}
	return Decision{Allowed: true, Reason: ReasonApproved, Message: fmt.Sprintf("pod %s/%s on node %s", in.Pod.Namespace, in.Pod.Name, in.Pod.Spec.NodeName), Duration: duration}
}

var (
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// checkSubject guards the subject attributes the name checks cannot see.
// The certificate copies the request's subject verbatim, but
// req.Subject.CommonName is only the last CN: with several, the others would
// be issued unchecked. An emailAddress attribute is an email identity by the
// back door, which the SAN rules forbid. Every value is bounded as X.509
// bounds it, so no request makes a certificate (or a message quoting it)
// of any size it likes.
func checkSubject(req *x509.CertificateRequest) (Decision, bool) {
	if n := len(req.Subject.Names); n > request.MaxSubjectAttributes {
		return deny(ReasonSubjectNotAllowed, "the subject has %d attributes; at most %d are allowed", n, request.MaxSubjectAttributes), false
	}
	commonNames := 0
	for _, atv := range req.Subject.Names {
		value, ok := atv.Value.(string)
		if !ok {
			return deny(ReasonSubjectNotAllowed, "the subject attribute %s is not a string", atv.Type), false
		}
		if err := request.CheckSubjectValue(atv.Type, value); err != nil {
			return deny(ReasonSubjectNotAllowed, "the subject's %v", err), false
		}
		switch {
		case atv.Type.Equal(oidCommonName):
			commonNames++
		case atv.Type.Equal(oidEmailAddress):
			return deny(ReasonEmailForbidden, "the subject has an emailAddress attribute (%s), which is not allowed", request.Quote(value)), false
		}
	}
	if commonNames > 1 {
		return deny(ReasonSubjectNotAllowed, "the subject has %d common names; a certificate may have one (put further names in DNS names)", commonNames), false
	}
	return Decision{}, true
}

// RequestsCA reports whether req asks for a CA certificate: a
// basicConstraints extension with CA set, or one that does not parse (which
// is treated as the worst case).
func RequestsCA(req *x509.CertificateRequest) bool {
	for _, ext := range req.Extensions {
		if !ext.Id.Equal(oidBasicConstraints) {
			continue
		}
		var bc struct {
			IsCA bool `asn1:"optional"`
		}
		if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil || bc.IsCA {
			return true
		}
	}
	return false
}

// MaxDuration is the longest lifetime pol allows.
func MaxDuration(pol *v1alpha1.Policy) time.Duration {
	if pol != nil && pol.MaxDuration != nil {
		return pol.MaxDuration.Duration
	}
	return DefaultMaxDuration
}

func requestedDuration(csr *certificatesv1.CertificateSigningRequest, pol *v1alpha1.Policy) time.Duration {
	if s := csr.Spec.ExpirationSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return min(DefaultDuration, MaxDuration(pol))
}

// Duration is the lifetime to issue for csr under pol: what it asks for, or
// the default, never more than pol's maximum. Requests approved by someone
// else (kubectl certificate approve) are signed with it, so an approval
// cannot lift the issuer's maximum.
func Duration(csr *certificatesv1.CertificateSigningRequest, pol *v1alpha1.Policy) time.Duration {
	return min(requestedDuration(csr, pol), MaxDuration(pol))
}

func checkKey(req *x509.CertificateRequest, pol *v1alpha1.Policy) (Decision, bool) {
	var alg v1alpha1.KeyAlgorithm
	var size int
	switch k := req.PublicKey.(type) {
	case *ecdsa.PublicKey:
		alg, size = v1alpha1.KeyAlgorithmECDSA, k.Curve.Params().BitSize
	case *rsa.PublicKey:
		alg, size = v1alpha1.KeyAlgorithmRSA, k.N.BitLen()
	case ed25519.PublicKey:
		alg = v1alpha1.KeyAlgorithmEd25519
	default:
		return deny(ReasonKeyTypeNotAllowed, "the request's public key (%T) is of an unsupported type", req.PublicKey), false
	}
	allowed := pol.AllowedKeyTypes
	if len(allowed) == 0 {
		allowed = DefaultKeyTypes
	}
	var names []string
	for _, kt := range allowed {
		minSize := 0
		switch {
		case kt.MinSize != nil:
			minSize = int(*kt.MinSize)
		case kt.Algorithm == v1alpha1.KeyAlgorithmECDSA:
			minSize = 256
		case kt.Algorithm == v1alpha1.KeyAlgorithmRSA:
			minSize = 2048
		}
		if kt.Algorithm == alg && size >= minSize {
			return Decision{}, true
		}
		if minSize > 0 {
			names = append(names, fmt.Sprintf("%s (%d bits or more)", kt.Algorithm, minSize))
		} else {
			names = append(names, string(kt.Algorithm))
		}
	}
	got := string(alg)
	if size > 0 {
		got = fmt.Sprintf("%s %d", alg, size)
	}
	return deny(ReasonKeyTypeNotAllowed, "key %s is not allowed; allowed: %s", got, strings.Join(names, ", ")), false
}

// templateValues are the values of the templates for the request's pod.
func templateValues(in Input) map[string]string {
	return map[string]string{
		TemplatePodName:            in.Pod.Name,
		TemplatePodNamespace:       in.Pod.Namespace,
		TemplateServiceAccountName: in.Pod.Spec.ServiceAccountName,
		TemplateClusterDomain:      in.ClusterDomain,
		TemplateTrustDomain:        in.TrustDomain,
	}
}

// orDefault returns set unless it is nil; an empty non-nil list is a policy
// that allows nothing.
func orDefault(set, def []string) []string {
	if set == nil {
		return def
	}
	return set
}

// templates are the templates patterns may use.
var templates = []string{TemplatePodName, TemplatePodNamespace, TemplateServiceAccountName, TemplateClusterDomain, TemplateTrustDomain}

// expand fills in the templates of patterns, leaving out every pattern that
// uses a template whose value is empty: an empty value would leave a name
// with an empty label or an empty path segment, which names nothing the
// policy author meant.
func expand(patterns []string, values map[string]string) []string {
	pairs := make([]string, 0, 2*len(templates))
	for _, t := range templates {
		pairs = append(pairs, t, values[t])
	}
	replacer := strings.NewReplacer(pairs...)
	out := make([]string, 0, len(patterns))
	for _, p := range patterns {
		if slices.ContainsFunc(templates, func(t string) bool { return strings.Contains(p, t) && values[t] == "" }) {
			continue
		}
		out = append(out, replacer.Replace(p))
	}
	return out
}

// singleLabelTemplates are the templates whose values the pod's author
// chooses. Each may fill exactly one DNS label: a pod named
// "api.prod.svc" must not get that name through ${POD_NAME}.
var singleLabelTemplates = []string{TemplatePodName, TemplateServiceAccountName}

// expandDNS expands DNS patterns, leaving out every pattern in which a
// pod-chosen value would span more than one label.
func expandDNS(patterns []string, values map[string]string) []string {
	kept := slices.DeleteFunc(slices.Clone(patterns), func(p string) bool {
		return slices.ContainsFunc(singleLabelTemplates, func(t string) bool {
			return strings.Contains(p, t) && strings.Contains(values[t], ".")
		})
	})
	return expand(kept, values)
}

// isLocalhost reports whether the lower-case DNS name name is localhost or a
// name under it (RFC 6761).
func isLocalhost(name string) bool {
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// isDNSName reports whether name is a DNS name a certificate may carry: an
// RFC 1123 subdomain, or one with a leading "*." label. Anything else (NUL
// bytes, ports, slashes) could read differently to different verifiers.
func isDNSName(name string) bool {
	name = strings.ToLower(name)
	if strings.HasPrefix(name, "*.") {
		return len(validation.IsWildcardDNS1123Subdomain(name)) == 0
	}
	return len(validation.IsDNS1123Subdomain(name)) == 0
}

// dnsLabelChar is what '*' may match in a DNS pattern: anything within one
// label. The name was validated before, so that is [a-z0-9-] (and '*').
func dnsLabelChar(c byte) bool { return c != '.' }

// uriWildcardChar is what '*' may match in a URI pattern: RFC 3986
// unreserved characters. So it stays within one path segment, never decodes
// to another character (no '%'), and never reaches into a query, fragment
// or user info.
func uriWildcardChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func matchAny(patterns []string, s string, wildcardChar func(byte) bool) bool {
	for _, p := range patterns {
		if glob(p, s, wildcardChar) {
			return true
		}
	}
	return false
}

// glob reports whether s matches pattern, where '*' matches one or more
// characters for which wildcardChar holds, but never exactly "." or ".."
// (a path segment that means "this" or "the parent" to whoever resolves
// it). Template values never contain '*', so after expansion every '*' is
// the policy author's.
func glob(pattern, s string, wildcardChar func(byte) bool) bool {
	for len(pattern) > 0 {
		if pattern[0] != '*' {
			if len(s) == 0 || s[0] != pattern[0] {
				return false
			}
			pattern, s = pattern[1:], s[1:]
			continue
		}
		pattern = pattern[1:]
		for i := 1; i <= len(s) && wildcardChar(s[i-1]); i++ {
			if m := s[:i]; m == "." || m == ".." {
				continue
			}
			if glob(pattern, s[i:], wildcardChar) {
				return true
			}
		}
		return false
	}
	return len(s) == 0
}

func joinUsages(us []certificatesv1.KeyUsage) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = string(u)
	}
	return strings.Join(s, ", ")
}

func listOrNone(patterns []string) string {
	if len(patterns) == 0 {
		return "none (the issuer's policy allows no names of this kind)"
	}
	return strings.Join(patterns, ", ")
}

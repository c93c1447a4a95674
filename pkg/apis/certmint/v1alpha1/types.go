package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Issuer signs certificates for pods in its own namespace's requests addressed
// to issuers.certmint.io/<namespace>.<name>.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=certmint
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// The rule sits on spec rather than the object so that Issuers stored
	// before it existed can still have their status and metadata written.
	// +kubebuilder:validation:XValidation:rule="!has(self.acme)",message="acme is available only on ClusterIssuers: an HTTP-01 challenge answered through the controller's shared solver proves only that a name reaches the cluster, not which namespace controls it, so an Issuer's owner could get a certificate for another tenant's name"
	Spec   IssuerSpec   `json:"spec"`
	Status IssuerStatus `json:"status,omitempty"`
}

// IssuerList is a list of Issuers.
//
// +kubebuilder:object:root=true
type IssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Issuer `json:"items"`
}

// ClusterIssuer signs certificates for requests from any namespace addressed
// to clusterissuers.certmint.io/<name>. Secrets it refers to live in the
// controller's cluster resource namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=certmint
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IssuerSpec   `json:"spec"`
	Status IssuerStatus `json:"status,omitempty"`
}

// ClusterIssuerList is a list of ClusterIssuers.
//
// +kubebuilder:object:root=true
type ClusterIssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterIssuer `json:"items"`
}

// IssuerSpec chooses exactly one backend and, optionally, a policy.
//
// +kubebuilder:validation:XValidation:rule="[has(self.selfSigned), has(self.ca), has(self.acme), has(self.vault)].filter(x, x).size() == 1",message="exactly one of selfSigned, ca, acme or vault must be set"
type IssuerSpec struct {
	// SelfSigned makes the controller generate and keep a root CA of its own
	// for this issuer.
	// +optional
	SelfSigned *SelfSignedIssuer `json:"selfSigned,omitempty"`

	// CA signs with a CA key pair kept in a Secret.
	// +optional
	CA *CAIssuer `json:"ca,omitempty"`

	// ACME gets certificates from an ACME (RFC 8555) server such as Let's
	// Encrypt, proving control of each DNS name with the HTTP-01 challenge
	// the controller answers itself. ClusterIssuers only: the challenge
	// proves that a name reaches the cluster, not which namespace owns it.
	// +optional
	ACME *ACMEIssuer `json:"acme,omitempty"`

	// Vault signs with a role of a HashiCorp Vault PKI secrets engine.
	// +optional
	Vault *VaultIssuer `json:"vault,omitempty"`

	// Policy widens or narrows what pods may ask this issuer for. Without it
	// the default policy applies; see docs/policy.md.
	// +optional
	Policy *Policy `json:"policy,omitempty"`
}

// SelfSignedIssuer has no settings: the controller generates an ECDSA P-256
// root CA and keeps it in a Secret in its cluster resource namespace.
type SelfSignedIssuer struct{}

// CAIssuer signs with the key pair in a kubernetes.io/tls Secret.
type CAIssuer struct {
	// SecretName names a kubernetes.io/tls Secret holding the CA certificate
	// (tls.crt, the CA first, then any intermediates up to the root) and its
	// private key (tls.key). An optional ca.crt is published as the trust
	// bundle. For an Issuer the Secret is in the Issuer's namespace; for a
	// ClusterIssuer it is in the controller's cluster resource namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid Secret name"
	SecretName string `json:"secretName"`
}

// ACMEIssuer is an account on an ACME server and how to solve its
// challenges. ACME certificates carry DNS names only; the lifetime asked
// for is the order's notAfter, which the server may honour.
//
// +kubebuilder:validation:XValidation:rule="has(self.solvers) != has(self.solver)",message="set solvers (or, in issuers written before it, solver), not both"
type ACMEIssuer struct {
	// Server is the URL of the ACME server's directory, e.g.
	// https://acme-v02.api.letsencrypt.org/directory.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https'",message="must be an https URL"
	Server string `json:"server"`

	// Email is the account's contact address, for the server's notices.
	// +optional
	// +kubebuilder:validation:MaxLength=254
	// +kubebuilder:validation:XValidation:rule="self.matches('^[^@ :/]+@[^@ :/]+$')",message="must be an email address"
	Email string `json:"email,omitempty"`

	// AccountKeySecretName names the Secret in the controller's cluster
	// resource namespace whose tls.key holds the account's private key
	// (PEM). The controller generates an ECDSA P-256 key into it when it is
	// missing.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid Secret name"
	AccountKeySecretName string `json:"accountKeySecretName"`

	// CABundle is the PEM of the CA certificates to trust for the ACME
	// server's TLS; without it the system's roots are used.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	CABundle string `json:"caBundle,omitempty"`

	// TrustBundle is the PEM of the root certificates the ACME server's
	// chains lead to. ACME servers leave the root out of the chain, so the
	// controller publishes this as the issuer's status.trustBundle and
	// checks every issued chain against it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	TrustBundle string `json:"trustBundle"`

	// ExternalAccountBinding binds the account to one the CA knows already,
	// as CAs that require it do (RFC 8555, section 7.3.4). Used only when
	// the account is registered.
	// +optional
	ExternalAccountBinding *ACMEExternalAccountBinding `json:"externalAccountBinding,omitempty"`

	// PreferredChain picks, among the chains the server offers for a
	// certificate, the first whose top certificate is issued by a CA of
	// this common name (e.g. "ISRG Root X1"); the server's default chain
	// when none is.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	PreferredChain string `json:"preferredChain,omitempty"`

	// Solvers prove control of the DNS names. Each name is solved by the
	// solver whose selector matches it most closely: a listed name before
	// the longest matching zone before a solver without selector; the
	// first in the list on a tie. A wildcard name needs a dns01 solver.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Solvers []ACMESolver `json:"solvers,omitempty"`

	// Solver is the one solver of issuers written before solvers existed;
	// it is read as solvers with this one entry. Deprecated: use solvers.
	// +optional
	Solver *ACMESolver `json:"solver,omitempty"`
}

// SolverList is the issuer's solvers: solvers, or the deprecated solver.
func (a *ACMEIssuer) SolverList() []ACMESolver {
	if len(a.Solvers) > 0 || a.Solver == nil {
		return a.Solvers
	}
	return []ACMESolver{*a.Solver}
}

// ACMEExternalAccountBinding is the CA's key identifier and MAC key for
// the account.
type ACMEExternalAccountBinding struct {
	// KeyID is the key identifier the CA gave.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	KeyID string `json:"keyID"`
	// KeySecretRef names the key of a Secret in the cluster resource
	// namespace that holds the MAC key, base64url-encoded as CAs hand it
	// out.
	KeySecretRef IssuerSecretKeySelector `json:"keySecretRef"`
}

// ACMESolver is one way to prove control of DNS names, for the names its
// selector matches.
//
// +kubebuilder:validation:XValidation:rule="[has(self.http01), has(self.dns01)].filter(x, x).size() == 1",message="exactly one of http01 or dns01 must be set"
type ACMESolver struct {
	// Selector limits the solver to some names; without it, it solves any
	// name no other solver selects.
	// +optional
	Selector *ACMESolverSelector `json:"selector,omitempty"`

	// HTTP01 answers HTTP-01 challenges from the controller's solver
	// Service: http://<name>/.well-known/acme-challenge/ of every DNS name
	// must reach it, through a route of the user's or one the controller
	// keeps (ingress).
	// +optional
	HTTP01 *ACMEHTTP01Solver `json:"http01,omitempty"`

	// DNS01 answers DNS-01 challenges with TXT records in the names'
	// authoritative DNS, the only way to certify wildcard names and names
	// the ACME server cannot reach.
	// +optional
	DNS01 *ACMEDNS01Solver `json:"dns01,omitempty"`
}

// ACMESolverSelector selects DNS names.
type ACMESolverSelector struct {
	// DNSNames are names this solver solves, as written in requests (a
	// wildcard name with its "*.").
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	DNSNames []string `json:"dnsNames,omitempty"`
	// DNSZones are zones this solver solves every name in, at any depth,
	// the zone's own name included.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	DNSZones []string `json:"dnsZones,omitempty"`
}

// ACMEDNS01Solver chooses how TXT records are written.
type ACMEDNS01Solver struct {
	// RFC2136 writes them by dynamic update (RFC 2136) signed with a TSIG
	// key, which BIND, Knot, PowerDNS and others accept.
	RFC2136 *ACMERFC2136 `json:"rfc2136"`
}

// ACMERFC2136 is an authoritative nameserver that takes dynamic updates.
type ACMERFC2136 struct {
	// Nameserver is the primary nameserver of the names' zone, host or
	// host:port (53 by default). The controller updates it, and waits until
	// it answers the record before the ACME server is told to look.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=261
	Nameserver string `json:"nameserver"`
	// TSIGKeyName is the name of the TSIG key the nameserver takes updates
	// signed with.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	TSIGKeyName string `json:"tsigKeyName"`
	// TSIGAlgorithm is the key's algorithm: hmac-sha256 (the default),
	// hmac-sha384, hmac-sha512 or hmac-sha1.
	// +optional
	// +kubebuilder:validation:Enum=hmac-sha256;hmac-sha384;hmac-sha512;hmac-sha1
	TSIGAlgorithm string `json:"tsigAlgorithm,omitempty"`
	// TSIGSecretRef names the key of a Secret in the cluster resource
	// namespace that holds the TSIG key's secret, base64-encoded as
	// tsig-keygen prints it.
	TSIGSecretRef IssuerSecretKeySelector `json:"tsigSecretRef"`
}

// ACMEHTTP01Solver says how the ACME server's validation requests reach
// the controller, which serves the challenges on its
// --acme-http01-address behind its solver Service.
type ACMEHTTP01Solver struct {
	// Ingress makes the controller route each challenge through an Ingress
	// controller: while a challenge is pending it keeps an Ingress in its
	// own namespace that sends exactly
	// http://<name>/.well-known/acme-challenge/<token> to the solver
	// Service, and it tells the ACME server to validate only once that URL
	// answers. Without it, routing that path to the Service is up to you.
	// +optional
	Ingress *ACMEHTTP01Ingress `json:"ingress,omitempty"`
}

// ACMEHTTP01Ingress is the Ingress that routes challenges.
type ACMEHTTP01Ingress struct {
	// IngressClassName is the class of the challenge Ingresses, the one of
	// the Ingress controller that serves the names. Unset, the cluster's
	// default IngressClass serves them.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	IngressClassName *string `json:"ingressClassName,omitempty"`
}

// Policy is what pods may ask an issuer for. Each field that is set replaces
// the default for that aspect; fields left out keep the default.
type Policy struct {
	// AllowedDNSNames are patterns for the DNS names (and a DNS-like common
	// name) a certificate may carry. A pattern may use ${POD_NAME},
	// ${POD_NAMESPACE}, ${SERVICE_ACCOUNT_NAME} and ${CLUSTER_DOMAIN}, which
	// take the requesting pod's values, and '*', which matches one or more characters
	// within one DNS label. An empty list allows no DNS names.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(p, p.replace('${POD_NAME}', 'a').replace('${POD_NAMESPACE}', 'a').replace('${SERVICE_ACCOUNT_NAME}', 'a').replace('${CLUSTER_DOMAIN}', 'a').replace('*', 'a').matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))",message="each pattern must be a lower-case DNS name; labels may contain '*' and the templates ${POD_NAME}, ${POD_NAMESPACE}, ${SERVICE_ACCOUNT_NAME}, ${CLUSTER_DOMAIN}"
	AllowedDNSNames []string `json:"allowedDNSNames,omitempty"`

	// AllowedURIs are patterns for the URI SANs (including SPIFFE IDs) a
	// certificate may carry. The templates of AllowedDNSNames apply, plus
	// ${TRUST_DOMAIN}; '*' matches one or more characters within one path segment.
	// An empty list allows no URIs.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.all(p, isURL(p.replace('${POD_NAME}', 'a').replace('${POD_NAMESPACE}', 'a').replace('${SERVICE_ACCOUNT_NAME}', 'a').replace('${CLUSTER_DOMAIN}', 'a').replace('${TRUST_DOMAIN}', 'a').replace('*', 'a')))",message="each pattern must be an absolute URI; it may contain '*' and the templates ${POD_NAME}, ${POD_NAMESPACE}, ${SERVICE_ACCOUNT_NAME}, ${CLUSTER_DOMAIN}, ${TRUST_DOMAIN}"
	AllowedURIs []string `json:"allowedURIs,omitempty"`

	// MaxDuration is the longest certificate lifetime a pod may ask for, at
	// least 10m. The default is 720h (30 days).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10m')",message="must be at least 10m"
	MaxDuration *metav1.Duration `json:"maxDuration,omitempty"`

	// AllowCA lets pods ask for CA certificates (the volume's is-ca
	// attribute). They are issued with a path length of zero, so they can
	// sign leaf certificates only. Defaults to false.
	// +optional
	AllowCA bool `json:"allowCA,omitempty"`

	// AllowedKeyTypes are the public key algorithms (and minimum sizes) a
	// request may use. The default allows ECDSA P-256 and larger, RSA of
	// 2048 bits and larger, and Ed25519.
	// +optional
	// +listType=map
	// +listMapKey=algorithm
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	AllowedKeyTypes []KeyType `json:"allowedKeyTypes,omitempty"`

	// PodIPs lets pods have their own IP addresses as IP SANs (the ip-sans
	// attribute's ${POD_IP} and ${POD_IPS}), as the pod's status has them
	// when the request is judged. Without it no IP SAN is issued.
	// +optional
	PodIPs *PodIPPolicy `json:"podIPs,omitempty"`
}

// PodIPPolicy says which of a pod's own addresses may be certified. A pod's
// addresses are written into its status by its node, so a compromised node
// could claim any address for its pods: these bounds are what stops it.
type PodIPPolicy struct {
	// CIDRs are the ranges an address must lie in: the cluster's pod
	// network, such as 10.244.0.0/16 (and its IPv6 range in a dual-stack
	// cluster). A /0 is refused: it bounds nothing.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c) && cidr(c).prefixLength() > 0)",message="each must be a CIDR narrower than /0, such as 10.244.0.0/16"
	CIDRs []string `json:"cidrs"`

	// WithinNodePodCIDRs also requires an address to lie in the
	// spec.podCIDRs of the pod's node, which kube-controller-manager assigns
	// and nobody can change once set: a node then cannot have another
	// node's pod addresses certified. Set it only where the network plugin
	// gives pods their addresses from their node's podCIDRs; a pod on a node
	// without podCIDRs then gets no IP SAN. Defaults to false.
	// +optional
	WithinNodePodCIDRs bool `json:"withinNodePodCIDRs,omitempty"`
}

// KeyAlgorithm is a public key algorithm.
// +kubebuilder:validation:Enum=ECDSA;RSA;Ed25519
type KeyAlgorithm string

// The key algorithms a policy may allow.
const (
	KeyAlgorithmECDSA   KeyAlgorithm = "ECDSA"
	KeyAlgorithmRSA     KeyAlgorithm = "RSA"
	KeyAlgorithmEd25519 KeyAlgorithm = "Ed25519"
)

// KeyType is an allowed key algorithm.
//
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'Ed25519' || !has(self.minSize)",message="Ed25519 keys have a fixed size; remove minSize"
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'RSA' || !has(self.minSize) || self.minSize >= 2048",message="RSA keys must be at least 2048 bits"
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'ECDSA' || !has(self.minSize) || self.minSize in [256, 384, 521]",message="ECDSA minSize must be 256, 384 or 521"
type KeyType struct {
	Algorithm KeyAlgorithm `json:"algorithm"`
	// MinSize is the smallest key size in bits: the curve size for ECDSA,
	// the modulus size for RSA. Defaults to 256 for ECDSA and 2048 for RSA.
	// +optional
	// +kubebuilder:validation:Maximum=16384
	MinSize *int32 `json:"minSize,omitempty"`
}

// IssuerStatus is what the controller last observed about an issuer.
type IssuerStatus struct {
	// Conditions holds Ready: True when the issuer can sign; otherwise its
	// reason and message say what to fix.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// TrustBundle is the PEM of the CA certificates a relying party should
	// trust for certificates from this issuer.
	// +optional
	TrustBundle string `json:"trustBundle,omitempty"`

	// ReissueBefore asks drivers to replace early every certificate whose
	// request was created before this time. The controller sets it when the
	// issuer's CA or what it would sign changes; drivers spread the
	// re-issuance over a short window and keep to their rate limit.
	// +optional
	ReissueBefore *metav1.Time `json:"reissueBefore,omitempty"`

	// Signing records what the issuer last signed with, so the controller
	// tells a change that alters the certificates it issues from a no-op
	// update or its own restart.
	// +optional
	Signing *SigningState `json:"signing,omitempty"`

	// RetiringCAs are CA certificates the issuer no longer signs with but
	// that stay in the trust bundle until no certificate they signed can
	// still be valid.
	// +optional
	// +listType=atomic
	RetiringCAs []RetiringCA `json:"retiringCAs,omitempty"`
}

// SigningState identifies the CA and the settings an issuer signs with.
type SigningState struct {
	// CAFingerprint is the hex SHA-256 fingerprint of the CA certificate
	// that signs or, for a backend without a CA of its own, "bundle:" and
	// that of the trust bundle its chains lead to.
	CAFingerprint string `json:"caFingerprint"`
	// ConfigHash is a hash of the parts of the spec other than the CA that
	// shape issued certificates: the backend kind and the policy.
	ConfigHash string `json:"configHash"`
	// MaxDuration is the longest lifetime a certificate signed by this CA
	// may have: the largest maximum duration the policy allowed since the
	// CA began signing, or the bound of a backend that chooses lifetimes
	// itself (an ACME server).
	MaxDuration metav1.Duration `json:"maxDuration"`
	// IssuedLifetime is, for a backend that chooses lifetimes itself, the
	// longest lifetime a certificate it issued was seen to have since the
	// CA began signing: a CA it stops chaining to stays trusted that long
	// rather than MaxDuration. Unset when not known.
	// +optional
	IssuedLifetime *metav1.Duration `json:"issuedLifetime,omitempty"`
}

// RetiringCA is a CA certificate kept in the trust bundle after a rotation.
type RetiringCA struct {
	// Certificate is the PEM of the CA certificate.
	Certificate string `json:"certificate"`
	// Until is when it leaves the trust bundle: when the last certificate
	// it can have signed expires, or when it expires itself if that is
	// sooner.
	Until metav1.Time `json:"until"`
}

// ConditionReady is the condition type that says whether an issuer can sign.
const ConditionReady = "Ready"

// Reasons for the Ready condition.
const (
	ReasonReady          = "Ready"
	ReasonSecretNotFound = "SecretNotFound"
	ReasonInvalidSecret  = "InvalidSecret"
	// ReasonSecretNotUsable: the Secret was generated for another issuer.
	ReasonSecretNotUsable = "SecretNotUsable"
	ReasonNotCA           = "NotCA"
	ReasonKeyMismatch     = "KeyMismatch"
	ReasonCANotYetValid   = "CANotYetValid"
	ReasonCAExpired       = "CAExpired"
	ReasonError           = "Error"
)

// GenericIssuer is what Issuer and ClusterIssuer have in common, so backends
// and controllers handle both the same way.
// +kubebuilder:object:generate=false
type GenericIssuer interface {
	metav1.Object
	runtime.Object
	GetSpec() *IssuerSpec
	GetStatus() *IssuerStatus
}

var (
	_ GenericIssuer = (*Issuer)(nil)
	_ GenericIssuer = (*ClusterIssuer)(nil)
)

// GetSpec returns the Issuer's spec, for GenericIssuer.
func (i *Issuer) GetSpec() *IssuerSpec { return &i.Spec }

// GetStatus returns the Issuer's status, for GenericIssuer.
func (i *Issuer) GetStatus() *IssuerStatus { return &i.Status }

// GetSpec returns the ClusterIssuer's spec, for GenericIssuer.
func (i *ClusterIssuer) GetSpec() *IssuerSpec { return &i.Spec }

// GetStatus returns the ClusterIssuer's status, for GenericIssuer.
func (i *ClusterIssuer) GetStatus() *IssuerStatus { return &i.Status }

// IssuerSecretKeySelector names one key of a Secret in the issuer's
// namespace (a ClusterIssuer's: the cluster resource namespace).
type IssuerSecretKeySelector struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid Secret name"
	Name string `json:"name"`

	// Key in the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[-._a-zA-Z0-9]+$')",message="must be a valid Secret key"
	Key string `json:"key"`
}

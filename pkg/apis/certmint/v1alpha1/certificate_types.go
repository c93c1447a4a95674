package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Certificate keeps a kubernetes.io/tls Secret in its namespace holding a
// private key, a certificate from an Issuer or ClusterIssuer and the
// issuer's CA bundle, and renews it before it expires: certificates for
// what reads Secrets, such as an Ingress controller. The controller
// generates the key and writes it into that Secret only.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=certmint,shortName=cert;certs
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.spec.secretName`
// +kubebuilder:printcolumn:name="Issuer",type=string,JSONPath=`.spec.issuerRef.name`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.notAfter`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CertificateSpec   `json:"spec"`
	Status CertificateStatus `json:"status,omitempty"`
}

// CertificateList is a list of Certificates.
//
// +kubebuilder:object:root=true
type CertificateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Certificate `json:"items"`
}

// CertificateSpec is the certificate to keep, and where.
//
// +kubebuilder:validation:XValidation:rule="has(self.commonName) || has(self.dnsNames) || has(self.ipAddresses) || has(self.uris) || has(self.emailAddresses)",message="name at least one identity: commonName, dnsNames, ipAddresses, uris or emailAddresses"
// +kubebuilder:validation:XValidation:rule="!has(self.duration) || !has(self.renewBefore) || duration(self.renewBefore) < duration(self.duration)",message="renewBefore must be shorter than duration"
type CertificateSpec struct {
	// SecretName is the kubernetes.io/tls Secret in the Certificate's
	// namespace that holds tls.key, tls.crt (the chain, leaf first) and
	// ca.crt (the issuer's trust bundle). It is created if missing; an
	// existing Secret of another type is refused.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid Secret name"
	SecretName string `json:"secretName"`

	// IssuerRef is the issuer that signs.
	IssuerRef IssuerReference `json:"issuerRef"`

	// CommonName is the subject's common name. It must be one of the
	// names the issuer's policy allows.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	CommonName string `json:"commonName,omitempty"`

	// DNSNames are the DNS names to certify, such as the hosts of an
	// Ingress; a wildcard is a whole first label (*.example.com).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(n, n.matches('^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))",message="each must be a lower-case DNS name, optionally with a leading *."
	DNSNames []string `json:"dnsNames,omitempty"`

	// IPAddresses are IP address SANs.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="self.all(a, isIP(a))",message="each must be an IP address"
	IPAddresses []string `json:"ipAddresses,omitempty"`

	// URIs are URI SANs, such as SPIFFE IDs.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.all(u, isURL(u) && url(u).getScheme() != '' && url(u).getHost() != '')",message="each must be an absolute URI with scheme and host"
	URIs []string `json:"uris,omitempty"`

	// EmailAddresses are email SANs.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=254
	// +kubebuilder:validation:XValidation:rule="self.all(e, e.matches('^[^@ ]+@[^@ ]+$'))",message="each must be an email address"
	EmailAddresses []string `json:"emailAddresses,omitempty"`

	// Subject holds the subject's attributes besides the common name.
	// +optional
	Subject *X509Subject `json:"subject,omitempty"`

	// Duration is the certificate's requested lifetime, at least 10m. The
	// default is the issuer's: 24h, or its policy's maxDuration if shorter.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10m')",message="must be at least 10m"
	Duration *metav1.Duration `json:"duration,omitempty"`

	// RenewBefore is how long before expiry the certificate is renewed;
	// the default renews at two thirds of its lifetime.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="must be at least 1m"
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// Usages are the key usages, by their Kubernetes names ("digital
	// signature", "key encipherment", "server auth", "client auth", ...).
	// The default is digital signature, key encipherment for RSA keys,
	// server auth and client auth (cert sign too with isCA).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Usages []string `json:"usages,omitempty"`

	// IsCA asks for a CA certificate, which the issuer's policy must allow
	// (allowCA); it may sign leaf certificates only.
	// +optional
	IsCA bool `json:"isCA,omitempty"`

	// PrivateKey is the key the controller generates.
	// +optional
	PrivateKey *CertificatePrivateKey `json:"privateKey,omitempty"`

	// Keystores also writes the key and chain as PKCS#12 or JKS files into
	// the Secret.
	// +optional
	Keystores *CertificateKeystores `json:"keystores,omitempty"`

	// SecretTemplate holds labels and annotations for the Secret.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`
}

// IssuerReference names an Issuer in the Certificate's namespace or a
// ClusterIssuer.
type IssuerReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Kind is Issuer (the default) or ClusterIssuer.
	// +optional
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +kubebuilder:default=Issuer
	Kind string `json:"kind,omitempty"`
}

// X509Subject is a certificate subject's attributes besides the common
// name.
type X509Subject struct {
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	Organizations []string `json:"organizations,omitempty"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	OrganizationalUnits []string `json:"organizationalUnits,omitempty"`
	// Countries are two-letter ISO 3166 codes.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:Pattern=`^[A-Z]{2}$`
	Countries []string `json:"countries,omitempty"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=128
	Provinces []string `json:"provinces,omitempty"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=128
	Localities []string `json:"localities,omitempty"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=128
	StreetAddresses []string `json:"streetAddresses,omitempty"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=40
	PostalCodes []string `json:"postalCodes,omitempty"`
	// SerialNumber is the subject's serialNumber attribute, not the
	// certificate's serial.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	SerialNumber string `json:"serialNumber,omitempty"`
}

// CertificatePrivateKey is the key to generate.
//
// +kubebuilder:validation:XValidation:rule="!has(self.encoding) || self.encoding != 'PKCS1' || (has(self.algorithm) && self.algorithm == 'RSA')",message="PKCS1 encoding is for RSA keys only"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || (has(self.algorithm) && self.algorithm == 'RSA' ? self.size >= 2048 && self.size <= 8192 && self.size % 8 == 0 : (has(self.algorithm) && self.algorithm == 'Ed25519' ? false : self.size in [256, 384, 521]))",message="size must be 256, 384 or 521 for ECDSA, a multiple of 8 from 2048 to 8192 for RSA, and unset for Ed25519"
type CertificatePrivateKey struct {
	// Algorithm is ECDSA (the default), RSA or Ed25519.
	// +optional
	Algorithm KeyAlgorithm `json:"algorithm,omitempty"`
	// Size is the curve size for ECDSA (256, the default; 384; 521) or the
	// modulus size for RSA (2048, the default, to 8192).
	// +optional
	Size int32 `json:"size,omitempty"`
	// Encoding of tls.key: PKCS8 (the default) or, for RSA, PKCS1.
	// +optional
	// +kubebuilder:validation:Enum=PKCS1;PKCS8
	Encoding string `json:"encoding,omitempty"`
	// RotationPolicy is Always (the default: every renewal makes a new
	// key) or Never (renewals keep the Secret's key while it fits this
	// spec).
	// +optional
	// +kubebuilder:validation:Enum=Always;Never
	RotationPolicy string `json:"rotationPolicy,omitempty"`
}

// The rotation policies of CertificatePrivateKey.
const (
	RotationPolicyAlways = "Always"
	RotationPolicyNever  = "Never"
)

// CertificateKeystores are the keystore files to write into the Secret.
type CertificateKeystores struct {
	// PKCS12 writes keystore.p12 (key, chain and CA).
	// +optional
	PKCS12 *Keystore `json:"pkcs12,omitempty"`
	// JKS writes keystore.jks (the key and chain as entry "certificate",
	// each CA as "ca", "ca-1", ...) and truststore.jks.
	// +optional
	JKS *Keystore `json:"jks,omitempty"`
}

// Keystore is one keystore file, protected with a password from a Secret
// in the Certificate's namespace.
type Keystore struct {
	PasswordSecretRef SecretKeySelector `json:"passwordSecretRef"`
}

// SecretKeySelector names one key of a Secret.
type SecretKeySelector struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key defaults to "password".
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// SecretTemplate is metadata for the Secret. Keys under certmint.io/ are
// the controller's own: it uses them to tell which Certificate keeps the
// Secret and what its certificate was issued for.
type SecretTemplate struct {
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('certmint.io/'))",message="keys under certmint.io/ are the controller's own"
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('certmint.io/'))",message="keys under certmint.io/ are the controller's own"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// CertificateStatus is what the controller last did with a Certificate.
type CertificateStatus struct {
	// Conditions: Ready is True while the Secret holds a valid certificate
	// for the current spec; Issuing is True while a certificate is being
	// obtained. Their reasons and messages say what to fix.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// NotBefore and NotAfter are the validity of the Secret's certificate.
	// +optional
	NotBefore *metav1.Time `json:"notBefore,omitempty"`
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
	// RenewalTime is when the certificate will be renewed.
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`

	// Revision counts the certificates issued for this Certificate.
	// +optional
	Revision int64 `json:"revision,omitempty"`

	// LastFailureTime is when issuing last failed, and
	// FailedIssuanceAttempts how many times in a row; retries back off
	// exponentially.
	// +optional
	LastFailureTime *metav1.Time `json:"lastFailureTime,omitempty"`
	// +optional
	FailedIssuanceAttempts int32 `json:"failedIssuanceAttempts,omitempty"`
}

// Condition types of a Certificate.
const (
	ConditionIssuing = "Issuing"
)

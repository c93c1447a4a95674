package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Order is one ACME order: the certificate an ACME ClusterIssuer is getting
// for one request, a CSI volume's CertificateSigningRequest or a
// Certificate, and where it stands. The controller writes Orders and their
// status; they go with their request.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=certmint
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Domain",type=string,JSONPath=`.spec.dnsNames[0]`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.request.kind`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Order struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   OrderSpec   `json:"spec"`
	Status OrderStatus `json:"status,omitempty"`
}

// OrderList is a list of Orders.
//
// +kubebuilder:object:root=true
type OrderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Order `json:"items"`
}

// OrderSpec is what an order asks for, and for whom.
type OrderSpec struct {
	// IssuerName is the ACME ClusterIssuer.
	IssuerName string `json:"issuerName"`
	// Request is the request the order is for.
	Request OrderRequest `json:"request"`
	// DNSNames are the names to certify.
	// +listType=atomic
	DNSNames []string `json:"dnsNames"`
	// Duration is the lifetime asked of the server; it may give another.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
}

// OrderRequest names the request an Order is for.
type OrderRequest struct {
	// Kind is CertificateSigningRequest (a CSI volume's, cluster-scoped) or
	// Certificate (in the Order's namespace).
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// The states of Orders and Challenges: the ACME server's (RFC 8555,
// section 7.1.6) and, for a Challenge, those before the server is told
// to validate it.
const (
	ACMEStatePending    = "pending"
	ACMEStatePresented  = "presented"
	ACMEStateReady      = "ready"
	ACMEStateProcessing = "processing"
	ACMEStateValid      = "valid"
	ACMEStateInvalid    = "invalid"
)

// OrderStatus is where an order stands.
type OrderStatus struct {
	// State is pending (challenges to solve), ready, processing (the
	// server is issuing), valid (issued) or invalid (failed for good).
	// +optional
	State string `json:"state,omitempty"`
	// URL is the order at the ACME server.
	// +optional
	URL string `json:"url,omitempty"`
	// Reason (CamelCase) and Message say why it waits or failed, with the
	// ACME server's own words.
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// RetryAfter is when the server said to ask again, after a rate
	// limit; nothing is asked of it before.
	// +optional
	RetryAfter *metav1.Time `json:"retryAfter,omitempty"`
	// NotBefore and NotAfter are the validity of the certificate issued.
	// +optional
	NotBefore *metav1.Time `json:"notBefore,omitempty"`
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
}

// Challenge is the proof of control of one DNS name for an Order: how it
// is answered and what the ACME server said of it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=certmint
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Domain",type=string,JSONPath=`.spec.dnsName`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Challenge struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ChallengeSpec   `json:"spec"`
	Status ChallengeStatus `json:"status,omitempty"`
}

// ChallengeList is a list of Challenges.
//
// +kubebuilder:object:root=true
type ChallengeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Challenge `json:"items"`
}

// ChallengeSpec is the challenge the server offered for a name.
type ChallengeSpec struct {
	// Order is the Order it belongs to.
	Order string `json:"order"`
	// DNSName is the name validated, with "*." for a wildcard.
	DNSName string `json:"dnsName"`
	// Type is http-01 or dns-01.
	Type string `json:"type"`
	// URL is the challenge at the ACME server.
	URL string `json:"url"`
	// Target is where the answer is served: the URL the server fetches
	// (http-01) or the TXT record and the nameserver it is written to
	// (dns-01).
	Target string `json:"target"`
}

// ChallengeStatus is where a challenge stands.
type ChallengeStatus struct {
	// State is pending (not answered yet), presented (answered, not yet
	// seen to be served), processing (the server is validating), valid or
	// invalid.
	// +optional
	State string `json:"state,omitempty"`
	// Reason (CamelCase) and Message say why it waits or failed; for a
	// failed validation the message is the ACME server's.
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

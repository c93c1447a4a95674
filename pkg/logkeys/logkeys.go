// Package logkeys names the keys of structured log entries of both
// binaries, so the same thing is logged under the same key everywhere and
// logs can be queried. make verify refuses a key that is not one of these.
package logkeys

// The keys; each names one thing, logged under it in both binaries.
const (
	VolumeID     = "volumeID"
	TargetPath   = "targetPath"
	PodNamespace = "podNamespace"
	PodName      = "podName"
	Issuer       = "issuer"
	CSR          = "csr"
	Method       = "method"
	Code         = "code"
	Duration     = "duration"
	Attributes   = "attributes"
	NotAfter     = "notAfter"
	RenewAt      = "renewAt"
	Failures     = "failures"
	RetryIn      = "retryIn"
	Endpoint     = "endpoint"
	SignerName   = "signerName"
	Node         = "node"
	Reason       = "reason"
	// Type is the type of an ACME challenge (http-01, dns-01).
	Type    = "type"
	Message = "message"
	Secret  = "secret"
	Ready   = "ready"
	// CAFingerprint, RetiringCAs and ReissueBefore are of an issuer's
	// trust: its signing CA, the CAs it retires, and when it asks drivers
	// to re-issue.
	CAFingerprint = "caFingerprint"
	RetiringCAs   = "retiringCAs"
	ReissueBefore = "reissueBefore"
	// KeptCACertificates counts the CA certificates a volume's CA file
	// keeps from before a trust bundle change.
	KeptCACertificates = "keptCACertificates"
	ACMEOrder          = "acmeOrder"
	// PodCertificateRequest names a PodCertificateRequest; BeginRefreshAt
	// is when the kubelet is told to replace the certificate it carries.
	PodCertificateRequest = "podCertificateRequest"
	Certificate           = "certificate"
	Ingress               = "ingress"
	BeginRefreshAt        = "beginRefreshAt"
	DNSName               = "dnsName"
	// ClusterTrustBundle names the ClusterTrustBundle that publishes an
	// issuer's trust bundle.
	ClusterTrustBundle = "clusterTrustBundle"
)

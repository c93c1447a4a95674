// Package logkeys names the keys of structured log entries, so the same
// thing is logged under the same key everywhere and logs can be queried.
package logkeys

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
)

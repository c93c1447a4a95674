// Package attributes turns the volume attributes of a certmint CSI volume into
// a Spec: what certificate to request, how to store it. Every attribute is
// validated up front and an unknown key under Prefix is an error, because a
// typo must not silently give the wrong certificate.
//
// The package knows nothing of the driver (no gRPC, no storage), so the
// controller can use it to re-derive what a pod's volume asks for.
package attributes

import (
	"fmt"

	"github.com/certmint/certmint/pkg/request"
)

// Prefix is the prefix of every certmint volume attribute.
const Prefix = "csi.certmint.io/"

// Volume attribute keys a pod spec may set.
const (
	IssuerName          = Prefix + "issuer-name"
	IssuerKind          = Prefix + "issuer-kind"
	CommonName          = Prefix + "common-name"
	LiteralSubject      = Prefix + "literal-subject"
	Organizations       = Prefix + "organizations"
	OrganizationalUnits = Prefix + "organizational-units"
	Countries           = Prefix + "countries"
	Provinces           = Prefix + "provinces"
	Localities          = Prefix + "localities"
	StreetAddresses     = Prefix + "street-addresses"
	PostalCodes         = Prefix + "postal-codes"
	SerialNumber        = Prefix + "serial-number"
	DNSNames            = Prefix + "dns-names"
	IPSANs              = Prefix + "ip-sans"
	URISANs             = Prefix + "uri-sans"
	SPIFFEID            = Prefix + "spiffe-id"
	Duration            = Prefix + "duration"
	RenewBefore         = Prefix + "renew-before"
	IsCA                = Prefix + "is-ca"
	KeyUsages           = Prefix + "key-usages"
	KeyAlgorithm        = Prefix + "key-algorithm"
	KeySize             = Prefix + "key-size"
	KeyEncoding         = Prefix + "key-encoding"
	ReusePrivateKey     = Prefix + "reuse-private-key"
	CertificateFile     = Prefix + "certificate-file"
	PrivateKeyFile      = Prefix + "privatekey-file"
	CAFile              = Prefix + "ca-file"
	FSGroup             = Prefix + "fs-group"
	PKCS12Enable        = Prefix + "pkcs12-enable"
	PKCS12Filename      = Prefix + "pkcs12-filename"
	PKCS12Password      = Prefix + "pkcs12-password"
	JKSEnable           = Prefix + "jks-enable"
	JKSFilename         = Prefix + "jks-filename"
	JKSPassword         = Prefix + "jks-password"
)

// kubeletPrefix is the prefix of the keys the kubelet adds to the volume
// context. Any of them is accepted, so a kubelet that passes more than the
// ones below does not break volumes.
const kubeletPrefix = "csi.storage.k8s.io/"

// Keys the kubelet adds to the volume context. The CSIDriver object must have
// podInfoOnMount: true for the pod keys to be there.
const (
	PodNameKey            = kubeletPrefix + "pod.name"
	PodNamespaceKey       = kubeletPrefix + "pod.namespace"
	PodUIDKey             = kubeletPrefix + "pod.uid"
	ServiceAccountNameKey = kubeletPrefix + "serviceAccount.name"
	EphemeralKey          = kubeletPrefix + "ephemeral"
	// ServiceAccountTokensKey holds the pod's ServiceAccount tokens when the
	// CSIDriver asks for them. certmint does not, but a misconfigured
	// CSIDriver could; such a value is a secret and must never be logged or
	// stored.
	ServiceAccountTokensKey = kubeletPrefix + "serviceAccount.tokens"
)

// Defaults of the optional attributes.
const (
	DefaultCertificateFile = "tls.crt"
	DefaultPrivateKeyFile  = "tls.key"
	DefaultCAFile          = "ca.crt"
	DefaultPKCS12Filename  = "keystore.p12"
	DefaultJKSFilename     = "keystore.jks"
)

// known lists every key under Prefix; anything else under Prefix is a typo.
var known = map[string]bool{
	IssuerName: true, IssuerKind: true, CommonName: true, LiteralSubject: true,
	Organizations: true, OrganizationalUnits: true, Countries: true, Provinces: true,
	Localities: true, StreetAddresses: true, PostalCodes: true, SerialNumber: true,
	DNSNames: true, IPSANs: true, URISANs: true, SPIFFEID: true, Duration: true,
	RenewBefore: true, IsCA: true, KeyUsages: true, KeyAlgorithm: true, KeySize: true,
	KeyEncoding: true, ReusePrivateKey: true, CertificateFile: true, PrivateKeyFile: true,
	CAFile: true, FSGroup: true, PKCS12Enable: true, PKCS12Filename: true,
	PKCS12Password: true, JKSEnable: true, JKSFilename: true, JKSPassword: true,
}

// secret lists keys whose values must not appear in logs or state files.
var secret = map[string]bool{
	PKCS12Password:          true,
	JKSPassword:             true,
	ServiceAccountTokensKey: true,
}

// Redacted returns a copy of attrs that is safe to log: secret values are
// replaced, long ones cut, everything else is kept so a log shows what the
// pod asked for.
func Redacted(attrs map[string]string) map[string]string {
	out := make(map[string]string, len(attrs))
	for k, v := range attrs {
		if secret[k] {
			v = "[redacted]"
		}
		if len(k) > request.MaxQuoted {
			k = k[:request.MaxQuoted] + "…"
		}
		if len(v) > request.MaxQuoted {
			v = fmt.Sprintf("%s… (%d bytes in all)", v[:request.MaxQuoted], len(v))
		}
		out[k] = v
	}
	return out
}

// Stored returns a copy of attrs without values that must not be written to
// disk outside the volume: the kubelet's ServiceAccount tokens. Keystore
// passwords stay, since renewing a volume needs them and they are part of the
// pod spec anyway.
func Stored(attrs map[string]string) map[string]string {
	out := make(map[string]string, len(attrs))
	for k, v := range attrs {
		if k == ServiceAccountTokensKey {
			continue
		}
		out[k] = v
	}
	return out
}

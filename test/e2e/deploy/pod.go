package deploy

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/request"
)

// SPIFFEID is the identity a CertPod or ProjectedPod running as
// serviceAccount in namespace gets in its certificate.
func SPIFFEID(namespace, serviceAccount string) string {
	return "spiffe://cluster.local/ns/" + namespace + "/sa/" + serviceAccount
}

// CertPod is a pod of image on node with a certmint volume at /tls from the
// ClusterIssuer issuer, for its own DNS name and SPIFFE ID: names an
// issuer's default policy allows.
func CertPod(name, node, serviceAccount, issuer, image string, args []string) *corev1.Pod {
	return podWithTLS(name, node, serviceAccount, image, args, corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver:   request.DriverName,
		ReadOnly: new(true),
		VolumeAttributes: map[string]string{
			"csi.certmint.io/issuer-name": issuer,
			"csi.certmint.io/issuer-kind": "ClusterIssuer",
			"csi.certmint.io/dns-names":   "${POD_NAME}.${POD_NAMESPACE}.svc",
			"csi.certmint.io/spiffe-id":   "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}",
		},
	}})
}

// Projection is what a ProjectedPod's podCertificate projection asks for.
type Projection struct {
	// KeyType defaults to ECDSAP256.
	KeyType string
	// MaxExpirationSeconds is left to the API server's default when nil.
	MaxExpirationSeconds *int32
	// Annotations are the projection's userAnnotations; the pod's own DNS
	// name when nil.
	Annotations map[string]string
}

// ProjectedPod is a pod of image on node with a projected volume at /tls
// holding, in the file names of a certmint volume, a podCertificate from
// the ClusterIssuer issuer (tls.key, tls.crt) and that issuer's
// ClusterTrustBundle (ca.crt).
func ProjectedPod(name, node, serviceAccount, issuer, image string, args []string, p Projection) *corev1.Pod {
	signer := request.IssuerRef{Kind: request.KindClusterIssuer, Name: issuer}.SignerName()
	if p.KeyType == "" {
		p.KeyType = "ECDSAP256"
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{"certmint.io/dns-names": "${POD_NAME}.${POD_NAMESPACE}.svc"}
	}
	return podWithTLS(name, node, serviceAccount, image, args, corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		// Not the default 0644: the key is for the container's user only.
		DefaultMode: new(int32(0o400)),
		Sources: []corev1.VolumeProjection{
			{PodCertificate: &corev1.PodCertificateProjection{
				SignerName:           signer,
				KeyType:              p.KeyType,
				MaxExpirationSeconds: p.MaxExpirationSeconds,
				KeyPath:              "tls.key",
				CertificateChainPath: "tls.crt",
				UserAnnotations:      p.Annotations,
			}},
			{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{
				SignerName:    &signer,
				LabelSelector: &metav1.LabelSelector{},
				Path:          "ca.crt",
			}},
		},
	}})
}

// podWithTLS is a pod of image on node with volume mounted at /tls.
func podWithTLS(name, node, serviceAccount, image string, args []string, volume corev1.VolumeSource) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            serviceAccount,
			TerminationGracePeriodSeconds: new(int64),
			// The test cluster runs no cluster DNS; pods dial addresses.
			DNSPolicy: corev1.DNSDefault,
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Args:            args,
				VolumeMounts:    []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "tls", VolumeSource: volume}},
		},
	}
}

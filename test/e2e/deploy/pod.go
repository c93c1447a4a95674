package deploy

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/request"
)

// SPIFFEID is the identity a CertPod running as serviceAccount in namespace
// gets in its certificate.
func SPIFFEID(namespace, serviceAccount string) string {
	return "spiffe://cluster.local/ns/" + namespace + "/sa/" + serviceAccount
}

// CertPod is a pod of image on node with a certmint volume at /tls from the
// ClusterIssuer issuer, for its own DNS name and SPIFFE ID: names an
// issuer's default policy allows.
func CertPod(name, node, serviceAccount, issuer, image string, args []string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            serviceAccount,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Args:            args,
				VolumeMounts:    []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{
				Name: "tls",
				VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
					Driver:   request.DriverName,
					ReadOnly: new(true),
					VolumeAttributes: map[string]string{
						"csi.certmint.io/issuer-name": issuer,
						"csi.certmint.io/issuer-kind": "ClusterIssuer",
						"csi.certmint.io/dns-names":   "${POD_NAME}.${POD_NAMESPACE}.svc",
						"csi.certmint.io/spiffe-id":   "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}",
					},
				}},
			}},
		},
	}
}

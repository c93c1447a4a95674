package stack

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/certmint/certmint/pkg/attributes"
)

// Volume is one pod's inline certmint volume on the driver's node.
type Volume struct {
	Pod    *corev1.Pod
	ID     string
	Target string
}

// NewVolume creates a pod bound to the driver's node, as the scheduler
// would leave it, and names its volume the way the kubelet does, with the
// kubelet's directory for it.
func (s *Stack) NewVolume(ctx context.Context, namespace, serviceAccount, name string) (Volume, error) {
	pod, err := s.Admin.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName: s.Node, ServiceAccountName: serviceAccount, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "example/app"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return Volume{}, fmt.Errorf("creating pod: %w", err)
	}
	// The kubelet creates the volume directory, the driver the mount point
	// in it.
	volDir := filepath.Join(s.KubeletDir(), "pods", string(pod.UID), "volumes", "kubernetes.io~csi", "tls")
	if err := os.MkdirAll(volDir, 0o750); err != nil {
		return Volume{}, err
	}
	return Volume{Pod: pod, ID: "csi-" + string(pod.UID), Target: filepath.Join(volDir, "mount")}, nil
}

// PublishRequest is what the kubelet sends for the volume: the pod's
// volumeAttributes (keys without the csi.certmint.io/ prefix get it) and
// the pod information the CSIDriver asks for.
func (v Volume) PublishRequest(attrs map[string]string) *csispec.NodePublishVolumeRequest {
	ctx := map[string]string{
		attributes.PodNameKey:            v.Pod.Name,
		attributes.PodNamespaceKey:       v.Pod.Namespace,
		attributes.PodUIDKey:             string(v.Pod.UID),
		attributes.ServiceAccountNameKey: v.Pod.Spec.ServiceAccountName,
		attributes.EphemeralKey:          "true",
	}
	maps.Copy(ctx, attrs)
	return &csispec.NodePublishVolumeRequest{
		VolumeId:   v.ID,
		TargetPath: v.Target,
		Readonly:   true,
		VolumeCapability: &csispec.VolumeCapability{
			AccessType: &csispec.VolumeCapability_Mount{Mount: &csispec.VolumeCapability_MountVolume{}},
			AccessMode: &csispec.VolumeCapability_AccessMode{Mode: csispec.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: ctx,
	}
}

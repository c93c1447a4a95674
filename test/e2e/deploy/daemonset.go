package deploy

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// StandInDriverDaemonSet creates the driver's DaemonSet on a control plane
// without a controller manager, where it makes no pods, and returns a
// function that makes a pod one of its own, as the DaemonSet controller
// would: tests that run the driver outside a pod create its pod with it, so
// that node binding sees a driver pod of the live DaemonSet.
func StandInDriverDaemonSet(ctx context.Context, cfg *rest.Config, serviceAccount string) (func(*corev1.Pod), error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{"app.kubernetes.io/name": DriverDaemonSet}
	ds, err := client.AppsV1().DaemonSets(Namespace).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: DriverDaemonSet},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{ServiceAccountName: serviceAccount, Containers: []corev1.Container{{Name: "driver", Image: "unused"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating the driver DaemonSet: %w", err)
	}
	return func(pod *corev1.Pod) { ownedBy(pod, ds.UID) }, nil
}

func ownedBy(pod *corev1.Pod, uid types.UID) {
	pod.Labels = map[string]string{"app.kubernetes.io/name": DriverDaemonSet}
	pod.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "DaemonSet", Name: DriverDaemonSet, UID: uid, Controller: ptr.To(true),
	}}
}

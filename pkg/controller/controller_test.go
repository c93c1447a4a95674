package controller

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestSlimPodKeepsWhatPolicyReadsAndNothingElse(t *testing.T) {
	now := metav1.Now()
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "certmint-driver", UID: "ds-uid", Controller: ptr.To(true)}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: "web-0", UID: "pod-uid", ResourceVersion: "7", CreationTimestamp: now, DeletionTimestamp: &now,
			OwnerReferences: []metav1.OwnerReference{owner},
			Labels:          map[string]string{"app": "web"},
			Annotations:     map[string]string{corev1.MirrorPodAnnotationKey: "hash", "note": "dropped"},
		},
		Spec: corev1.PodSpec{
			NodeName: "node-a", ServiceAccountName: "web", HostNetwork: true,
			Containers: []corev1.Container{{Name: "app", Image: "example/app", Env: []corev1.EnvVar{{Name: "PASSWORD", Value: "dropped"}}}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "cert", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{PodCertificate: &corev1.PodCertificateProjection{SignerName: "clusterissuers.certmint.io/ca", KeyType: "ECDSAP256"}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "dropped"}}},
				}}}},
			},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, HostIP: "192.0.2.1", PodIP: "10.244.1.5",
			PodIPs:     []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:10:244:1::5"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	got, err := slimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: "web-0", UID: "pod-uid", ResourceVersion: "7", CreationTimestamp: now, DeletionTimestamp: &now,
			OwnerReferences: []metav1.OwnerReference{owner},
			Annotations:     map[string]string{corev1.MirrorPodAnnotationKey: "hash"},
		},
		Spec: corev1.PodSpec{
			NodeName: "node-a", ServiceAccountName: "web", HostNetwork: true,
			Volumes: []corev1.Volume{{Name: "cert", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{PodCertificate: &corev1.PodCertificateProjection{SignerName: "clusterissuers.certmint.io/ca"}},
			}}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:10:244:1::5"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("slimPod =\n%+v\nwant\n%+v", got, want)
	}
}

package cluster

import (
	"slices"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cp := ControlPlaneForTest(t)
	ctx := t.Context()
	admin := kubernetes.NewForConfigOrDie(cp.Config)

	t.Run("admin config authenticates as the admin user", func(t *testing.T) {
		review, err := admin.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("self-review: %v", err)
		}
		if got := review.Status.UserInfo.Username; got != adminUser {
			t.Errorf("admin is %q, want %q", got, adminUser)
		}
	})

	t.Run("Node authorizer confines a node identity", func(t *testing.T) {
		nodeCfg, err := cp.UserConfig("system:node:node-a", "system:nodes")
		if err != nil {
			t.Fatal(err)
		}
		node := kubernetes.NewForConfigOrDie(nodeCfg)
		if _, err := node.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("node reading its own missing Node: got %v, want NotFound", err)
		}
		if _, err := node.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("node listing Secrets: got %v, want Forbidden", err)
		}
	})

	t.Run("pod-bound ServiceAccount tokens carry the node name", func(t *testing.T) {
		const nodeName, ns, sa = "node-b", "default", "tokens"
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "bound"},
			Spec: corev1.PodSpec{
				NodeName:                     nodeName,
				ServiceAccountName:           sa,
				AutomountServiceAccountToken: new(bool),
				Containers:                   []corev1.Container{{Name: "c", Image: "unused"}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{
				BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		review, err := admin.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !review.Status.Authenticated {
			t.Fatalf("token not authenticated: %s", review.Status.Error)
		}
		if got := review.Status.User.Extra["authentication.kubernetes.io/node-name"]; !slices.Equal(got, authenticationv1.ExtraValue{nodeName}) {
			t.Errorf("node-name extra = %v, want [%s]; all extra: %v", got, nodeName, review.Status.User.Extra)
		}
	})
}

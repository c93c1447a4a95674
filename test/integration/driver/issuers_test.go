package driver_test

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

var (
	issuersResource        = v1alpha1.SchemeGroupVersion.WithResource("issuers")
	clusterIssuersResource = v1alpha1.SchemeGroupVersion.WithResource("clusterissuers")
)

// createIssuer creates an Issuer (namespace set) or ClusterIssuer with a
// selfSigned backend and, unless bundle is empty, sets its
// status.trustBundle as the controller would (no controller runs here).
func createIssuer(ctx context.Context, dyn dynamic.Interface, namespace, name, bundle string) error {
	gvr, kind := issuersResource, "Issuer"
	if namespace == "" {
		gvr, kind = clusterIssuersResource, "ClusterIssuer"
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"selfSigned": map[string]any{}},
	}}
	obj.SetNamespace(namespace)
	if _, err := dyn.Resource(gvr).Namespace(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating %s %s: %w", kind, name, err)
	}
	if bundle == "" {
		return nil
	}
	return setTrustBundle(ctx, dyn, gvr, namespace, name, bundle)
}

// setTrustBundle writes status.trustBundle through the status subresource,
// where the controller publishes it.
func setTrustBundle(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, namespace, name, bundle string) error {
	res := dyn.Resource(gvr).Namespace(namespace)
	obj, err := res.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if err := unstructured.SetNestedField(obj.Object, bundle, "status", "trustBundle"); err != nil {
		return err
	}
	if _, err := res.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the trust bundle of %s %s: %w", gvr.Resource, name, err)
	}
	return nil
}

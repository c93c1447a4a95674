package driver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

var (
	issuersResource        = v1alpha1.SchemeGroupVersion.WithResource("issuers")
	clusterIssuersResource = v1alpha1.SchemeGroupVersion.WithResource("clusterissuers")
)

// installCRDs creates every CustomResourceDefinition in dir and waits until
// the API server serves them.
func installCRDs(ctx context.Context, cfg *rest.Config, dir string) error {
	client, err := apiextensions.NewForConfig(cfg)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no CRDs in %s", dir)
	}
	crds := client.ApiextensionsV1().CustomResourceDefinitions()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := crds.Create(ctx, &crd, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating %s: %w", crd.Name, err)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("waiting for %s to be established: %w", crd.Name, err)
		}
	}
	return nil
}

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

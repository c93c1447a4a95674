package kubectlcertmint

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// The certmint.io resources the plugin reads and writes.
var (
	issuersResource        = v1alpha1.SchemeGroupVersion.WithResource("issuers")
	clusterIssuersResource = v1alpha1.SchemeGroupVersion.WithResource("clusterissuers")
	certificatesResource   = v1alpha1.SchemeGroupVersion.WithResource("certificates")
	ordersResource         = v1alpha1.SchemeGroupVersion.WithResource("orders")
)

// Issuer names an Issuer (with its namespace) or a ClusterIssuer in a
// report, as the driver's /volumes does.
type Issuer struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func issuerOf(ref request.IssuerRef) Issuer {
	return Issuer{Kind: string(ref.Kind), Namespace: ref.Namespace, Name: ref.Name}
}

func (i Issuer) ref() request.IssuerRef {
	return request.IssuerRef{Kind: request.IssuerKind(i.Kind), Namespace: i.Namespace, Name: i.Name}
}

// String is how tables show an issuer: "ClusterIssuer mesh", "Issuer shop/ca".
func (i Issuer) String() string { return i.ref().String() }

// issuerClient is the dynamic client of ref's kind and namespace.
func issuerClient(dyn dynamic.Interface, ref request.IssuerRef) dynamic.ResourceInterface {
	if ref.Kind == request.KindClusterIssuer {
		return dyn.Resource(clusterIssuersResource)
	}
	return dyn.Resource(issuersResource).Namespace(ref.Namespace)
}

// getIssuer reads the issuer ref names, as it is stored (for a write that
// must not lose what it does not know) and typed.
func getIssuer(ctx context.Context, dyn dynamic.Interface, ref request.IssuerRef) (*unstructured.Unstructured, v1alpha1.GenericIssuer, error) {
	u, err := issuerClient(dyn, ref).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("%s does not exist", ref)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	var iss v1alpha1.GenericIssuer = &v1alpha1.Issuer{}
	if ref.Kind == request.KindClusterIssuer {
		iss = &v1alpha1.ClusterIssuer{}
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, iss); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	return u, iss, nil
}

// listAs lists resource (in namespace, or in all when empty) into out, a
// typed list. A resource the API server does not serve lists as empty:
// Orders came with a later certmint than some clusters run.
func listAs(ctx context.Context, dyn dynamic.Interface, resource schema.GroupVersionResource, namespace string, out runtime.Object) error {
	var (
		list *unstructured.UnstructuredList
		err  error
	)
	if namespace == "" {
		list, err = dyn.Resource(resource).List(ctx, metav1.ListOptions{})
	} else {
		list, err = dyn.Resource(resource).Namespace(namespace).List(ctx, metav1.ListOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", resource.Resource, err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.UnstructuredContent(), out); err != nil {
		return fmt.Errorf("reading %s: %w", resource.Resource, err)
	}
	return nil
}

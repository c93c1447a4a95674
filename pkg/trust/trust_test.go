package trust

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

func issuerObject(kind, namespace, name, bundle string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "certmint.io/v1alpha1",
		"kind":       kind,
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"selfSigned": map[string]any{}},
	}}
	if namespace != "" {
		u.SetNamespace(namespace)
	}
	if bundle != "" {
		u.Object["status"] = map[string]any{"trustBundle": bundle}
	}
	return u
}

func startTrust(t *testing.T, objs ...runtime.Object) (*IssuerTrust, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	trust, client := newTrust(t, objs...)
	runTrust(t, trust)
	return trust, client
}

func newTrust(t *testing.T, objs ...runtime.Object) (*IssuerTrust, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		issuersResource: "IssuerList", clusterIssuersResource: "ClusterIssuerList",
	}, objs...)
	trust, err := NewIssuerTrust(client)
	if err != nil {
		t.Fatal(err)
	}
	return trust, client
}

// runTrust runs trust until t ends and waits for its watches.
func runTrust(t *testing.T, trust *IssuerTrust) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() { trust.Run(ctx); close(done) }()
	if !cache.WaitForCacheSync(ctx.Done(), trust.HasSynced) {
		t.Fatal("issuer watches not established")
	}
}

func TestIssuerTrustServesEachIssuersTrustBundle(t *testing.T) {
	a, _ := csrtest.NewSigner()
	b, _ := csrtest.NewSigner()
	trust, _ := startTrust(t,
		issuerObject("Issuer", "shop", "ca", a.TrustBundle()),
		issuerObject("ClusterIssuer", "", "ca", b.TrustBundle()),
	)
	cases := []struct {
		name   string
		issuer request.IssuerRef
		want   string
	}{
		{"an Issuer gets its own bundle", request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}, a.TrustBundle()},
		{"a ClusterIssuer of the same name gets its own", request.IssuerRef{Kind: request.KindClusterIssuer, Name: "ca"}, b.TrustBundle()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := trust.CABundle(context.Background(), c.issuer)
			if err != nil {
				t.Fatal(err)
			}
			if string(pki.EncodeCertificates(got...)) != c.want {
				t.Errorf("bundle =\n%s\nwant\n%s", pki.EncodeCertificates(got...), c.want)
			}
		})
	}
}

func TestIssuerTrustFailsNamingTheIssuerWithoutABundle(t *testing.T) {
	trust, _ := startTrust(t,
		issuerObject("Issuer", "shop", "new", ""),
		issuerObject("Issuer", "shop", "broken", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		issuerObject("ClusterIssuer", "", "mesh", ""),
	)
	cases := []struct {
		name   string
		issuer request.IssuerRef
		want   string
	}{
		{"an issuer that does not exist", request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "gone"}, "Issuer shop/gone: the issuer does not exist"},
		{"an Issuer of another namespace", request.IssuerRef{Kind: request.KindIssuer, Namespace: "other", Name: "new"}, "Issuer other/new: the issuer does not exist"},
		{"a ClusterIssuer named like an Issuer", request.IssuerRef{Kind: request.KindClusterIssuer, Name: "new"}, "ClusterIssuer new: the issuer does not exist"},
		{"a missing Issuer named like a ClusterIssuer says which kind to ask for", request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "mesh"},
			"Issuer shop/mesh: the issuer does not exist; a ClusterIssuer mesh exists: set csi.certmint.io/issuer-kind: ClusterIssuer"},
		{"an issuer that has not published a bundle", request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "new"}, "status.trustBundle is empty"},
		{"a bundle of something else than certificates", request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "broken"}, `PEM block "PRIVATE KEY"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := trust.CABundle(context.Background(), c.issuer)
			if !errors.Is(err, ErrNoTrustBundle) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrNoTrustBundle with %q", err, c.want)
			}
		})
	}
}

func TestIssuerTrustFollowsTheIssuersStatus(t *testing.T) {
	trust, client := startTrust(t, issuerObject("ClusterIssuer", "", "mesh", ""))
	ref := request.IssuerRef{Kind: request.KindClusterIssuer, Name: "mesh"}
	signer, _ := csrtest.NewSigner()
	ctx := context.Background()
	if _, err := client.Resource(clusterIssuersResource).UpdateStatus(ctx, issuerObject("ClusterIssuer", "", "mesh", signer.TrustBundle()), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := trust.CABundle(ctx, ref)
		return err == nil && len(got) == 1 && got[0].Equal(signer.CA), nil
	})
	if err != nil {
		t.Fatalf("the published bundle never reached the cache: %v", err)
	}
	if err := client.Resource(clusterIssuersResource).Delete(ctx, "mesh", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := trust.CABundle(ctx, ref)
		return errors.Is(err, ErrNoTrustBundle), nil
	})
	if err != nil {
		t.Fatalf("a deleted issuer still has a bundle: %v", err)
	}
}

func TestIssuerTrustRefusesUntilItHasLoadedTheIssuers(t *testing.T) {
	trust, err := NewIssuerTrust(dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = trust.CABundle(context.Background(), request.IssuerRef{Kind: request.KindClusterIssuer, Name: "mesh"})
	if !errors.Is(err, ErrNoTrustBundle) || !strings.Contains(err.Error(), "ClusterIssuer mesh: the driver has not loaded the issuers yet") {
		t.Fatalf("err = %v", err)
	}
}

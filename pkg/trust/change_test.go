package trust

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/request"
)

// startTrustWatching is startTrust with every change reported on the
// returned channel.
func startTrustWatching(t *testing.T, objs ...runtime.Object) (*IssuerTrust, *dynamicfake.FakeDynamicClient, <-chan request.IssuerRef) {
	t.Helper()
	trust, client := newTrust(t, objs...)
	changes := make(chan request.IssuerRef, 10)
	if err := trust.OnChange(func(r request.IssuerRef) { changes <- r }); err != nil {
		t.Fatal(err)
	}
	runTrust(t, trust)
	return trust, client, changes
}

func expectChange(t *testing.T, changes <-chan request.IssuerRef, want request.IssuerRef) {
	t.Helper()
	select {
	case got := <-changes:
		if got != want {
			t.Fatalf("change of %v, want %v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no change of %v reported", want)
	}
}

func expectNoChange(t *testing.T, changes <-chan request.IssuerRef) {
	t.Helper()
	select {
	case got := <-changes:
		t.Fatalf("unexpected change of %v", got)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestIssuerTrustReadsReissueBefore(t *testing.T) {
	a, _ := csrtest.NewSigner()
	obj := issuerObject("ClusterIssuer", "", "mesh", a.TrustBundle())
	obj.Object["status"].(map[string]any)["reissueBefore"] = "2026-03-01T10:00:00Z"
	trust, _ := startTrust(t, obj)
	mesh := request.IssuerRef{Kind: request.KindClusterIssuer, Name: "mesh"}
	if got, want := trust.ReissueBefore(mesh), time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("ReissueBefore(mesh) = %v, want %v", got, want)
	}
	if got := trust.ReissueBefore(request.IssuerRef{Kind: request.KindClusterIssuer, Name: "other"}); !got.IsZero() {
		t.Errorf("ReissueBefore of an unknown issuer = %v, want zero", got)
	}
}

func TestOnChangeReportsChangesOfTheTrustBundleAndReissueBeforeOnly(t *testing.T) {
	a, _ := csrtest.NewSigner()
	b, _ := csrtest.NewSigner()
	shop := request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}
	_, client, changes := startTrustWatching(t, issuerObject("Issuer", "shop", "ca", a.TrustBundle()))
	expectChange(t, changes, shop) // loaded

	res := client.Resource(issuersResource).Namespace("shop")
	update := func(change func(status map[string]any)) {
		t.Helper()
		obj, err := res.Get(context.Background(), "ca", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		status, _, _ := unstructured.NestedMap(obj.Object, "status")
		change(status)
		obj.Object["status"] = status
		if _, err := res.Update(context.Background(), obj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update(func(s map[string]any) { s["conditions"] = []any{map[string]any{"type": "Ready", "status": "True"}} })
	expectNoChange(t, changes)
	update(func(s map[string]any) { s["trustBundle"] = a.TrustBundle() + b.TrustBundle() })
	expectChange(t, changes, shop)
	update(func(s map[string]any) { s["reissueBefore"] = "2026-03-01T10:00:00Z" })
	expectChange(t, changes, shop)
	if err := res.Delete(context.Background(), "ca", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, shop)
}

package issuer

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

// fixedBackend reports a set readiness.
type fixedBackend struct{ status issuer.Status }

func (b *fixedBackend) Ready(context.Context, v1alpha1.GenericIssuer) (issuer.Status, error) {
	return b.status, nil
}

func (b *fixedBackend) Sign(context.Context, v1alpha1.GenericIssuer, *issuer.Request) ([]byte, error) {
	return nil, issuer.Permanentf("not used")
}

func TestReconcilePublishesReadinessAndKeepsTheLastTrustBundle(t *testing.T) {
	ctx := context.Background()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	iss := &v1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ca", Generation: 3},
		Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: "ca"}},
	}
	statusWrites := 0
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(iss).WithStatusSubresource(iss).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				statusWrites++
				return c.SubResource(sub).Update(ctx, obj, opts...)
			},
		}).Build()
	bundle := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), nil).pem()
	backend := &fixedBackend{status: issuer.Status{Ready: true, Reason: v1alpha1.ReasonReady, Message: "ok", TrustBundle: []byte(bundle)}}
	r := &Reconciler{client: cl, kind: request.KindIssuer, registry: registryOf(t, caKind(backend)), clock: clocktesting.NewFakePassiveClock(metav1.Now().Time)}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(iss)}

	get := func() *v1alpha1.Issuer {
		var got v1alpha1.Issuer
		if err := cl.Get(ctx, req.NamespacedName, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	got := get()
	cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.ObservedGeneration != 3 || got.Status.TrustBundle != bundle {
		t.Fatalf("status = %+v, want Ready for generation 3 with the bundle", got.Status)
	}
	if !issuer.IsReady(got) {
		t.Error("IsReady is false for a Ready issuer")
	}
	edited := got.DeepCopy()
	edited.Generation = 4
	if issuer.IsReady(edited) {
		t.Error("IsReady trusts a status written for an older generation of the spec")
	}

	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if statusWrites != 1 {
		t.Errorf("%d status writes for an unchanged status, want 1", statusWrites)
	}

	backend.status = issuer.Status{Reason: v1alpha1.ReasonSecretNotFound, Message: "Secret ns/ca of type kubernetes.io/tls not found"}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	got = get()
	cond = meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady)
	if cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonSecretNotFound {
		t.Errorf("condition = %+v, want False SecretNotFound", cond)
	}
	if got.Status.TrustBundle != bundle {
		t.Error("a not-ready issuer dropped its trust bundle; certificates it issued would stop verifying")
	}
	if issuer.IsReady(got) {
		t.Error("IsReady is true for a not-ready issuer")
	}
}

// registryOf is a registry of kinds, failing t if it is refused.
func registryOf(t *testing.T, kinds ...issuer.Kind) *issuer.Registry {
	t.Helper()
	r, err := issuer.NewRegistry(kinds...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// caKind registers b as the backend of ca specs.
func caKind(b issuer.Backend) issuer.Kind {
	return issuer.Kind{Name: "ca", Selected: func(spec *v1alpha1.IssuerSpec) bool { return spec.CA != nil }, Backend: b}
}

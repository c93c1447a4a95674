package trustbundle

import (
	"context"
	"errors"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

func bundleObject(name, signer, bundle string, labels map[string]string) *certificatesv1.ClusterTrustBundle {
	return &certificatesv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: signer, TrustBundle: bundle},
	}
}

func TestNextStep(t *testing.T) {
	ours := map[string]string{LabelManagedBy: ManagedBy}
	want := bundleObject("clusterissuers.certmint.io:ca:bundle", "clusterissuers.certmint.io/ca", "new", ours)
	same := bundleObject(want.Name, want.Spec.SignerName, "new", map[string]string{LabelManagedBy: ManagedBy, "team": "infra"})
	old := same.DeepCopy()
	old.Spec.TrustBundle = "old"

	for _, tc := range []struct {
		name                   string
		current, want          *certificatesv1.ClusterTrustBundle
		problem                error
		create, update, delete bool
		warning                bool
	}{
		{name: "nothing there and nothing to publish does nothing"},
		{name: "a bundle to publish is created", want: want, create: true},
		{name: "the same bundle is left alone", current: same, want: want},
		{name: "a different bundle is updated", current: old, want: want, update: true},
		{name: "a bundle no longer wanted is deleted", current: old, delete: true},
		{name: "an unpublishable bundle warns and keeps the last one", current: old, problem: errors.New("not a CA"), warning: true},
		{name: "an unpublishable first bundle warns", problem: errors.New("not a CA"), warning: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := nextStep(tc.current, tc.want, tc.problem)
			if (s.create != nil) != tc.create || (s.update != nil) != tc.update || (s.delete != nil) != tc.delete || (s.warning != "") != tc.warning {
				t.Fatalf("step %+v; want create %v, update %v, delete %v, warning %v", s, tc.create, tc.update, tc.delete, tc.warning)
			}
			if s.update != nil {
				if s.update.Spec.TrustBundle != "new" || s.update.Labels["team"] != "infra" || s.update.ResourceVersion != tc.current.ResourceVersion {
					t.Errorf("update %+v: want the new bundle on the current object, its other labels kept", s.update)
				}
				if tc.current.Spec.TrustBundle != "old" {
					t.Error("the current (cached) object was changed")
				}
			}
		})
	}
}

func TestTruncateKeepsEventNotesWithinTheAPILimit(t *testing.T) {
	if got := truncate("short", 10); got != "short" {
		t.Errorf("truncate of a short note = %q", got)
	}
	long := strings.Repeat("é", 600) // 1200 bytes
	got := truncate(long, maxNoteLength)
	if len(got) > maxNoteLength || !strings.HasSuffix(got, "...") || !strings.HasPrefix(long, strings.TrimSuffix(got, "...")) {
		t.Errorf("truncate to %d: %d bytes, %q", maxNoteLength, len(got), got[len(got)-8:])
	}
}

// world is a fake API server with the reconciler under test.
type world struct {
	t        *testing.T
	client   client.Client
	recorder *events.FakeRecorder
	r        *Reconciler
	writes   int
}

func newWorld(t *testing.T, objs ...client.Object) *world {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	w := &world{t: t, recorder: events.NewFakeRecorder(10)}
	w.client = fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				w.writes++
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				w.writes++
				return c.Update(ctx, obj, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				w.writes++
				return c.Delete(ctx, obj, opts...)
			},
		}).Build()
	w.r = &Reconciler{client: w.client, live: w.client, recorder: w.recorder, opts: Options{ConflictRetry: DefaultConflictRetry}}
	return w
}

func (w *world) reconcile(name string) reconcile.Result {
	w.t.Helper()
	res, err := w.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
	if err != nil {
		w.t.Fatalf("reconcile %s: %v", name, err)
	}
	return res
}

// bundle returns the ClusterTrustBundle name, nil when there is none.
func (w *world) bundle(name string) *certificatesv1.ClusterTrustBundle {
	w.t.Helper()
	var ctb certificatesv1.ClusterTrustBundle
	if err := w.client.Get(context.Background(), types.NamespacedName{Name: name}, &ctb); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		w.t.Fatal(err)
	}
	return &ctb
}

// event returns the next recorded Event, "" when there is none.
func (w *world) event() string {
	select {
	case e := <-w.recorder.Events:
		return e
	default:
		return ""
	}
}

func TestReconcileKeepsOneBundlePerIssuer(t *testing.T) {
	ca1, ca2, leaf := certs(t)
	ref := request.IssuerRef{Kind: request.KindClusterIssuer, Name: "corp"}
	name := Name(ref)
	iss := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "corp"}, Status: v1alpha1.IssuerStatus{TrustBundle: pemString(ca1)}}
	w := newWorld(t, iss)
	setBundle := func(bundle string) {
		t.Helper()
		iss.Status.TrustBundle = bundle
		if err := w.client.Update(context.Background(), iss); err != nil {
			t.Fatal(err)
		}
		w.writes = 0
	}

	w.reconcile(name)
	got := w.bundle(name)
	if got == nil || got.Spec.TrustBundle != pemString(ca1) || got.Spec.SignerName != ref.SignerName() || !managed(got) {
		t.Fatalf("after the first pass: %+v, want the issuer's bundle", got)
	}

	w.writes = 0
	w.reconcile(name)
	if w.writes != 0 {
		t.Errorf("an unchanged bundle made %d writes", w.writes)
	}

	setBundle(pemString(ca2) + pemString(ca1))
	w.reconcile(name)
	if got := w.bundle(name); got.Spec.TrustBundle != pemString(ca2)+pemString(ca1) || w.writes != 1 {
		t.Errorf("after a rotation: %q in %d writes, want both CAs in one", got.Spec.TrustBundle, w.writes)
	}

	setBundle(pemString(ca2, leaf))
	w.reconcile(name)
	if got := w.bundle(name); got.Spec.TrustBundle != pemString(ca2)+pemString(ca1) || w.writes != 0 {
		t.Errorf("an invalid bundle replaced the last one (%d writes)", w.writes)
	}
	if e := w.event(); !strings.Contains(e, "Warning "+ReasonTrustBundleInvalid) || !strings.Contains(e, "certificate 2 (CN=leaf) is not a CA") {
		t.Errorf("event %q, want a warning naming the leaf", e)
	}

	setBundle("")
	w.reconcile(name)
	if got := w.bundle(name); got != nil {
		t.Errorf("an issuer without a bundle still has %+v", got)
	}

	setBundle(pemString(ca1))
	w.reconcile(name)
	if err := w.client.Delete(context.Background(), iss); err != nil {
		t.Fatal(err)
	}
	w.reconcile(name)
	if got := w.bundle(name); got != nil {
		t.Errorf("a deleted issuer's bundle is still there")
	}
}

func TestReconcileDeletesLeftoversAndNeverTouchesOthers(t *testing.T) {
	ca1, _, _ := certs(t)
	bundle := pemString(ca1)
	ours := map[string]string{LabelManagedBy: ManagedBy}
	orphan := bundleObject("issuers.certmint.io:gone.ca:bundle", "issuers.certmint.io/gone.ca", bundle, ours)
	stray := bundleObject("clusterissuers.certmint.io:corp:copy", "clusterissuers.certmint.io/corp", bundle, ours)
	foreign := bundleObject("issuers.certmint.io:gone.other:bundle", "issuers.certmint.io/gone.other", bundle, nil)
	otherSigner := bundleObject("example.com:ca:bundle", "example.com/ca", bundle, ours)
	w := newWorld(t, orphan, stray, foreign, otherSigner)

	for _, ctb := range []*certificatesv1.ClusterTrustBundle{orphan, stray, foreign, otherSigner} {
		w.reconcile(ctb.Name)
	}
	if w.bundle(orphan.Name) != nil {
		t.Error("the bundle of an issuer that does not exist is still there")
	}
	if w.bundle(stray.Name) != nil {
		t.Error("a labelled bundle of a certmint signer under another name is still there")
	}
	if w.bundle(foreign.Name) == nil || w.bundle(otherSigner.Name) == nil {
		t.Error("a bundle without the label, or of another signer, was deleted")
	}
	if w.writes != 2 {
		t.Errorf("%d writes, want the 2 deletions", w.writes)
	}
}

func TestReconcileLeavesAForeignBundleWithTheNameAlone(t *testing.T) {
	ca1, _, _ := certs(t)
	iss := &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ca"}, Status: v1alpha1.IssuerStatus{TrustBundle: pemString(ca1)}}
	name := Name(request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"})
	foreign := bundleObject(name, "issuers.certmint.io/shop.ca", "theirs", map[string]string{"owner": "someone"})
	w := newWorld(t, iss, foreign)

	res := w.reconcile(name)
	if got := w.bundle(name); got.Spec.TrustBundle != "theirs" || got.Labels[LabelManagedBy] != "" {
		t.Errorf("the foreign bundle was changed: %+v", got)
	}
	if res.RequeueAfter != DefaultConflictRetry {
		t.Errorf("requeue after %s, want %s", res.RequeueAfter, DefaultConflictRetry)
	}
	if e := w.event(); !strings.Contains(e, "Warning "+ReasonTrustBundleNameTaken) || !strings.Contains(e, name) {
		t.Errorf("event %q, want a warning naming the bundle", e)
	}

	// Labelled, it is handed over.
	foreign.Labels = map[string]string{LabelManagedBy: ManagedBy}
	if err := w.client.Update(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	if res := w.reconcile(name); res.RequeueAfter != 0 {
		t.Errorf("requeue after %s once handed over", res.RequeueAfter)
	}
	if got := w.bundle(name); got.Spec.TrustBundle != pemString(ca1) {
		t.Errorf("a bundle handed over keeps %q", got.Spec.TrustBundle)
	}
}

func TestReconcileWaitsForTheCacheAfterItsOwnCreate(t *testing.T) {
	ca1, _, _ := certs(t)
	iss := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "corp"}, Status: v1alpha1.IssuerStatus{TrustBundle: pemString(ca1)}}
	want, err := desired(iss)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, iss)
	// The API server has the bundle; the cache has not seen it yet.
	w.r.live = fake.NewClientBuilder().WithScheme(w.client.Scheme()).WithObjects(want).Build()
	w.client = interceptor.NewClient(w.client.(client.WithWatch), interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
			return apierrors.NewAlreadyExists(certificatesv1.Resource("clustertrustbundles"), want.Name)
		},
	})
	w.r.client = w.client
	if res := w.reconcile(want.Name); res != (reconcile.Result{}) {
		t.Errorf("result %+v, want to wait for the watch event", res)
	}
	if e := w.event(); e != "" {
		t.Errorf("event %q for its own bundle", e)
	}
}

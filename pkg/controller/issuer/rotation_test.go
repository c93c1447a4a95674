package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/acme"
	"github.com/certmint/certmint/pkg/issuer/ca"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// t0 is when the rotation tests start; whole seconds, as the API stores
// times.
var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newTestCA makes a CA certificate valid from notBefore to notAfter, signed
// by parent, or self-signed when parent is nil. Every CA is named the
// same, as replacement CAs often are.
func newTestCA(t *testing.T, notBefore, notAfter time.Time, parent *testCA) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (c *testCA) pem() string { return string(encodePEM(c.cert)) }

// crossSignedBy is c's certificate again, same name and key, signed by
// other: the link an ACME chain ends with when it leads to an older root.
func (c *testCA) crossSignedBy(t *testing.T, other *testCA) *testCA {
	t.Helper()
	tmpl := *c.cert
	tmpl.SerialNumber = new(big.Int).Add(c.cert.SerialNumber, big.NewInt(1))
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, other.cert, c.cert.PublicKey, other.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: c.key}
}

func (c *testCA) secretData(t *testing.T) map[string][]byte {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		corev1.TLSCertKey:       []byte(c.pem()),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// rotationRig is one CA Issuer reconciled by the real ca backend against a
// fake API, with a fake clock.
type rotationRig struct {
	t            *testing.T
	ctx          context.Context
	client       client.Client
	clock        *clocktesting.FakeClock
	key          client.ObjectKey
	statusWrites int
}

func newRotationRig(t *testing.T, first *testCA, pol *v1alpha1.Policy) *rotationRig {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, corev1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	iss := &v1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ca", Generation: 1},
		Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: "ca"}, Policy: pol},
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ca"},
		Type:       corev1.SecretTypeTLS,
		Data:       first.secretData(t),
	}
	rig := &rotationRig{t: t, ctx: context.Background(), clock: clocktesting.NewFakeClock(t0), key: client.ObjectKeyFromObject(iss)}
	rig.client = fake.NewClientBuilder().WithScheme(scheme).WithObjects(iss, secret).WithStatusSubresource(iss).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				rig.statusWrites++
				return c.SubResource(sub).Update(ctx, obj, opts...)
			},
		}).Build()
	return rig
}

// reconcile runs one pass of a new Reconciler, as after a restart or a
// change of leader: nothing but the API carries over.
func (r *rotationRig) reconcile() reconcile.Result {
	r.t.Helper()
	backend, err := ca.New(ca.Options{Loader: ca.NewLoader(issuer.NewSecrets(r.client, r.client)), ClusterResourceNamespace: "certmint", Clock: r.clock})
	if err != nil {
		r.t.Fatal(err)
	}
	rec := &Reconciler{client: r.client, kind: request.KindIssuer, registry: registryOf(r.t, backend.Kind()), clock: r.clock}
	res, err := rec.Reconcile(r.ctx, reconcile.Request{NamespacedName: r.key})
	if err != nil {
		r.t.Fatal(err)
	}
	return res
}

func (r *rotationRig) issuer() *v1alpha1.Issuer {
	r.t.Helper()
	var iss v1alpha1.Issuer
	if err := r.client.Get(r.ctx, r.key, &iss); err != nil {
		r.t.Fatal(err)
	}
	return &iss
}

func (r *rotationRig) replaceSecret(data map[string][]byte) {
	r.t.Helper()
	var secret corev1.Secret
	if err := r.client.Get(r.ctx, r.key, &secret); err != nil {
		r.t.Fatal(err)
	}
	secret.Data = data
	if err := r.client.Update(r.ctx, &secret); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rotationRig) editSpec(edit func(*v1alpha1.Issuer)) {
	r.t.Helper()
	iss := r.issuer()
	edit(iss)
	if err := r.client.Update(r.ctx, iss); err != nil {
		r.t.Fatal(err)
	}
}

// wantBundle fails unless the published bundle holds exactly want, in
// order.
func (r *rotationRig) wantBundle(step string, want ...*testCA) {
	r.t.Helper()
	var wantPEM strings.Builder
	for _, c := range want {
		wantPEM.WriteString(c.pem())
	}
	if got := r.issuer().Status.TrustBundle; got != wantPEM.String() {
		got, _ := parsePEMCertificates(got)
		r.t.Errorf("%s: the trust bundle holds %d certificates, want %d (or in another order)", step, len(got), len(want))
	}
}

func (r *rotationRig) wantReissueBefore(step string, want *time.Time) {
	r.t.Helper()
	got := r.issuer().Status.ReissueBefore
	switch {
	case want == nil && got != nil:
		r.t.Errorf("%s: reissueBefore = %s, want unset", step, got.UTC())
	case want != nil && (got == nil || !got.Time.Equal(*want)):
		r.t.Errorf("%s: reissueBefore = %v, want %s", step, got, want.UTC())
	}
}

func TestRotatedCAStaysTrustedUntilItsLastCertificateExpires(t *testing.T) {
	year := 365 * 24 * time.Hour
	oldCA := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	newCA := newTestCA(t, t0.Add(-time.Hour), t0.Add(2*year), nil)
	rig := newRotationRig(t, oldCA, nil)

	rig.reconcile()
	rig.wantBundle("first publication", oldCA)
	rig.wantReissueBefore("first publication", nil)
	if s := rig.issuer().Status.Signing; s == nil || s.CAFingerprint != fingerprint(oldCA.cert) || s.MaxDuration.Duration != 720*time.Hour {
		t.Fatalf("signing state = %+v, want the old CA with the default maximum duration", s)
	}

	writes := rig.statusWrites
	rig.reconcile()
	if rig.statusWrites != writes {
		t.Error("a restarted controller rewrote an unchanged status")
	}

	rotatedAt := t0.Add(2*time.Hour + 300*time.Millisecond)
	rig.clock.SetTime(rotatedAt)
	rig.replaceSecret(newCA.secretData(t))
	res := rig.reconcile()
	rig.wantBundle("after the rotation", newCA, oldCA)
	// Rounded up to the second: a request created in the rotation's
	// second may have been signed by the old CA.
	wantReissue := t0.Add(2*time.Hour + time.Second)
	rig.wantReissueBefore("after the rotation", &wantReissue)
	retireAt := wantReissue.Add(720 * time.Hour)
	if r := rig.issuer().Status.RetiringCAs; len(r) != 1 || r[0].Certificate != oldCA.pem() || !r[0].Until.Time.Equal(retireAt) {
		t.Errorf("retiring CAs = %+v, want the old CA until %s (rotation + 720h)", r, retireAt)
	}
	if want := retireAt.Sub(rotatedAt); res.RequeueAfter != want {
		t.Errorf("requeue after %s, want %s: when the old CA leaves the bundle", res.RequeueAfter, want)
	}

	rig.clock.SetTime(retireAt.Add(-time.Minute))
	writes = rig.statusWrites
	rig.reconcile()
	rig.wantBundle("a restart during the overlap", newCA, oldCA)
	if rig.statusWrites != writes {
		t.Error("a restart during the overlap rewrote the status")
	}
	rig.wantReissueBefore("a restart during the overlap", &wantReissue)

	rig.clock.SetTime(retireAt)
	res = rig.reconcile()
	rig.wantBundle("when the old CA's certificates have expired", newCA)
	if r := rig.issuer().Status.RetiringCAs; len(r) != 0 {
		t.Errorf("retiring CAs = %+v after the overlap, want none", r)
	}
	rig.wantReissueBefore("when the old CA's certificates have expired", &wantReissue)
	if want := newCA.cert.NotAfter.Add(-10 * time.Minute).Sub(retireAt); res.RequeueAfter != want {
		t.Errorf("requeue after %s, want %s: only the new CA's expiry is left to wait for", res.RequeueAfter, want)
	}
}

func TestRetiringCAOverlap(t *testing.T) {
	year := 365 * 24 * time.Hour
	for _, c := range []struct {
		name      string
		oldExpiry time.Duration
		policy    *v1alpha1.Policy
		// editPolicy changes the policy at the rotation, or in a pass of
		// its own before it with editFirst.
		editPolicy *v1alpha1.Policy
		editFirst  bool
		wantUntil  time.Duration
	}{
		{name: "the default maximum lifetime bounds the overlap", oldExpiry: year, wantUntil: 720 * time.Hour},
		{name: "the policy's maximum duration bounds the overlap", oldExpiry: year,
			policy: &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: 24 * time.Hour}}, wantUntil: 24 * time.Hour},
		{name: "an old CA that expires sooner leaves at its expiry", oldExpiry: 100 * time.Hour, wantUntil: 100 * time.Hour},
		{name: "a maximum shortened at the rotation still covers certificates signed under the longer one", oldExpiry: year,
			policy:     &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: 48 * time.Hour}},
			editPolicy: &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: time.Hour}}, wantUntil: 48 * time.Hour},
		{name: "a maximum shortened before the rotation still covers certificates signed under the longer one", oldExpiry: year,
			policy:     &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: 48 * time.Hour}},
			editPolicy: &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: time.Hour}}, editFirst: true, wantUntil: 48 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			oldCA := newTestCA(t, t0.Add(-time.Hour), t0.Add(c.oldExpiry), nil)
			rig := newRotationRig(t, oldCA, c.policy)
			rig.reconcile()
			if c.editPolicy != nil {
				rig.editSpec(func(iss *v1alpha1.Issuer) { iss.Spec.Policy = c.editPolicy; iss.Generation++ })
				if c.editFirst {
					rig.reconcile()
				}
			}
			rig.replaceSecret(newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil).secretData(t))
			rig.reconcile()
			r := rig.issuer().Status.RetiringCAs
			if len(r) != 1 || !r[0].Until.Time.Equal(t0.Add(c.wantUntil)) {
				t.Errorf("retiring CAs = %+v, want the old CA until %s", r, t0.Add(c.wantUntil))
			}
		})
	}
}

func TestReissueBeforeFollowsChangesToWhatTheIssuerSigns(t *testing.T) {
	year := 365 * 24 * time.Hour
	caCert := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	rig := newRotationRig(t, caCert, nil)
	rig.reconcile()

	rig.clock.Step(time.Minute)
	rig.editSpec(func(iss *v1alpha1.Issuer) { iss.Labels = map[string]string{"team": "a"} })
	rig.reconcile()
	rig.wantReissueBefore("a label change", nil)

	rig.clock.Step(time.Minute)
	rig.replaceSecret(caCert.secretData(t))
	rig.reconcile()
	rig.wantReissueBefore("the same CA written again", nil)

	rig.clock.Step(time.Minute)
	rig.editSpec(func(iss *v1alpha1.Issuer) {
		iss.Spec.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"${POD_NAME}.${POD_NAMESPACE}.svc"}}
		iss.Generation++
	})
	rig.reconcile()
	changedAt := rig.clock.Now()
	rig.wantReissueBefore("a policy change", &changedAt)
	rig.wantBundle("a policy change", caCert)
	if r := rig.issuer().Status.RetiringCAs; len(r) != 0 {
		t.Errorf("a policy change retired CAs: %+v", r)
	}

	rig.clock.Step(time.Minute)
	writes := rig.statusWrites
	rig.reconcile()
	rig.wantReissueBefore("a restart after the policy change", &changedAt)
	if rig.statusWrites != writes {
		t.Error("a restart after the policy change rewrote the status")
	}
}

func TestRollbackToARetiringCA(t *testing.T) {
	year := 365 * 24 * time.Hour
	first := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	second := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	rig := newRotationRig(t, first, nil)
	rig.reconcile()
	rig.replaceSecret(second.secretData(t))
	rig.reconcile()
	rig.clock.Step(time.Hour)
	rig.replaceSecret(first.secretData(t))
	rig.reconcile()

	rig.wantBundle("after rolling back", first, second)
	r := rig.issuer().Status.RetiringCAs
	if len(r) != 1 || r[0].Certificate != second.pem() {
		t.Fatalf("retiring CAs = %+v, want only the CA rolled back from", r)
	}
	if want := t0.Add(time.Hour + 720*time.Hour); !r[0].Until.Time.Equal(want) {
		t.Errorf("the CA rolled back from retires at %s, want %s", r[0].Until.UTC(), want)
	}
}

func TestNotReadyIssuerStillDropsRetiredCAs(t *testing.T) {
	year := 365 * 24 * time.Hour
	oldCA := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	newCA := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	rig := newRotationRig(t, oldCA, nil)
	rig.reconcile()
	rig.replaceSecret(newCA.secretData(t))
	rig.reconcile()

	rig.replaceSecret(map[string][]byte{corev1.TLSCertKey: []byte("garbage"), corev1.TLSPrivateKeyKey: []byte("garbage")})
	res := rig.reconcile()
	if issuer.IsReady(rig.issuer()) {
		t.Fatal("an issuer with a broken Secret is Ready")
	}
	rig.wantBundle("while not ready", newCA, oldCA)
	if want := 720 * time.Hour; res.RequeueAfter != want {
		t.Errorf("requeue after %s, want %s: when the old CA retires", res.RequeueAfter, want)
	}

	rig.clock.Step(720 * time.Hour)
	rig.reconcile()
	rig.wantBundle("not ready, after the old CA's certificates expired", newCA)
}

func TestPublishedBundleTrusts(t *testing.T) {
	year := 365 * 24 * time.Hour
	root := newTestCA(t, t0, t0.Add(year), nil)
	intermediate := newTestCA(t, t0, t0.Add(year), root)
	sameName := newTestCA(t, t0, t0.Add(year), nil)
	leafOf := func(parent *testCA) string {
		leaf := newTestCA(t, t0, t0.Add(time.Hour), parent)
		return leaf.pem()
	}
	// An ACME chain: leaf, intermediate, and the root that signed the
	// intermediate cross-signed by an older root, which has expired.
	olderRoot := newTestCA(t, t0.Add(-2*year), t0.Add(-time.Hour), nil)
	acmeChain := leafOf(intermediate) + intermediate.pem() + root.crossSignedBy(t, olderRoot).pem()
	otherIntermediate := newTestCA(t, t0, t0.Add(year), sameName)
	otherACMEChain := leafOf(otherIntermediate) + otherIntermediate.pem() + sameName.crossSignedBy(t, olderRoot).pem()
	for _, c := range []struct {
		name   string
		bundle string
		chain  string
		want   bool
	}{
		{name: "a leaf of a root in the bundle", bundle: root.pem(), chain: leafOf(root), want: true},
		{name: "a leaf and intermediate under a root in the bundle", bundle: root.pem(), chain: leafOf(intermediate) + intermediate.pem(), want: true},
		{name: "the same intermediate against a bundle without its root", bundle: sameName.pem(), chain: leafOf(intermediate) + intermediate.pem(), want: false},
		{name: "a chain whose intermediate is itself in the bundle", bundle: intermediate.pem(), chain: leafOf(intermediate) + intermediate.pem(), want: true},
		{name: "a leaf of a new root with the same name as the published one", bundle: root.pem(), chain: leafOf(sameName), want: false},
		{name: "a leaf of a new root once both are published", bundle: sameName.pem() + root.pem(), chain: leafOf(sameName), want: true},
		{name: "any chain of an issuer that publishes no bundle", bundle: "", chain: leafOf(sameName), want: true},
		{name: "a chain ending in a cross-signed root, with that root self-signed in the bundle", bundle: root.pem(), chain: acmeChain, want: true},
		{name: "a chain ending in a cross-signed root, with the root that cross-signed it in the bundle", bundle: olderRoot.pem(), chain: acmeChain, want: true},
		{name: "a chain ending in a cross-signed root of another key with the same name as the published one", bundle: root.pem(), chain: otherACMEChain, want: false},
	} {
		t.Run(c.name, func(t *testing.T) {
			iss := &v1alpha1.Issuer{Status: v1alpha1.IssuerStatus{TrustBundle: c.bundle}}
			got, err := issuer.PublishedBundleTrusts(iss, []byte(c.chain))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("PublishedBundleTrusts = %v, want %v", got, c.want)
			}
		})
	}
}

func TestABackendWithoutACAOfItsOwnRotatesWithItsTrustBundle(t *testing.T) {
	year := 365 * 24 * time.Hour
	oldRoot := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	newRoot := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	prev := &v1alpha1.IssuerStatus{}
	spec := acmeSigner
	ready := func(root *testCA) issuer.Status {
		return issuer.Status{Ready: true, TrustBundle: []byte(root.pem()), LongestLifetime: acmeIssued}
	}
	first, err := nextTrust(prev, spec, ready(oldRoot), t0)
	if err != nil {
		t.Fatal(err)
	}
	prev = &v1alpha1.IssuerStatus{TrustBundle: first.bundle, Signing: first.signing}
	next, err := nextTrust(prev, spec, ready(newRoot), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !next.rotated || next.bundle != newRoot.pem()+oldRoot.pem() || len(next.retiring) != 1 {
		t.Errorf("rotated %v, %d retiring, bundle of %d bytes; want the new root published and the old one retiring", next.rotated, len(next.retiring), len(next.bundle))
	}

	t.Run("a root that issued nothing is not kept", func(t *testing.T) {
		issuedNothing := issuer.Status{Ready: true, TrustBundle: []byte(oldRoot.pem())}
		first, err := nextTrust(&v1alpha1.IssuerStatus{}, spec, issuedNothing, t0)
		if err != nil {
			t.Fatal(err)
		}
		movedOn := issuer.Status{Ready: true, TrustBundle: []byte(newRoot.pem())}
		next, err := nextTrust(&v1alpha1.IssuerStatus{TrustBundle: first.bundle, Signing: first.signing}, spec, movedOn, t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if next.bundle != newRoot.pem() || len(next.retiring) != 0 {
			t.Errorf("%d retiring, want none: no certificate chains to the old root", len(next.retiring))
		}
	})
}

func TestAnUpgradedControllerRetiresCAsItFindsPublished(t *testing.T) {
	year := 365 * 24 * time.Hour
	oldRoot := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	newRoot := newTestCA(t, t0.Add(-time.Hour), t0.Add(year), nil)
	spec := caSigner
	ready := issuer.Status{Ready: true, TrustBundle: []byte(newRoot.pem()), CA: newRoot.cert}
	for _, c := range []struct {
		name         string
		published    string
		wantRotated  bool
		wantRetiring int
	}{
		{name: "a bundle of the current CA is taken as it is", published: newRoot.pem()},
		{name: "a bundle of another CA retires it", published: oldRoot.pem(), wantRotated: true, wantRetiring: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := nextTrust(&v1alpha1.IssuerStatus{TrustBundle: c.published}, spec, ready, t0)
			if err != nil {
				t.Fatal(err)
			}
			if got.rotated != c.wantRotated || (got.reissueBefore != nil) != c.wantRotated || len(got.retiring) != c.wantRetiring {
				t.Errorf("rotated %v, reissueBefore %v, %d retiring; want rotated %v", got.rotated, got.reissueBefore, len(got.retiring), c.wantRotated)
			}
		})
	}
}

// acmeStub is an ACME backend whose server's chains lead to root, and
// whose longest certificate since the controller started lived issued.
type acmeStub struct {
	root   *testCA
	issued time.Duration
}

func (a *acmeStub) Ready(context.Context, v1alpha1.GenericIssuer) (issuer.Status, error) {
	return issuer.Status{Ready: true, TrustBundle: []byte(a.root.pem()), LongestLifetime: a.issued}, nil
}

func (a *acmeStub) Sign(context.Context, v1alpha1.GenericIssuer, *issuer.Request) ([]byte, error) {
	panic("the issuer controller does not sign")
}

func TestAnACMERootStaysTrustedForTheLongestACMELifetimeAfterTheServerMovesToAnother(t *testing.T) {
	year := 365 * 24 * time.Hour
	oldRoot := newTestCA(t, t0.Add(-year), t0.Add(2*year), nil)
	newRoot := newTestCA(t, t0.Add(-time.Hour), t0.Add(5*year), nil)
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	iss := &v1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", Generation: 1},
		Spec:       v1alpha1.IssuerSpec{ACME: &v1alpha1.ACMEIssuer{}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(iss).WithStatusSubresource(iss).Build()
	clock := clocktesting.NewFakeClock(t0)
	backend := &acmeStub{root: oldRoot}
	rec := &Reconciler{client: c, kind: request.KindIssuer, clock: clock, registry: registryOf(t, issuer.Kind{
		Name: "acme", Selected: func(spec *v1alpha1.IssuerSpec) bool { return spec.ACME != nil }, MaxLifetime: acme.MaxLifetime, Backend: backend,
	})}
	reconcileAndGet := func() (reconcile.Result, *v1alpha1.Issuer) {
		t.Helper()
		res, err := rec.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(iss)})
		if err != nil {
			t.Fatal(err)
		}
		var got v1alpha1.Issuer
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(iss), &got); err != nil {
			t.Fatal(err)
		}
		return res, &got
	}
	reconcileAndGet()
	// The server chose the lifetime of what the old root signed, 90 days,
	// whatever the policy's 720h maximum asked for; the root itself is
	// valid for two more years, which is no reason to trust it that long.
	clock.SetTime(t0.Add(30 * time.Minute))
	backend.issued = 90 * 24 * time.Hour
	if _, got := reconcileAndGet(); got.Status.Signing.IssuedLifetime == nil || got.Status.Signing.IssuedLifetime.Duration != backend.issued {
		t.Fatalf("signing state %+v, want the lifetime issued recorded", got.Status.Signing)
	}

	// A restarted controller has seen nothing issued; the status has.
	rotatedAt := t0.Add(time.Hour)
	clock.SetTime(rotatedAt)
	backend.root, backend.issued = newRoot, 0
	res, got := reconcileAndGet()
	until := rotatedAt.Add(90 * 24 * time.Hour)
	r := got.Status.RetiringCAs
	if len(r) != 1 || r[0].Certificate != oldRoot.pem() || !r[0].Until.Time.Equal(until) {
		t.Errorf("retiring CAs = %+v, want the old root until %s", r, until)
	}
	if want := until.Sub(rotatedAt); res.RequeueAfter != want {
		t.Errorf("requeue after %s, want %s: when the longest ACME certificate has expired", res.RequeueAfter, want)
	}

	clock.SetTime(until.Add(-time.Minute))
	if _, got = reconcileAndGet(); got.Status.TrustBundle != newRoot.pem()+oldRoot.pem() {
		t.Error("before the last certificate of the old root expired, the trust bundle no longer holds both roots")
	}
	clock.SetTime(until)
	if _, got = reconcileAndGet(); got.Status.TrustBundle != newRoot.pem() || len(got.Status.RetiringCAs) != 0 {
		t.Errorf("once the longest ACME certificate expired: %d retiring CAs, want the new root alone in the bundle", len(got.Status.RetiringCAs))
	}
}

func TestTheOldSignerDecidesWhetherTheMaximumDurationBoundsTheOverlap(t *testing.T) {
	year := 365 * 24 * time.Hour
	oldRoot := newTestCA(t, t0.Add(-year), t0.Add(2*year), nil)
	newRoot := newTestCA(t, t0.Add(-time.Hour), t0.Add(5*year), nil)
	// An ACME backend and a CA, each signing as its kind declares.
	type backend struct {
		signer signer
		status func(*testCA) issuer.Status
	}
	// The ACME server has issued certificates for 30 days.
	acme := backend{acmeSigner, func(root *testCA) issuer.Status {
		return issuer.Status{Ready: true, TrustBundle: []byte(root.pem()), LongestLifetime: acmeIssued}
	}}
	withCA := backend{caSigner, func(root *testCA) issuer.Status {
		return issuer.Status{Ready: true, TrustBundle: []byte(root.pem()), CA: root.cert}
	}}
	for _, c := range []struct {
		name string
		// recorded is false for a status from before the controller
		// recorded what signs.
		from, to  backend
		recorded  bool
		wantUntil time.Time
	}{
		{name: "an ACME server moving to a new root", from: acme, to: acme, recorded: true, wantUntil: t0.Add(acmeIssued)},
		{name: "a switch from ACME to a CA", from: acme, to: withCA, recorded: true, wantUntil: t0.Add(acmeIssued)},
		{name: "a switch from a CA to ACME", from: withCA, to: acme, recorded: true, wantUntil: t0.Add(720 * time.Hour)},
		{name: "an ACME issuer whose status predates the signing record", from: acme, to: acme, wantUntil: t0.Add(acmeRootsRetireWithin)},
		{name: "a CA issuer whose status predates the signing record", from: withCA, to: withCA, wantUntil: t0.Add(720 * time.Hour)},
	} {
		t.Run(c.name, func(t *testing.T) {
			first, err := nextTrust(&v1alpha1.IssuerStatus{}, c.from.signer, c.from.status(oldRoot), t0.Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			prev := &v1alpha1.IssuerStatus{TrustBundle: first.bundle}
			if c.recorded {
				prev.Signing = first.signing
			}
			got, err := nextTrust(prev, c.to.signer, c.to.status(newRoot), t0)
			if err != nil {
				t.Fatal(err)
			}
			if r := got.retiring; len(r) != 1 || !r[0].Until.Time.Equal(c.wantUntil) {
				t.Errorf("retiring CAs = %+v, want the old root until %s", r, c.wantUntil)
			}
		})
	}
}

// acmeRootsRetireWithin is the documented bound (docs/rotation.md) on how
// long a root an ACME issuer no longer chains to stays trusted: public ACME
// CAs issue for 90 days at most. Spelled out here, not taken from the code,
// so that a change of the code's constant fails these tests.
const acmeRootsRetireWithin = 100 * 24 * time.Hour

// acmeIssued is the lifetime of the certificates the ACME servers of these
// tests issued.
const acmeIssued = 30 * 24 * time.Hour

// The signers of the two kinds of backend: a CA under the default policy,
// and an ACME server, which chooses lifetimes itself up to the bound its
// kind declares.
var (
	caSigner   = signer{kind: "ca", maxLifetime: policy.MaxDuration(nil)}
	acmeSigner = signer{kind: "acme", maxLifetime: acme.MaxLifetime, choosesLifetime: true}
)

package controller_test

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

// TestCARotation replaces the CA Secret of an Issuer while requests keep
// coming, and checks what the controller promises relying parties: at
// every moment, each certificate issued so far verifies against the trust
// bundle the issuer publishes; the new CA signs only once the bundle holds
// it; the old CA stays until its last certificate has expired; drivers are
// asked to re-issue once, and neither a restart nor a no-op edit asks
// again.
func TestCARotation(t *testing.T) {
	e := requireEnv(t)
	controller := startController(t, "rotation")
	it := newIssuance(t, uniqueName("rotation"))
	iss := &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: it.ns, Name: "ca"}}
	if err := e.admin.Get(t.Context(), client.ObjectKeyFromObject(iss), iss); err != nil {
		t.Fatal(err)
	}
	if iss.Status.ReissueBefore != nil || len(iss.Status.RetiringCAs) != 0 {
		t.Fatalf("a new issuer asks for re-issuance (%v) or retires CAs (%d)", iss.Status.ReissueBefore, len(iss.Status.RetiringCAs))
	}
	oldCA := certsIn(t, []byte(iss.Status.TrustBundle))[0]

	tl := watchTimeline(t, it)
	load := startRequestLoad(t, it, 20*time.Millisecond)

	// Some certificates from the old CA first, then the rotation while
	// requests are in flight. The new CA has the same subject as the old
	// one, as a renewed CA often does.
	tl.waitFor(t, "certificates from the old CA", func() bool { return tl.issuedBy(oldCA) >= 10 })
	// The issuer controller normally publishes within milliseconds of the
	// Secret change, too fast to show that nothing waits for it; the API
	// server holds its status writes for a while to widen that window.
	release := holdIssuerStatus(t, iss)
	newData := caSecretData(t, nil)
	newCA := certsIn(t, newData[corev1.TLSCertKey])[0]
	var secret corev1.Secret
	if err := e.admin.Get(t.Context(), client.ObjectKey{Namespace: it.ns, Name: "ca"}, &secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = newData
	rotatedAt := time.Now()
	if err := e.admin.Update(t.Context(), &secret); err != nil {
		t.Fatal(err)
	}
	tl.waitFor(t, "the request controller to hold back certificates of the unpublished CA", func() bool {
		return strings.Contains(controllerLog(t, controller), "waiting for the issuer to publish the CA")
	})
	time.Sleep(2 * time.Second)
	release()
	tl.waitFor(t, "certificates from the new CA", func() bool { return tl.issuedBy(newCA) >= 20 })
	load.stop(t)
	tl.waitFor(t, "every request to be issued", func() bool { return tl.issuedCount() == load.count() })
	tl.stop()

	t.Run("every certificate verifies against every bundle published while it is valid", func(t *testing.T) {
		failures := tl.untrustedIssuances()
		for _, f := range failures[:min(len(failures), 5)] {
			t.Error(f)
		}
		if len(failures) > 0 {
			t.Errorf("%d of %d certificates were not trusted by a bundle published while they were valid", len(failures), tl.issuedCount())
		}
		t.Logf("%d certificates from the old CA, %d from the new; %d bundles published; %d times a request waited for the new CA's publication",
			tl.issuedBy(oldCA), tl.issuedBy(newCA), len(tl.bundles), strings.Count(controllerLog(t, controller), "waiting for the issuer to publish the CA"))
	})

	if err := e.admin.Get(t.Context(), client.ObjectKeyFromObject(iss), iss); err != nil {
		t.Fatal(err)
	}
	t.Run("the status names the new CA, keeps the old one retiring and asks for re-issuance", func(t *testing.T) {
		st := iss.Status
		if st.Signing == nil || st.Signing.CAFingerprint != certFingerprint(newCA) {
			t.Errorf("signing = %+v, want the new CA %s", st.Signing, certFingerprint(newCA))
		}
		if len(st.RetiringCAs) != 1 || st.RetiringCAs[0].Certificate != string(pemOf(oldCA)) {
			t.Fatalf("retiring CAs = %+v, want the old CA", st.RetiringCAs)
		}
		// Certificates of the old CA live at most the default 720h, and
		// not beyond the old CA itself, which expires sooner.
		if until := st.RetiringCAs[0].Until.Time; !until.Equal(oldCA.NotAfter) {
			t.Errorf("the old CA retires at %s, want at its expiry %s, before rotation + 720h", until, oldCA.NotAfter)
		}
		if st.ReissueBefore == nil || st.ReissueBefore.Time.Before(rotatedAt.Truncate(time.Second)) || st.ReissueBefore.After(time.Now().Add(time.Second)) {
			t.Errorf("reissueBefore = %v, want the time of the rotation (%s)", st.ReissueBefore, rotatedAt)
		}
	})

	testT := t
	t.Run("a restarted controller keeps the overlap and asks for nothing new", func(t *testing.T) {
		before := iss.ResourceVersion
		controller.Stop()
		// Started for the rest of the test, not only this step.
		controller = startController(testT, "rotation-restarted")
		// The gauge is set by every reconcile of the issuer: once it shows,
		// the new leader has judged the issuer.
		gauge := `certmint_issuer_ready{signer="` + it.signer + `"}`
		err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			v, err := controller.metric(gauge)
			return err == nil && v == 1, nil
		})
		if err != nil {
			t.Fatalf("the restarted controller did not reconcile the issuer: %v", err)
		}
		// The gauge is set just before a status write; let one land.
		time.Sleep(time.Second)
		var after v1alpha1.Issuer
		if err := e.admin.Get(t.Context(), client.ObjectKeyFromObject(iss), &after); err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before {
			t.Errorf("the restarted controller rewrote the status: %+v", after.Status)
		}
	})

	t.Run("a no-op edit asks for nothing; a policy change asks for re-issuance", func(t *testing.T) {
		reissueBefore := iss.Status.ReissueBefore.Time
		iss.Labels = map[string]string{"edited": "yes"}
		if err := e.admin.Update(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if err := e.admin.Get(t.Context(), client.ObjectKeyFromObject(iss), iss); err != nil {
			t.Fatal(err)
		}
		if !iss.Status.ReissueBefore.Time.Equal(reissueBefore) {
			t.Errorf("a label change moved reissueBefore to %s", iss.Status.ReissueBefore)
		}

		// At least a second later, so the new time differs once stored.
		time.Sleep(time.Second)
		iss.Spec.Policy = &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: 48 * time.Hour}}
		if err := e.admin.Update(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		waitForIssuer(t, iss, "reissueBefore to move", func(st *v1alpha1.IssuerStatus) bool {
			return st.ReissueBefore != nil && st.ReissueBefore.After(reissueBefore)
		})
		if iss.Status.Signing.MaxDuration.Duration != 720*time.Hour {
			t.Errorf("after shortening the maximum the signing state allows %s; certificates of up to 720h are still out", iss.Status.Signing.MaxDuration.Duration)
		}
	})

	t.Run("a regenerated selfSigned root rotates the same way", func(t *testing.T) {
		self := &v1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: it.ns, Name: "self"},
			Spec:       v1alpha1.IssuerSpec{SelfSigned: &v1alpha1.SelfSignedIssuer{}},
		}
		if err := e.admin.Create(t.Context(), self); err != nil {
			t.Fatal(err)
		}
		waitReady(t, self, metav1.ConditionTrue, v1alpha1.ReasonReady)
		firstRoot := self.Status.TrustBundle
		var roots corev1.SecretList
		if err := e.admin.List(t.Context(), &roots, client.InNamespace(certmintNS), client.MatchingLabels{"certmint.io/issuer-name": "self", "certmint.io/issuer-namespace": it.ns}); err != nil || len(roots.Items) != 1 {
			t.Fatalf("want the one root Secret of the issuer, got %d (%v)", len(roots.Items), err)
		}
		if err := e.admin.Delete(t.Context(), &roots.Items[0]); err != nil {
			t.Fatal(err)
		}
		waitForIssuer(t, self, "a second root next to the first", func(st *v1alpha1.IssuerStatus) bool {
			return len(st.RetiringCAs) == 1 && st.RetiringCAs[0].Certificate == firstRoot && st.ReissueBefore != nil &&
				strings.HasSuffix(st.TrustBundle, firstRoot) && len(st.TrustBundle) > len(firstRoot)
		})
	})
}

// timeline records, in the API server's order, the trust bundles an issuer
// published and the certificates issued for its requests.
type timeline struct {
	mu        sync.Mutex
	bundles   []publishedBundle
	issuances map[string]issuedCert
	cancel    context.CancelFunc
	done      sync.WaitGroup
	errs      []error
}

type publishedBundle struct {
	revision uint64
	roots    *x509.CertPool
	pem      string
}

type issuedCert struct {
	revision uint64
	cert     *x509.Certificate
}

// watchTimeline watches it's issuer and its requests. Ordering the two
// streams relies on resourceVersions being etcd revisions, which order
// every write in the cluster: true of kube-apiserver on etcd, which is what
// runs here.
func watchTimeline(t *testing.T, it *issuance) *timeline {
	t.Helper()
	wc, err := client.NewWithWatch(env.cp.Config, client.Options{Scheme: env.scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	tl := &timeline{issuances: map[string]issuedCert{}, cancel: cancel}
	tl.done.Add(2)
	go tl.follow(ctx, wc, &v1alpha1.IssuerList{}, []client.ListOption{client.InNamespace(it.ns), client.MatchingFields{"metadata.name": "ca"}}, func(obj any) error {
		iss := obj.(*v1alpha1.Issuer)
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM([]byte(iss.Status.TrustBundle))
		rev, err := strconv.ParseUint(iss.ResourceVersion, 10, 64)
		if err != nil {
			return err
		}
		tl.bundles = append(tl.bundles, publishedBundle{revision: rev, roots: roots, pem: iss.Status.TrustBundle})
		return nil
	})
	go tl.follow(ctx, wc, &certificatesv1.CertificateSigningRequestList{}, nil, func(obj any) error {
		csr := obj.(*certificatesv1.CertificateSigningRequest)
		if csr.Spec.SignerName != it.signer || len(csr.Status.Certificate) == 0 {
			return nil
		}
		if _, seen := tl.issuances[csr.Name]; seen {
			return nil
		}
		rev, err := strconv.ParseUint(csr.ResourceVersion, 10, 64)
		if err != nil {
			return err
		}
		block, _ := pem.Decode(csr.Status.Certificate)
		if block == nil {
			return errString("request " + csr.Name + " holds no PEM certificate")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return err
		}
		tl.issuances[csr.Name] = issuedCert{revision: rev, cert: cert}
		return nil
	})
	t.Cleanup(tl.stop)
	return tl
}

type errString string

func (e errString) Error() string { return string(e) }

// follow records every state of the objects of list's kind: those listed,
// then every change, resuming the watch from the last revision seen when
// the API server ends it.
func (tl *timeline) follow(ctx context.Context, wc client.WithWatch, list client.ObjectList, opts []client.ListOption, record func(any) error) {
	defer tl.done.Done()
	fail := func(err error) {
		tl.mu.Lock()
		tl.errs = append(tl.errs, err)
		tl.mu.Unlock()
	}
	if err := wc.List(ctx, list, opts...); err != nil {
		fail(err)
		return
	}
	tl.mu.Lock()
	err := apimeta.EachListItem(list, func(obj runtime.Object) error { return record(obj) })
	tl.mu.Unlock()
	if err != nil {
		fail(err)
		return
	}
	revision := list.GetResourceVersion()
	for ctx.Err() == nil {
		w, err := wc.Watch(ctx, list, append(slices.Clone(opts), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: revision}})...)
		if err != nil {
			if ctx.Err() == nil {
				fail(err)
			}
			return
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				// Typically a watch cache still catching up: the next
				// watch resumes where this one stopped.
				break
			}
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			tl.mu.Lock()
			revision = ev.Object.(client.Object).GetResourceVersion()
			if err := record(ev.Object); err != nil {
				tl.errs = append(tl.errs, err)
			}
			tl.mu.Unlock()
		}
		w.Stop()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (tl *timeline) stop() {
	tl.cancel()
	tl.done.Wait()
}

func (tl *timeline) waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		return done(), nil
	})
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.errs) > 0 {
		t.Fatalf("watching: %v", tl.errs)
	}
	if err != nil {
		t.Fatalf("waiting for %s: %v (%d issued, %d bundles published)", what, err, len(tl.issuances), len(tl.bundles))
	}
}

func (tl *timeline) issuedCount() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return len(tl.issuances)
}

// issuedBy counts the certificates ca signed.
func (tl *timeline) issuedBy(ca *x509.Certificate) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n := 0
	for _, is := range tl.issuances {
		if is.cert.CheckSignatureFrom(ca) == nil {
			n++
		}
	}
	return n
}

// untrustedIssuances lists the certificates that some bundle published
// from the moment they were issued on would reject, each with the first
// such bundle: a client holding it would have refused them.
func (tl *timeline) untrustedIssuances() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	slices.SortFunc(tl.bundles, func(a, b publishedBundle) int { return cmp.Compare(a.revision, b.revision) })
	var out []string
	for name, is := range tl.issuances {
		// The bundle in effect when the certificate was written, and every
		// one after it.
		first := len(tl.bundles) - 1
		for first > 0 && tl.bundles[first].revision > is.revision {
			first--
		}
		for _, b := range tl.bundles[max(first, 0):] {
			if _, err := is.cert.Verify(x509.VerifyOptions{Roots: b.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				out = append(out, "request "+name+" (revision "+strconv.FormatUint(is.revision, 10)+") against the bundle of revision "+strconv.FormatUint(b.revision, 10)+": "+err.Error())
				break
			}
		}
	}
	return out
}

// requestLoad creates requests for pod A from node A's driver at a steady
// pace until stopped.
type requestLoad struct {
	stopCh  chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	created int
	err     error
}

func startRequestLoad(t *testing.T, it *issuance, every time.Duration) *requestLoad {
	t.Helper()
	l := &requestLoad{stopCh: make(chan struct{}), done: make(chan struct{})}
	// Built here: newCSR may call t.Fatal, which only the test goroutine
	// may do.
	csr := newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}})
	go func() {
		defer close(l.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-l.stopCh:
				return
			case <-tick.C:
			}
			_, err := env.driverA.CertificatesV1().CertificateSigningRequests().Create(context.Background(), csr.DeepCopy(), metav1.CreateOptions{})
			l.mu.Lock()
			if err != nil {
				l.err = err
			} else {
				l.created++
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.stop(t) })
	return l
}

func (l *requestLoad) stop(t *testing.T) {
	t.Helper()
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		t.Errorf("creating requests: %v", l.err)
	}
}

func (l *requestLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.created
}

// waitForIssuer waits until done holds for iss's status and leaves the
// last seen issuer in iss.
func waitForIssuer(t *testing.T, iss v1alpha1.GenericIssuer, what string, done func(*v1alpha1.IssuerStatus) bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(iss), iss); err != nil {
			return false, err
		}
		return done(iss.GetStatus()), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v; status %+v", what, err, iss.GetStatus())
	}
}

func certFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func controllerLog(t *testing.T, p *controllerProcess) string {
	t.Helper()
	out, err := p.Log()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// certsIn parses every certificate of a PEM bundle.
func certsIn(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		if block, bundle = pem.Decode(bundle); block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// holdLabel on an issuer makes the policy of holdIssuerStatus refuse writes
// to its status.
const holdLabel = "test.certmint.io/hold-status"

// holdIssuerStatus makes the API server refuse status writes to iss, as a
// slow or briefly partitioned issuer controller would fail to make them,
// until the returned func is called.
func holdIssuerStatus(t *testing.T, iss *v1alpha1.Issuer) (release func()) {
	t.Helper()
	ctx := t.Context()
	name := "hold-issuer-status-" + iss.Namespace
	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"certmint.io"}, APIVersions: []string{"v1alpha1"}, Resources: []string{"issuers/status"}},
				}}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "!has(object.metadata.labels) || !('" + holdLabel + "' in object.metadata.labels)",
				Message:    "status writes are held by the test",
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: iss.Namespace},
			}},
		},
	}
	for _, obj := range []client.Object{vap, binding} {
		if err := env.admin.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.admin.Delete(context.Background(), obj) })
	}
	setLabel := func(held bool) {
		t.Helper()
		var current v1alpha1.Issuer
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(iss), &current); err != nil {
			t.Fatal(err)
		}
		if held {
			current.Labels = map[string]string{holdLabel: "true"}
		} else {
			delete(current.Labels, holdLabel)
		}
		if err := env.admin.Update(ctx, &current); err != nil {
			t.Fatal(err)
		}
	}
	setLabel(true)
	// Policies take effect a moment after they are created: wait until an
	// unchanged status write is refused.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var current v1alpha1.Issuer
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(iss), &current); err != nil {
			return false, err
		}
		err := env.admin.Status().Update(ctx, &current)
		return err != nil && strings.Contains(err.Error(), "held by the test"), nil
	})
	if err != nil {
		t.Fatalf("the status hold did not take effect: %v", err)
	}
	return func() { setLabel(false) }
}

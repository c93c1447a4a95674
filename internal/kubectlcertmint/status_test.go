package kubectlcertmint

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// certmintCSR is a request the driver on node made for pod namespace/name,
// created age ago, with conditions.
func certmintCSR(name string, issuer request.IssuerRef, pod, node string, age time.Duration, conds ...certificatesv1.CertificateSigningRequestCondition) *certificatesv1.CertificateSigningRequest {
	ns, podName, _ := strings.Cut(pod, "/")
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, CreationTimestamp: ago(age),
			Labels:      map[string]string{request.LabelManagedBy: request.DriverName, request.LabelNode: node, request.LabelPodUID: "uid-" + podName},
			Annotations: map[string]string{request.AnnotationPodNamespace: ns, request.AnnotationPodName: podName},
		},
		Spec:   certificatesv1.CertificateSigningRequestSpec{SignerName: issuer.SignerName()},
		Status: certificatesv1.CertificateSigningRequestStatus{Conditions: conds},
	}
}

func csrCondition(t certificatesv1.RequestConditionType, reason, message string) certificatesv1.CertificateSigningRequestCondition {
	return certificatesv1.CertificateSigningRequestCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message}
}

var (
	mesh   = request.IssuerRef{Kind: request.KindClusterIssuer, Name: "mesh"}
	shopCA = request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}
)

// statusFixture is a cluster with something wrong of every kind, and
// things that are well and not reported.
func statusFixture(t *testing.T) (kube, certmint []runtime.Object) {
	current := testCA(t, "mesh CA 2030", now.Add(-24*time.Hour), time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC))
	old := testCA(t, "mesh CA 2025", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	reissue := metav1.NewTime(now.Add(-time.Hour))
	certmint = []runtime.Object{
		&v1alpha1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: "mesh"},
			Status: v1alpha1.IssuerStatus{
				Conditions:    readyCondition(metav1.ConditionTrue, "Ready", "Signing with CA CN=mesh CA 2030"),
				TrustBundle:   pemOf(current, old),
				RetiringCAs:   []v1alpha1.RetiringCA{{Certificate: pemOf(old), Until: metav1.NewTime(time.Date(2030, 1, 31, 0, 0, 0, 0, time.UTC))}},
				ReissueBefore: &reissue,
			},
		},
		&v1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ca"},
			Status:     v1alpha1.IssuerStatus{Conditions: readyCondition(metav1.ConditionFalse, "SecretNotFound", "Secret shop/ca-key not found")},
		},
		&v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "new"}},
		&v1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "site"},
			Spec:       v1alpha1.CertificateSpec{IssuerRef: v1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "mesh"}},
			Status:     v1alpha1.CertificateStatus{Conditions: readyCondition(metav1.ConditionTrue, "Ready", "")},
		},
		&v1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "broken"},
			Spec:       v1alpha1.CertificateSpec{IssuerRef: v1alpha1.IssuerReference{Name: "ca"}},
			Status:     v1alpha1.CertificateStatus{Conditions: readyCondition(metav1.ConditionFalse, "IssuerNotReady", "Issuer shop/ca is not Ready")},
		},
		&v1alpha1.Order{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "site-valid"},
			Spec:       v1alpha1.OrderSpec{IssuerName: "le", Request: v1alpha1.OrderRequest{Kind: "Certificate", Name: "site"}},
			Status:     v1alpha1.OrderStatus{State: v1alpha1.ACMEStateValid},
		},
		&v1alpha1.Order{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "site-invalid", CreationTimestamp: ago(2 * time.Hour)},
			Spec:       v1alpha1.OrderSpec{IssuerName: "le", Request: v1alpha1.OrderRequest{Kind: "Certificate", Name: "site"}},
			Status:     v1alpha1.OrderStatus{State: v1alpha1.ACMEStateInvalid, Reason: "Failed", Message: "rejectedIdentifier: no such name"},
		},
		&v1alpha1.Order{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "site-pending", CreationTimestamp: ago(time.Minute)},
			Spec:       v1alpha1.OrderSpec{IssuerName: "le", Request: v1alpha1.OrderRequest{Kind: "Certificate", Name: "site"}},
		},
	}
	issued := certmintCSR("csr-issued", mesh, "shop/web-0", "node-a", time.Minute, csrCondition(certificatesv1.CertificateApproved, "Allowed", ""))
	issued.Status.Certificate = []byte("issued")
	foreign := certmintCSR("csr-foreign", mesh, "shop/web-0", "node-a", time.Hour)
	foreign.Spec.SignerName = "kubernetes.io/kube-apiserver-client"
	kube = []runtime.Object{
		issued, foreign,
		certmintCSR("csr-fresh", mesh, "shop/web-0", "node-a", 10*time.Second),
		certmintCSR("csr-stuck", shopCA, "shop/api-0", "node-b", 5*time.Minute),
		certmintCSR("csr-denied", mesh, "web/front-1", "node-a", 20*time.Minute,
			csrCondition(certificatesv1.CertificateDenied, "NameNotAllowed", `DNS name "front.other.svc" is not allowed`)),
		certmintCSR("csr-failed", mesh, "shop/web-1", "node-b", 30*time.Minute,
			csrCondition(certificatesv1.CertificateApproved, ReasonApproved, ""),
			csrCondition(certificatesv1.CertificateFailed, "NameNotAllowed", "the request was approved, but the issuer's policy does not allow it")),
	}
	return kube, certmint
}

func TestStatusReportsWhatNeedsAttentionAndExits2(t *testing.T) {
	kube, certmint := statusFixture(t)
	f := newFakes(t, kube, certmint...)
	code, out, errOut := f.run(t, "status", "-A")
	if code != ExitUnhealthy || errOut != "" {
		t.Errorf("exit %d, stderr %q; want %d and nothing", code, errOut, ExitUnhealthy)
	}
	want := `ISSUER              READY    REASON          CA EXPIRES                        RETIRING CAS                          MESSAGE
ClusterIssuer mesh  True     Ready           2035-01-01T00:00:00Z (in 4y364d)  1, first leaves 2030-01-31T00:00:00Z  Signing with CA CN=mesh CA 2030
Issuer shop/ca      False    SecretNotFound  -                                 -                                     Secret shop/ca-key not found
Issuer web/new      Unknown  -               -                                 -                                     -

REQUEST     ISSUER              POD          NODE    STATE    REASON          AGE  MESSAGE
csr-failed  ClusterIssuer mesh  shop/web-1   node-b  Failed   NameNotAllowed  30m  the request was approved, but the issuer's policy does not allow it
csr-denied  ClusterIssuer mesh  web/front-1  node-a  Denied   NameNotAllowed  20m  DNS name "front.other.svc" is not allowed
csr-stuck   Issuer shop/ca      shop/api-0   node-b  Pending  -               5m   -
csr-fresh   ClusterIssuer mesh  shop/web-0   node-a  Pending  -               10s  -

CERTIFICATE NOT READY  ISSUER          REASON          NOT AFTER  MESSAGE
shop/broken            Issuer shop/ca  IssuerNotReady  -          Issuer shop/ca is not Ready

ORDER NOT VALID    ISSUER            FOR               STATE    REASON  AGE   MESSAGE
shop/site-invalid  ClusterIssuer le  Certificate/site  invalid  Failed  120m  rejectedIdentifier: no such name
shop/site-pending  ClusterIssuer le  Certificate/site  pending  -       60s   -

7 need(s) attention.
`
	if out != want {
		t.Errorf("status printed\n%s\nwant\n%s", out, want)
	}
}

func TestStatusAsJSONSaysWhyEachRowNeedsAttention(t *testing.T) {
	kube, certmint := statusFixture(t)
	f := newFakes(t, kube, certmint...)
	code, out, _ := f.run(t, "status", "-A", "-o", "json")
	if code != ExitUnhealthy {
		t.Errorf("exit %d, want %d", code, ExitUnhealthy)
	}
	var got StatusReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	problems := map[string]string{}
	for _, i := range got.Issuers {
		problems[i.Issuer.String()] = i.Problem
	}
	for _, q := range got.Requests {
		problems[q.Name] = q.Problem
	}
	for _, o := range got.Orders {
		problems[o.Name] = o.Problem
	}
	want := map[string]string{
		"ClusterIssuer mesh": "", "Issuer shop/ca": "not Ready: SecretNotFound", "Issuer web/new": "not Ready: the controller has not reported on it",
		"csr-fresh": "", "csr-stuck": "stuck: Pending for 5m", "csr-denied": "Denied", "csr-failed": "Failed",
		"site-invalid": "invalid", "site-pending": "",
	}
	for k, w := range want {
		if problems[k] != w {
			t.Errorf("%s: problem %q, want %q", k, problems[k], w)
		}
	}
	if got.Healthy || len(got.Certificates) != 1 || len(problems) != len(want) {
		t.Errorf("healthy %v, %d Certificates, rows %v; want unhealthy, shop/broken, and the rows %v", got.Healthy, len(got.Certificates), problems, want)
	}
	if m := got.Issuers[0]; m.CANotAfter == nil || !m.CANotAfter.Equal(time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)) ||
		len(m.RetiringCAs) != 1 || m.RetiringCAs[0].Subject != "CN=mesh CA 2025" || m.ReissueBefore == nil {
		t.Errorf("mesh = %+v; want the current CA's expiry (not the retiring one's), its retiring CA, its reissueBefore", m)
	}
}

func TestStatusOfAHealthyClusterExits0(t *testing.T) {
	ca := testCA(t, "mesh CA", now.Add(-time.Hour), now.Add(24*time.Hour))
	issued := certmintCSR("csr-issued", mesh, "shop/web-0", "node-a", time.Hour, csrCondition(certificatesv1.CertificateApproved, "Allowed", ""))
	issued.Status.Certificate = []byte("issued")
	f := newFakes(t, []runtime.Object{issued}, &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh"},
		Status:     v1alpha1.IssuerStatus{Conditions: readyCondition(metav1.ConditionTrue, "Ready", "Signing"), TrustBundle: pemOf(ca)},
	})
	code, out, errOut := f.run(t, "status", "-n", "shop")
	want := `ISSUER              READY  REASON  CA EXPIRES                     RETIRING CAS  MESSAGE
ClusterIssuer mesh  True   Ready   2030-01-03T03:04:05Z (in 24h)  -             Signing

REQUEST  ISSUER  POD  NODE  STATE  REASON  AGE  MESSAGE
(no request pending, denied or failed)
`
	if code != ExitOK || out != want || errOut != "" {
		t.Errorf("exit %d, stdout\n%s\nstderr %q; want 0 and\n%s", code, out, errOut, want)
	}
}

func TestStatusOfANamespaceReportsItsIssuersAndItsPodsRequests(t *testing.T) {
	kube, certmint := statusFixture(t)
	f := newFakes(t, kube, certmint...)
	code, out, _ := f.run(t, "status", "-n", "web", "-o", "json")
	var got StatusReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	var issuers, requests []string
	for _, i := range got.Issuers {
		issuers = append(issuers, i.Issuer.String())
	}
	for _, q := range got.Requests {
		requests = append(requests, q.Name)
	}
	if code != ExitUnhealthy || strings.Join(issuers, ",") != "ClusterIssuer mesh,Issuer web/new" || strings.Join(requests, ",") != "csr-denied" ||
		len(got.Certificates) != 0 || len(got.Orders) != 0 {
		t.Errorf("exit %d, issuers %v, requests %v, %d Certificates, %d Orders; want 2, every ClusterIssuer and web's Issuer, web's request, nothing of shop",
			code, issuers, requests, len(got.Certificates), len(got.Orders))
	}
}

func TestStatusPrintsWhatItCouldReadAndExits1WhenAListIsRefused(t *testing.T) {
	kube, certmint := statusFixture(t)
	f := newFakes(t, kube, certmint...)
	f.dyn.PrependReactor("list", "certificates", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "certmint.io", Resource: "certificates"}, "", nil)
	})
	code, out, errOut := f.run(t, "status", "-A")
	if code != ExitError || !strings.Contains(errOut, "listing certificates") || !strings.Contains(errOut, "forbidden") {
		t.Errorf("exit %d, stderr %q; want %d naming the list refused", code, errOut, ExitError)
	}
	if !strings.Contains(out, "ClusterIssuer mesh") || !strings.Contains(out, "csr-denied") {
		t.Errorf("stdout lacks the issuers and requests read:\n%s", out)
	}
}

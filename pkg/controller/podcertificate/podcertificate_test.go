package podcertificate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/controller/metrics"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/pki/pkitest"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

const (
	testSigner = "clusterissuers.certmint.io/ca"
	trust      = "cluster.local"
)

func stubFor(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// fixture is a request of the kubelet on node-a for pod shop/web-0, with
// the live objects it names, addressed to a Ready CA ClusterIssuer.
func fixture(t *testing.T) facts {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pcr := &certificatesv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "req-abc", UID: "pcr-uid"},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: testSigner, PodName: "web-0", PodUID: "pod-uid",
			ServiceAccountName: "web", ServiceAccountUID: "sa-uid",
			NodeName: "node-a", NodeUID: "node-uid",
			StubPKCS10Request: stubFor(t, key),
		},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", UID: "pod-uid"},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web", Volumes: []corev1.Volume{{
			Name: "tls", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{PodCertificate: &corev1.PodCertificateProjection{SignerName: testSigner}},
			}}},
		}}},
	}
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "ca", Generation: 1},
		Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: "ca"}},
		Status: v1alpha1.IssuerStatus{Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 1},
		}},
	}
	return facts{
		source:        policy.PodCertificateSource{PCR: pcr, Pod: pod, NodeUID: "node-uid", ServiceAccountUID: "sa-uid"},
		ref:           request.IssuerRef{Kind: request.KindClusterIssuer, Name: "ca"},
		issuer:        iss,
		kind:          &issuer.Kind{Name: "ca"},
		clusterDomain: trust,
		trustDomain:   trust,
		boundPod:      pod,
	}
}

func TestDecide(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(f *facts)
		// reason is the Denied reason, or the Event's of a wait; "" signs.
		reason       string
		wait         bool
		event        bool
		podDependent bool
	}{
		{name: "a request of the pod's own is signed"},
		{name: "a replaced pod is denied", change: func(f *facts) { f.source.Pod.UID = "other" },
			reason: policy.ReasonPodUIDMismatch, podDependent: true},
		{name: "a pod on another node is denied", change: func(f *facts) { f.source.Pod.Spec.NodeName = "node-b" },
			reason: policy.ReasonNodeMismatch, podDependent: true},
		{name: "a replaced node is denied", change: func(f *facts) { f.source.NodeUID = "other" },
			reason: policy.ReasonNodeMismatch, podDependent: true},
		{name: "another ServiceAccount is denied", change: func(f *facts) { f.source.PCR.Spec.ServiceAccountName = "admin" },
			reason: policy.ReasonServiceAccountMismatch, podDependent: true},
		{name: "a replaced ServiceAccount is denied", change: func(f *facts) { f.source.ServiceAccountUID = "other" },
			reason: policy.ReasonServiceAccountMismatch, podDependent: true},
		{name: "a pod without the projection is denied", change: func(f *facts) { f.source.Pod.Spec.Volumes = nil },
			reason: policy.ReasonNotMounted, podDependent: true},
		{name: "a projection for another signer is no projection", change: func(f *facts) {
			f.source.Pod.Spec.Volumes[0].Projected.Sources[0].PodCertificate.SignerName = "clusterissuers.certmint.io/other"
		}, reason: policy.ReasonNotMounted, podDependent: true},
		{name: "a mirror pod is denied", change: func(f *facts) {
			f.source.Pod.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"}
		}, reason: policy.ReasonMirrorPod},
		{name: "a missing issuer is waited for", change: func(f *facts) { f.issuer = nil; f.issuerNotFound = "no such issuer" },
			reason: ReasonIssuerNotFound, wait: true, event: true},
		{name: "an issuer that is not Ready is waited for", change: func(f *facts) { f.issuer.(*v1alpha1.ClusterIssuer).Generation = 2 },
			reason: issuer.ReasonIssuerNotReady, wait: true, event: true},
		{name: "an ACME issuer is denied", change: func(f *facts) { f.kind = &issuer.Kind{Name: "acme", NeedsCSR: true} },
			reason: ReasonIssuerCannotSign, event: true},
		{name: "an unknown annotation is denied", change: func(f *facts) {
			f.source.PCR.Spec.UnverifiedUserAnnotations = map[string]string{"certmint.io/dns-name": "web-0.shop.svc"}
		}, reason: certificatesv1.PodCertificateRequestConditionInvalidUserConfig, event: true},
		{name: "a name the policy does not grant is denied", change: func(f *facts) {
			f.source.PCR.Spec.UnverifiedUserAnnotations = map[string]string{AnnotationDNSNames: "bank.example.com"}
		}, reason: policy.ReasonNameNotAllowed, event: true},
		{name: "a key type the policy does not allow is denied as unsupported", change: func(f *facts) {
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			f.source.PCR.Spec.StubPKCS10Request = stubFor(t, key)
			f.issuer.GetSpec().Policy = &v1alpha1.Policy{AllowedKeyTypes: []v1alpha1.KeyType{{Algorithm: v1alpha1.KeyAlgorithmECDSA}}}
		}, reason: certificatesv1.PodCertificateRequestConditionUnsupportedKeyType, event: true},
		{name: "a policy maximum under an hour is denied", change: func(f *facts) {
			f.issuer.GetSpec().Policy = &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: 30 * time.Minute}}
		}, reason: ReasonLifetime, event: true},
		{name: "a namespaced Issuer of another namespace is denied", change: func(f *facts) {
			f.ref = request.IssuerRef{Kind: request.KindIssuer, Namespace: "other", Name: "ca"}
		}, reason: policy.ReasonWrongNamespace, event: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := fixture(t)
			if c.change != nil {
				c.change(&f)
			}
			s, sign := decide(f)
			var reason string
			switch {
			case s.condition != nil:
				reason = s.condition.Reason
				if s.condition.Type != certificatesv1.PodCertificateRequestConditionTypeDenied || s.result != metrics.ResultDenied {
					t.Errorf("condition %s, result %q; want Denied", s.condition.Type, s.result)
				}
			case s.event != nil:
				reason = s.event.reason
			}
			switch {
			case reason != c.reason:
				t.Fatalf("reason %q, want %q (step %+v)", reason, c.reason, s)
			case (sign != nil) != (c.reason == ""):
				t.Errorf("signs: %v", sign != nil)
			case c.wait != (s.requeue > 0 && s.condition == nil):
				t.Errorf("waits: requeue %s, condition %v", s.requeue, s.condition)
			case c.event != (s.event != nil):
				t.Errorf("event: %+v, want one: %v", s.event, c.event)
			case s.podDependent != c.podDependent:
				t.Errorf("pod-dependent %v, want %v", s.podDependent, c.podDependent)
			}
		})
	}
}

func TestDecideAsksForThePodsIdentityAndTheLongestLifetimeAllowed(t *testing.T) {
	for _, c := range []struct {
		name        string
		annotations map[string]string
		maxExp      *int32
		policy      *v1alpha1.Policy
		wantDNS     []string
		wantURIs    []string
		wantTotal   time.Duration
	}{
		{name: "defaults: the SPIFFE ID for a day", wantURIs: []string{"spiffe://cluster.local/ns/shop/sa/web"}, wantTotal: 24 * time.Hour},
		{name: "templated DNS names keep the SPIFFE ID",
			annotations: map[string]string{AnnotationDNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc, web.shop.svc"},
			wantDNS:     []string{"web-0.shop.svc", "web.shop.svc"}, wantURIs: []string{"spiffe://cluster.local/ns/shop/sa/web"}, wantTotal: 24 * time.Hour},
		{name: "URI SANs replace the SPIFFE ID",
			annotations: map[string]string{AnnotationURISANs: "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}"},
			policy:      &v1alpha1.Policy{AllowedURIs: []string{"spiffe://cluster.local/ns/shop/sa/*"}},
			wantURIs:    []string{"spiffe://cluster.local/ns/shop/sa/web"}, wantTotal: 24 * time.Hour},
		{name: "maxExpirationSeconds shortens", maxExp: new(int32(3600)),
			wantURIs: []string{"spiffe://cluster.local/ns/shop/sa/web"}, wantTotal: time.Hour},
		{name: "the policy's maximum shortens", maxExp: new(int32(86400 * 90)),
			policy:   &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: 2 * time.Hour}},
			wantURIs: []string{"spiffe://cluster.local/ns/shop/sa/web"}, wantTotal: 2 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := fixture(t)
			f.source.PCR.Spec.UnverifiedUserAnnotations = c.annotations
			f.source.PCR.Spec.MaxExpirationSeconds = c.maxExp
			f.issuer.GetSpec().Policy = c.policy
			s, sign := decide(f)
			if sign == nil {
				t.Fatalf("not signed: %+v %+v", s, s.condition)
			}
			req := sign.request
			var uris []string
			for _, u := range req.URIs {
				uris = append(uris, u.String())
			}
			switch {
			case strings.Join(req.DNSNames, ",") != strings.Join(c.wantDNS, ","):
				t.Errorf("DNS names %v, want %v", req.DNSNames, c.wantDNS)
			case strings.Join(uris, ",") != strings.Join(c.wantURIs, ","):
				t.Errorf("URIs %v, want %v", uris, c.wantURIs)
			case req.Duration+req.Backdate != c.wantTotal || req.Backdate != Backdate:
				t.Errorf("duration %s + backdate %s, want %s in all", req.Duration, req.Backdate, c.wantTotal)
			case req.IsCA || len(req.RawSubject) != 0 || req.CSR != nil:
				t.Errorf("the request asks for more than names and a key: %+v", req)
			}
		})
	}
}

func TestParseAnnotationsNamesEveryProblem(t *testing.T) {
	pod := fixture(t).boundPod
	_, err := parseAnnotations(map[string]string{
		AnnotationDNSNames:    "${POD_NAM}.shop.svc",
		AnnotationURISANs:     "not a uri",
		AnnotationRenewBefore: "-5m",
		"example.com/other":   "x",
	}, podOf(pod), trust)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{AnnotationDNSNames + ": unknown variable ${POD_NAM}", AnnotationURISANs + ": \"not a uri\" is not an absolute URI",
		AnnotationRenewBefore + ": must be positive", `"example.com/other": not an annotation certmint knows`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func podOf(p *corev1.Pod) attributes.Pod {
	return attributes.Pod{Name: p.Name, Namespace: p.Namespace, UID: string(p.UID), ServiceAccountName: p.Spec.ServiceAccountName}
}

func TestSignStep(t *testing.T) {
	ca, caKey := pkitest.CA(t, "ca")
	now := time.Now().Truncate(time.Second)
	leaf := func(notBefore, notAfter time.Time) []byte {
		c, _ := pkitest.Sign(t, &x509.Certificate{NotBefore: notBefore, NotAfter: notAfter}, ca, caKey)
		return pki.EncodeCertificates(c)
	}
	iss := fixture(t).issuer
	for _, c := range []struct {
		name      string
		res       issuer.Result
		condition string
		reason    string
		requeue   bool
		err       bool
	}{
		{name: "issued", res: issuer.Result{Outcome: issuer.Issued, Chain: leaf(now.Add(-Backdate), now.Add(23*time.Hour))},
			condition: certificatesv1.PodCertificateRequestConditionTypeIssued, reason: ReasonIssued},
		{name: "a CA expiring within the hour fails", res: issuer.Result{Outcome: issuer.Issued, Chain: leaf(now.Add(-Backdate), now.Add(30*time.Minute))},
			condition: certificatesv1.PodCertificateRequestConditionTypeFailed, reason: ReasonLifetime},
		{name: "a permanent error fails", res: issuer.Result{Outcome: issuer.Fail, Reason: issuer.ReasonSigningFailed, Message: "no"},
			condition: certificatesv1.PodCertificateRequestConditionTypeFailed, reason: issuer.ReasonSigningFailed},
		{name: "an issuer not ready waits", res: issuer.Result{Outcome: issuer.WaitForIssuer, RetryAfter: time.Minute}, requeue: true},
		{name: "a transient error retries", res: issuer.Result{Outcome: issuer.Retry, Err: errors.New("timeout")}, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			pcr := fixture(t).source.PCR
			s := signStep(pcr, iss, c.res, 0)
			var cond, reason string
			if s.condition != nil {
				cond, reason = s.condition.Type, s.condition.Reason
			}
			switch {
			case cond != c.condition || reason != c.reason:
				t.Fatalf("condition %q %q, want %q %q", cond, reason, c.condition, c.reason)
			case (s.requeue > 0) != c.requeue || (s.err != nil) != c.err:
				t.Fatalf("requeue %s, err %v", s.requeue, s.err)
			}
			if cond != certificatesv1.PodCertificateRequestConditionTypeIssued {
				if s.issued != nil {
					t.Error("status fields set without Issued")
				}
				return
			}
			st := s.issued
			nb, na, refresh := st.NotBefore.Time, st.NotAfter.Time, st.BeginRefreshAt.Time
			switch {
			case st.CertificateChain != string(c.res.Chain):
				t.Error("chain differs from the signed one")
			case !nb.Equal(now.Add(-Backdate)) || !na.Equal(now.Add(23*time.Hour)):
				t.Errorf("validity %s..%s, want the leaf's", nb, na)
			case refresh.Before(nb.Add(10*time.Minute)) || refresh.After(na.Add(-10*time.Minute)):
				t.Errorf("beginRefreshAt %s outside the bounds the API sets", refresh)
			}
		})
	}
}

func TestRefreshAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name        string
		lifetime    time.Duration
		renewBefore time.Duration
		earliest    time.Duration // after nb
		latest      time.Duration
	}{
		{name: "a third of a day before expiry, less up to a tenth of that", lifetime: 24 * time.Hour, earliest: 16*time.Hour - 48*time.Minute, latest: 16 * time.Hour},
		{name: "renew-before", lifetime: 24 * time.Hour, renewBefore: time.Hour, earliest: 23*time.Hour - 6*time.Minute, latest: 23 * time.Hour},
		{name: "renew-before longer than the lifetime is the earliest the API allows", lifetime: time.Hour, renewBefore: 2 * time.Hour, earliest: 10 * time.Minute, latest: 10 * time.Minute},
		{name: "renew-before under ten minutes is the latest it allows", lifetime: time.Hour, renewBefore: time.Minute, earliest: 50 * time.Minute, latest: 50 * time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen := map[time.Time]bool{}
			for _, uid := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
				at := refreshAt(nb, nb.Add(c.lifetime), c.renewBefore, types.UID(uid))
				if at.Before(nb.Add(c.earliest)) || at.After(nb.Add(c.latest)) || at.Nanosecond() != 0 {
					t.Errorf("uid %s: %s after notBefore, want %s..%s in whole seconds", uid, at.Sub(nb), c.earliest, c.latest)
				}
				seen[at] = true
			}
			if c.earliest != c.latest && len(seen) < 4 {
				t.Errorf("8 requests refresh at %d moments; the jitter does not spread them", len(seen))
			}
		})
	}
}

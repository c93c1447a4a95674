package controller_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/podcertificate"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// withPodCertificate gives a pod a podCertificate projection for signer, as
// the kubelet needs before NodeRestriction lets it ask for one.
func withPodCertificate(signer string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{PodCertificate: &corev1.PodCertificateProjection{
				SignerName: signer, KeyType: "ECDSAP256", CredentialBundlePath: "credentials.pem",
			}}}},
		}})
	}
}

// pcrFor is the request the kubelet of pod's node makes for it: the live
// node's and ServiceAccount's UIDs, and a stub request signed with key.
func pcrFor(t *testing.T, pod *corev1.Pod, signer string, key crypto.Signer, annotations map[string]string) *certificatesv1.PodCertificateRequest {
	t.Helper()
	ctx := t.Context()
	var node corev1.Node
	if err := env.admin.Get(ctx, types.NamespacedName{Name: pod.Spec.NodeName}, &node); err != nil {
		t.Fatal(err)
	}
	var sa corev1.ServiceAccount
	if err := env.admin.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: pod.Spec.ServiceAccountName}, &sa); err != nil {
		t.Fatal(err)
	}
	stub, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return &certificatesv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, GenerateName: "req-"},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: signer,
			PodName:    pod.Name, PodUID: pod.UID,
			ServiceAccountName: sa.Name, ServiceAccountUID: sa.UID,
			NodeName: types.NodeName(node.Name), NodeUID: node.UID,
			StubPKCS10Request:         stub,
			UnverifiedUserAnnotations: annotations,
		},
	}
}

func createPCR(t *testing.T, as kubernetes.Interface, pcr *certificatesv1.PodCertificateRequest) *certificatesv1.PodCertificateRequest {
	t.Helper()
	created, err := as.CertificatesV1().PodCertificateRequests(pcr.Namespace).Create(t.Context(), pcr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating PodCertificateRequest for pod %s: %v", pcr.Spec.PodName, err)
	}
	return created
}

// waitForPCR waits until pcr has its final condition and returns it.
func waitForPCR(t *testing.T, pcr *certificatesv1.PodCertificateRequest) (*certificatesv1.PodCertificateRequest, *metav1.Condition) {
	t.Helper()
	var got certificatesv1.PodCertificateRequest
	var cond *metav1.Condition
	const timeout = 2 * time.Minute
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(pcr), &got); err != nil {
			return false, err
		}
		if len(got.Status.Conditions) > 0 {
			cond = &got.Status.Conditions[0]
		}
		return cond != nil, nil
	})
	if err != nil {
		t.Fatalf("waited %v for PodCertificateRequest %s/%s to be decided: %v", timeout, pcr.Namespace, pcr.Name, err)
	}
	return &got, cond
}

func wantPCRDenied(t *testing.T, pcr *certificatesv1.PodCertificateRequest, reason, text string) {
	t.Helper()
	got, c := waitForPCR(t, pcr)
	if c.Type != certificatesv1.PodCertificateRequestConditionTypeDenied || c.Reason != reason || !strings.Contains(c.Message, text) {
		t.Fatalf("condition %s %s %q, want Denied %s with %q", c.Type, c.Reason, c.Message, reason, text)
	}
	if got.Status.CertificateChain != "" {
		t.Error("a denied request got a certificate")
	}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestPodCertificateRequests acts as the kubelets of two nodes and checks
// what the controller signs: the pod's own identity, for its own key, for
// as long as the request and the policy allow, with the status fields the
// kubelet refreshes by; and what it refuses, with the reasons the API and
// the policy define, including requests NodeRestriction never checked.
func TestPodCertificateRequests(t *testing.T) {
	e := requireEnv(t)
	ctl := startController(t, "pod-certificates")
	ctx := t.Context()
	ns := uniqueName("podcert")
	if err := e.ensureServiceAccount(ctx, ns, "web"); err != nil {
		t.Fatal(err)
	}
	data := caSecretData(t, nil)
	createTLSSecret(t, ns, "ca", data)
	iss := createCAIssuer(t, ns, "ca", "ca", nil)
	waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	signer := request.IssuerRef{Kind: request.KindIssuer, Namespace: ns, Name: "ca"}.SignerName()
	podA, err := e.createPod(ctx, ns, "web-a", nodeA, "web", withPodCertificate(signer))
	if err != nil {
		t.Fatal(err)
	}
	podB, err := e.createPod(ctx, ns, "web-b", nodeB, "web", withPodCertificate(signer))
	if err != nil {
		t.Fatal(err)
	}
	kubeletA := nodeClient(t, nodeA)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(data[corev1.TLSCertKey])
	spiffeA := "spiffe://cluster.local/ns/" + ns + "/sa/web"

	t.Run("the kubelet gets the pod's SPIFFE ID and asked-for names for its own key, and a refresh time", func(t *testing.T) {
		key := newKey(t)
		created := createPCR(t, kubeletA, pcrFor(t, podA, signer, key, map[string]string{
			podcertificate.AnnotationDNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc",
		}))
		got, c := waitForPCR(t, created)
		if c.Type != certificatesv1.PodCertificateRequestConditionTypeIssued {
			t.Fatalf("condition %s %s: %s", c.Type, c.Reason, c.Message)
		}
		chain, err := pki.ParseCertificates([]byte(got.Status.CertificateChain))
		if err != nil {
			t.Fatal(err)
		}
		leaf := chain[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "web-a." + ns + ".svc",
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("certificate does not verify against the issuer's CA for the pod's name: %v", err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeA {
			t.Errorf("URIs %v, want %s", leaf.URIs, spiffeA)
		}
		if !pki.PublicKeysEqual(leaf.PublicKey, key.Public()) {
			t.Error("the certificate is not for the request's key")
		}
		nb, na, refresh := got.Status.NotBefore.Time, got.Status.NotAfter.Time, got.Status.BeginRefreshAt.Time
		if !nb.Equal(leaf.NotBefore) || !na.Equal(leaf.NotAfter) {
			t.Errorf("status validity %s..%s, certificate's %s..%s", nb, na, leaf.NotBefore, leaf.NotAfter)
		}
		if l := na.Sub(nb); l != podcertificate.DefaultMaxExpiration {
			t.Errorf("lifetime %s, want the default maxExpirationSeconds, %s", l, podcertificate.DefaultMaxExpiration)
		}
		if refresh.Before(na.Add(-na.Sub(nb)/2)) || refresh.After(na.Add(-na.Sub(nb)/4)) {
			t.Errorf("beginRefreshAt %s is not about two thirds into %s..%s", refresh, nb, na)
		}
	})

	t.Run("maxExpirationSeconds and renew-before are honoured", func(t *testing.T) {
		pcr := pcrFor(t, podA, signer, newKey(t), map[string]string{podcertificate.AnnotationRenewBefore: "50m"})
		pcr.Spec.MaxExpirationSeconds = new(int32(3600))
		got, c := waitForPCR(t, createPCR(t, kubeletA, pcr))
		if c.Type != certificatesv1.PodCertificateRequestConditionTypeIssued {
			t.Fatalf("condition %s %s: %s", c.Type, c.Reason, c.Message)
		}
		nb, na := got.Status.NotBefore.Time, got.Status.NotAfter.Time
		if na.Sub(nb) != time.Hour {
			t.Errorf("lifetime %s, want the hour asked for", na.Sub(nb))
		}
		if refresh := got.Status.BeginRefreshAt.Time; !refresh.Equal(nb.Add(10 * time.Minute)) {
			t.Errorf("beginRefreshAt %s after notBefore, want the earliest the API allows, 10m", refresh.Sub(nb))
		}
	})

	t.Run("a name the policy does not grant is denied, with an Event on the pod", func(t *testing.T) {
		created := createPCR(t, kubeletA, pcrFor(t, podA, signer, newKey(t), map[string]string{
			podcertificate.AnnotationDNSNames: "bank.example.com",
		}))
		wantPCRDenied(t, created, policy.ReasonNameNotAllowed, `"bank.example.com" is not allowed`)
		waitForPodEvent(t, podA, policy.ReasonNameNotAllowed)
	})

	t.Run("an annotation certmint does not know is denied", func(t *testing.T) {
		created := createPCR(t, kubeletA, pcrFor(t, podA, signer, newKey(t), map[string]string{"certmint.io/dns-name": "web-a." + ns + ".svc"}))
		wantPCRDenied(t, created, certificatesv1.PodCertificateRequestConditionInvalidUserConfig, `"certmint.io/dns-name": not an annotation certmint knows`)
	})

	t.Run("a key type the policy does not allow is denied as unsupported", func(t *testing.T) {
		rsaOnly := createCAIssuer(t, ns, "rsa-only", "ca", &v1alpha1.Policy{AllowedKeyTypes: []v1alpha1.KeyType{{Algorithm: v1alpha1.KeyAlgorithmRSA}}})
		waitReady(t, rsaOnly, metav1.ConditionTrue, v1alpha1.ReasonReady)
		rsaSigner := request.IssuerRef{Kind: request.KindIssuer, Namespace: ns, Name: "rsa-only"}.SignerName()
		pod, err := e.createPod(ctx, ns, "rsa-pod", nodeA, "web", withPodCertificate(rsaSigner))
		if err != nil {
			t.Fatal(err)
		}
		wantPCRDenied(t, createPCR(t, kubeletA, pcrFor(t, pod, rsaSigner, newKey(t), nil)),
			certificatesv1.PodCertificateRequestConditionUnsupportedKeyType, "key ECDSA 256 is not allowed; allowed: RSA")
	})

	t.Run("an ACME issuer is denied with a reason a user can act on", func(t *testing.T) {
		acme := &v1alpha1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("acme")},
			Spec: v1alpha1.IssuerSpec{ACME: &v1alpha1.ACMEIssuer{
				Server: "https://127.0.0.1:1/dir", Email: "ops@example.com", AccountKeySecretName: uniqueName("acme-account"),
				TrustBundle: string(data[corev1.TLSCertKey]), Solvers: []v1alpha1.ACMESolver{{HTTP01: &v1alpha1.ACMEHTTP01Solver{}}},
			}},
		}
		if err := env.admin.Create(ctx, acme); err != nil {
			t.Fatal(err)
		}
		acmeSigner := request.IssuerRef{Kind: request.KindClusterIssuer, Name: acme.Name}.SignerName()
		pod, err := e.createPod(ctx, ns, "acme-pod", nodeA, "web", withPodCertificate(acmeSigner))
		if err != nil {
			t.Fatal(err)
		}
		wantPCRDenied(t, createPCR(t, kubeletA, pcrFor(t, pod, acmeSigner, newKey(t), nil)),
			podcertificate.ReasonIssuerCannotSign, "cannot sign pod certificates")
	})

	// NodeRestriction checks a node's requests when they are created; a
	// request made by anyone else with create permission is checked by
	// nobody but the signer.
	for _, c := range []struct {
		name, reason, text string
		tweak              func(*certificatesv1.PodCertificateRequest)
	}{
		{"a request naming another node than the pod's", policy.ReasonNodeMismatch, "is on node \"" + nodeB + "\"",
			func(p *certificatesv1.PodCertificateRequest) { p.Spec.NodeName = nodeA }},
		{"a request for a replaced node", policy.ReasonNodeMismatch, "the node was replaced",
			func(p *certificatesv1.PodCertificateRequest) { p.Spec.NodeUID = "0a0a0a0a-0000-0000-0000-000000000000" }},
		{"a request for another ServiceAccount", policy.ReasonServiceAccountMismatch, "runs as ServiceAccount \"web\"",
			func(p *certificatesv1.PodCertificateRequest) { p.Spec.ServiceAccountName = "admin" }},
		{"a request for a replaced ServiceAccount", policy.ReasonServiceAccountMismatch, "it was replaced",
			func(p *certificatesv1.PodCertificateRequest) {
				p.Spec.ServiceAccountUID = "0a0a0a0a-0000-0000-0000-000000000000"
			}},
		{"a request for a replaced pod", policy.ReasonPodUIDMismatch, "the pod was replaced",
			func(p *certificatesv1.PodCertificateRequest) { p.Spec.PodUID = "0a0a0a0a-0000-0000-0000-000000000000" }},
	} {
		t.Run(c.name+", made by someone other than a node, is denied", func(t *testing.T) {
			pcr := pcrFor(t, podB, signer, newKey(t), nil)
			c.tweak(pcr)
			wantPCRDenied(t, createPCR(t, e.kube, pcr), c.reason, c.text)
		})
	}

	t.Run("a pod that mounts no projection for the signer is denied", func(t *testing.T) {
		pod, err := e.createPod(ctx, ns, "no-projection", nodeA, "web")
		if err != nil {
			t.Fatal(err)
		}
		wantPCRDenied(t, createPCR(t, e.kube, pcrFor(t, pod, signer, newKey(t), nil)), policy.ReasonNotMounted, "has no podCertificate projection")
	})

	t.Run("a request for an issuer that does not exist yet waits for it and is then signed", func(t *testing.T) {
		lateSigner := request.IssuerRef{Kind: request.KindIssuer, Namespace: ns, Name: "late"}.SignerName()
		pod, err := e.createPod(ctx, ns, "early-pod", nodeA, "web", withPodCertificate(lateSigner))
		if err != nil {
			t.Fatal(err)
		}
		created := createPCR(t, kubeletA, pcrFor(t, pod, lateSigner, newKey(t), nil))
		waitForPodEvent(t, pod, podcertificate.ReasonIssuerNotFound)
		var pending certificatesv1.PodCertificateRequest
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(created), &pending); err != nil {
			t.Fatal(err)
		}
		if len(pending.Status.Conditions) > 0 {
			t.Fatalf("a request for a missing issuer was decided: %+v; the kubelet would never ask again", pending.Status.Conditions)
		}
		late := createCAIssuer(t, ns, "late", "ca", nil)
		waitReady(t, late, metav1.ConditionTrue, v1alpha1.ReasonReady)
		if _, c := waitForPCR(t, created); c.Type != certificatesv1.PodCertificateRequestConditionTypeIssued {
			t.Fatalf("condition %s %s: %s", c.Type, c.Reason, c.Message)
		}
	})

	t.Run("the metrics count the outcomes", func(t *testing.T) {
		for metric, want := range map[string]float64{
			`certmint_pod_certificate_requests_total{result="issued",signer="` + signer + `"}`: 2,
			`certmint_pod_certificate_requests_total{result="denied",signer="` + signer + `"}`: 8,
		} {
			if got, err := ctl.metric(metric); err != nil || got != want {
				t.Errorf("%s = %v (%v), want %v", metric, got, err, want)
			}
		}
	})
}

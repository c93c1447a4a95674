package controller_test

import (
	"context"
	"crypto/x509/pkix"
	"net"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer/selfsigned"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// The tests in this file are attacks on the approval policy, each made the
// way an attacker would make it: with a node's own credentials, the
// driver's token from that node, or a namespace owner's rights.

func failed(csr *certificatesv1.CertificateSigningRequest) bool {
	return condition(csr, certificatesv1.CertificateFailed) != nil
}

func settled(csr *certificatesv1.CertificateSigningRequest) bool {
	return issued(csr) || denied(csr) || failed(csr)
}

// wantDenied waits for the request and checks it was denied for reason, with
// a message containing text, and got no certificate.
func wantDenied(t *testing.T, created *certificatesv1.CertificateSigningRequest, reason, text string) *certificatesv1.CertificateSigningRequestCondition {
	t.Helper()
	csr := waitForCSR(t, created.Name, settled)
	c := condition(csr, certificatesv1.CertificateDenied)
	if c == nil || c.Reason != reason || !strings.Contains(c.Message, text) {
		t.Fatalf("conditions = %+v, want Denied %s with %q", csr.Status.Conditions, reason, text)
	}
	if len(csr.Status.Certificate) > 0 {
		t.Error("a denied request got a certificate")
	}
	return c
}

// nodeClient acts as a node's kubelet: the API server's Node authorizer and
// NodeRestriction admission treat it as that node.
func nodeClient(t *testing.T, node string) kubernetes.Interface {
	t.Helper()
	cfg, err := env.cp.UserConfig("system:node:"+node, "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// createMirrorPod creates a mirror pod of any name in any namespace, as a
// node's credentials may: NodeRestriction asks only for the mirror
// annotation, the node as the pod's controller and no ServiceAccount.
func createMirrorPod(t *testing.T, node, ns, name string) *corev1.Pod {
	t.Helper()
	ctx := t.Context()
	var n corev1.Node
	if err := env.admin.Get(ctx, types.NamespacedName{Name: node}, &n); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   ns,
			Name:        name,
			Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "forged"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node, UID: n.UID, Controller: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "unused"}}},
	}
	created, err := nodeClient(t, node).CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("node %s creating mirror pod %s/%s: %v", node, ns, name, err)
	}
	return created
}

func newSelfSignedClusterIssuer(t *testing.T) (*v1alpha1.ClusterIssuer, string) {
	t.Helper()
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("attack")},
		Spec:       v1alpha1.IssuerSpec{SelfSigned: &v1alpha1.SelfSignedIssuer{}},
	}
	if err := env.admin.Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	return iss, request.IssuerRef{Kind: request.KindClusterIssuer, Name: iss.Name}.SignerName()
}

func TestMirrorPodsGetNoIdentity(t *testing.T) {
	requireEnv(t)
	startController(t, "mirror-pods")
	it := newIssuance(t, uniqueName("mirror"))
	_, clusterSigner := newSelfSignedClusterIssuer(t)

	t.Run("a mirror pod named like a tenant's workload gets nothing from the tenant's Issuer", func(t *testing.T) {
		pod := createMirrorPod(t, nodeA, it.ns, "payments")
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: pod, node: nodeA,
			dnsNames: []string{"payments." + it.ns + ".svc"}}))
		wantDenied(t, created, policy.ReasonMirrorPod, "static pods get no identity")
	})

	t.Run("a mirror pod named like a system component gets nothing from a ClusterIssuer", func(t *testing.T) {
		pod := createMirrorPod(t, nodeA, "kube-system", uniqueName("coredns"))
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: clusterSigner, pod: pod, node: nodeA,
			dnsNames: []string{pod.Name + ".kube-system.svc"}}))
		wantDenied(t, created, policy.ReasonMirrorPod, "")
	})

	t.Run("a mirror pod gets no SPIFFE ID with an empty ServiceAccount", func(t *testing.T) {
		pod := createMirrorPod(t, nodeA, it.ns, uniqueName("no-sa"))
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: pod, node: nodeA,
			uris: []string{"spiffe://cluster.local/ns/" + it.ns + "/sa/"}}))
		wantDenied(t, created, policy.ReasonMirrorPod, "")
	})
}

func TestDefaultNamesNameTheNamespace(t *testing.T) {
	e := requireEnv(t)
	startController(t, "default-names")
	_, signer := newSelfSignedClusterIssuer(t)
	pod := func(t *testing.T, ns, name string) *corev1.Pod {
		t.Helper()
		p, err := e.createPod(t.Context(), ns, name, nodeA, "web")
		if err != nil {
			t.Fatal(err)
		}
		// Names such as com/google are fixed, so a repeated run (-count)
		// must find them free again.
		t.Cleanup(func() { _ = env.admin.Delete(context.Background(), p) })
		return p
	}
	tenantA, tenantB := uniqueName("tenant-a"), uniqueName("tenant-b")

	t.Run("two tenants' pods of one name do not share a bare name", func(t *testing.T) {
		for _, ns := range []string{tenantA, tenantB} {
			p := pod(t, ns, "payments")
			created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: signer, pod: p, node: nodeA, dnsNames: []string{"payments"}}))
			wantDenied(t, created, policy.ReasonNameNotAllowed, `DNS name "payments" is not allowed`)
			// Each gets its name in its own namespace, under the service
			// domain.
			created = createCSR(t, env.driverA, newCSR(t, csrSpec{signer: signer, pod: p, node: nodeA,
				dnsNames: []string{"payments." + ns + ".svc", "payments." + ns + ".svc.cluster.local"}}))
			waitForCSR(t, created.Name, issued)
		}
	})

	t.Run("a pod named localhost does not get localhost", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: signer, pod: pod(t, tenantA, "localhost"), node: nodeA, dnsNames: []string{"localhost"}}))
		wantDenied(t, created, policy.ReasonNameNotAllowed, `"localhost"`)
	})

	t.Run("whoever may create a namespace com gets no google.com", func(t *testing.T) {
		ns := "com"
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: signer, pod: pod(t, ns, "google"), node: nodeA, dnsNames: []string{"google.com"}}))
		wantDenied(t, created, policy.ReasonNameNotAllowed, `"google.com"`)
	})
}

func TestGeneratedRootServesItsIssuerAlone(t *testing.T) {
	requireEnv(t)
	startController(t, "generated-root")
	cluster, _ := newSelfSignedClusterIssuer(t)
	root := selfsigned.RootSecretName(request.IssuerRef{Kind: request.KindClusterIssuer, Name: cluster.Name})

	// Whoever may create Issuers in the controller's namespace names the
	// ClusterIssuer's root as its CA, to sign under a policy of its own.
	looser := createCAIssuer(t, certmintNS, uniqueName("borrower"), root, &v1alpha1.Policy{AllowedDNSNames: []string{"*"}})
	cond := waitReady(t, looser, metav1.ConditionFalse, v1alpha1.ReasonSecretNotUsable)
	if !strings.Contains(cond.Message, "ClusterIssuer "+cluster.Name) {
		t.Errorf("message %q does not say whose root it is", cond.Message)
	}
	// The ClusterIssuer itself still signs with it.
	waitReady(t, cluster, metav1.ConditionTrue, v1alpha1.ReasonReady)
}

func TestManualApprovalDoesNotWidenThePolicy(t *testing.T) {
	requireEnv(t)
	// Requests approved while no controller runs, so that the approval is
	// the admin's and not the controller's.
	setup := startController(t, "manual-approval-setup")
	it := newIssuance(t, uniqueName("manual"))
	setup.Stop()

	admin := env.kube
	approve := func(t *testing.T, csr *certificatesv1.CertificateSigningRequest) {
		t.Helper()
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "KubectlApprove", Message: "approved by an admin",
		})
		if _, err := admin.CertificatesV1().CertificateSigningRequests().UpdateApproval(t.Context(), csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		as     kubernetes.Interface
		spec   csrSpec
		reason string // empty: issued
	}{
		{"IP and email SANs", env.driverA, csrSpec{dnsNames: []string{it.svc}, ips: []net.IP{net.IPv4(10, 0, 0, 1)}, emails: []string{"ceo@example.com"}}, policy.ReasonIPAddressForbidden},
		{"a name of another workload", env.driverA, csrSpec{dnsNames: []string{"db.kube-system.svc"}}, policy.ReasonNameNotAllowed},
		{"code signing", env.driverA, csrSpec{dnsNames: []string{it.svc}, usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageCodeSigning}}, policy.ReasonUsageNotAllowed},
		{"another node's pod", env.driverA, csrSpec{pod: it.podB, dnsNames: []string{it.svc}}, policy.ReasonNodeMismatch},
		{"a requester that is not the driver", admin, csrSpec{dnsNames: []string{it.svc}}, policy.ReasonNotDriver},
		{"a request the policy allows", env.driverA, csrSpec{dnsNames: []string{it.svc}}, ""},
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		c.spec.signer, c.spec.node = it.signer, nodeA
		if c.spec.pod == nil {
			c.spec.pod = it.podA
		}
		created := createCSR(t, c.as, newCSR(t, c.spec))
		approve(t, created)
		names[i] = created.Name
	}
	startController(t, "manual-approval")
	for i, c := range cases {
		t.Run("an approved request with "+c.name, func(t *testing.T) {
			csr := waitForCSR(t, names[i], settled)
			if c.reason == "" {
				if !issued(csr) {
					t.Fatalf("conditions = %+v, want the certificate", csr.Status.Conditions)
				}
				return
			}
			f := condition(csr, certificatesv1.CertificateFailed)
			if f == nil || f.Reason != c.reason || !strings.Contains(f.Message, "the issuer's policy does not allow it") {
				t.Fatalf("conditions = %+v, want Failed %s", csr.Status.Conditions, c.reason)
			}
			if len(csr.Status.Certificate) > 0 {
				t.Error("got a certificate")
			}
		})
	}
}

func TestDriverPodWithForgedOwnerIsRefused(t *testing.T) {
	e := requireEnv(t)
	startController(t, "forged-owner")
	it := newIssuance(t, uniqueName("forged-owner"))
	ctx := t.Context()
	// Whoever may create pods in the driver's namespace writes the owner
	// reference the DaemonSet controller would, with a UID of their own.
	forged, err := e.createPod(ctx, certmintNS, uniqueName("forged-driver"), nodeA, driverSA, func(p *corev1.Pod) {
		e.asDaemonSetPod(p)
		p.OwnerReferences[0].UID = "6d1d2a5e-0000-4000-8000-000000000000"
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := e.podBoundConfig(ctx, forged)
	if err != nil {
		t.Fatal(err)
	}
	created := createCSR(t, kubernetes.NewForConfigOrDie(cfg), newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
	wantDenied(t, created, policy.ReasonNotDriver, "not a pod of DaemonSet")
}

func TestRequestsNamingImpossiblePodsAreDeniedAtOnce(t *testing.T) {
	requireEnv(t)
	startController(t, "impossible-pods")
	it := newIssuance(t, uniqueName("impossible"))
	// A UID that is no label value the API server refuses itself: the
	// request carries it in a label.
	for _, c := range []struct{ name, namespace, podName, text string }{
		{"a pod name with a slash", it.ns, "web/0", `pod name "web/0"`},
		{"a namespace no namespace can have", "Shop", it.podA.Name, `namespace "Shop"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			pod := it.podA.DeepCopy()
			pod.Namespace, pod.Name = c.namespace, c.podName
			created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: pod, node: nodeA, dnsNames: []string{it.svc}}))
			wantDenied(t, created, policy.ReasonInvalidPodRef, c.text)
		})
	}
}

func TestSubjectsAreBounded(t *testing.T) {
	requireEnv(t)
	startController(t, "bounded-subjects")
	it := newIssuance(t, uniqueName("bounded"))
	created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA,
		subject: pkix.Name{Organization: []string{strings.Repeat("o", 70000)}}, dnsNames: []string{it.svc}}))
	c := wantDenied(t, created, policy.ReasonSubjectNotAllowed, "at most 64")
	if len(c.Message) > 1000 {
		t.Errorf("the denial quotes %d bytes; values must be quoted in part", len(c.Message))
	}
}

func TestMissingIssuerPointsAtTheOtherKind(t *testing.T) {
	requireEnv(t)
	startController(t, "issuer-kind-hint")
	it := newIssuance(t, uniqueName("kind-hint"))
	cluster, _ := newSelfSignedClusterIssuer(t)
	// The volume forgot issuer-kind: ClusterIssuer.
	signer := request.IssuerRef{Kind: request.KindIssuer, Namespace: it.ns, Name: cluster.Name}.SignerName()
	created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
	wantDenied(t, created, "IssuerNotFound", "a ClusterIssuer "+cluster.Name+" exists: set csi.certmint.io/issuer-kind: ClusterIssuer")
}

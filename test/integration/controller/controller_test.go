package controller_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// caSecretData returns tls.crt and tls.key of a new CA; tweak adjusts the
// certificate template.
func caSecretData(t testing.TB, tweak func(*x509.Certificate)) map[string][]byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if tweak != nil {
		tweak(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

func createTLSSecret(t testing.TB, ns, name string, data map[string][]byte) {
	t.Helper()
	err := env.admin.Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       data,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func createCAIssuer(t testing.TB, ns, name, secretName string, pol *v1alpha1.Policy) *v1alpha1.Issuer {
	t.Helper()
	iss := &v1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: secretName}, Policy: pol},
	}
	if err := env.admin.Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	return iss
}

// waitReady waits for the issuer's Ready condition to have status and
// reason for its current generation, and returns the issuer.
func waitReady(t testing.TB, iss v1alpha1.GenericIssuer, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	var cond *metav1.Condition
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(iss), iss); err != nil {
			return false, err
		}
		cond = meta.FindStatusCondition(iss.GetStatus().Conditions, v1alpha1.ConditionReady)
		return cond != nil && cond.Status == status && cond.Reason == reason && cond.ObservedGeneration == iss.GetGeneration(), nil
	})
	if err != nil {
		t.Fatalf("%s/%s: want Ready=%s reason %s; got %+v", iss.GetNamespace(), iss.GetName(), status, reason, cond)
	}
	return cond
}

func TestIssuerReadiness(t *testing.T) {
	e := requireEnv(t)
	startController(t, "readiness")
	ns := uniqueName("readiness")
	if err := e.ensureServiceAccount(t.Context(), ns, "default"); err != nil {
		t.Fatal(err)
	}

	t.Run("an Issuer with a good CA Secret is Ready and publishes its trust bundle", func(t *testing.T) {
		data := caSecretData(t, nil)
		createTLSSecret(t, ns, "good", data)
		iss := createCAIssuer(t, ns, "good", "good", nil)
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
		if iss.Status.TrustBundle != string(data[corev1.TLSCertKey]) {
			t.Errorf("trust bundle = %q, want the CA certificate", iss.Status.TrustBundle)
		}
	})

	t.Run("an Issuer whose Secret lacks tls.key says so", func(t *testing.T) {
		data := caSecretData(t, nil)
		// The API server refuses a kubernetes.io/tls Secret without tls.key
		// on create, so break a good one by replacing its key with nothing.
		data[corev1.TLSPrivateKeyKey] = []byte{}
		createTLSSecret(t, ns, "no-key", data)
		iss := createCAIssuer(t, ns, "no-key", "no-key", nil)
		cond := waitReady(t, iss, metav1.ConditionFalse, v1alpha1.ReasonInvalidSecret)
		if want := "Secret " + ns + "/no-key has no tls.key"; cond.Message != want {
			t.Errorf("message = %q, want %q", cond.Message, want)
		}
	})

	t.Run("an Issuer whose certificate is not a CA says so", func(t *testing.T) {
		createTLSSecret(t, ns, "leaf", caSecretData(t, func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature }))
		iss := createCAIssuer(t, ns, "leaf", "leaf", nil)
		waitReady(t, iss, metav1.ConditionFalse, v1alpha1.ReasonNotCA)
	})

	t.Run("an Issuer whose CA has expired says so", func(t *testing.T) {
		createTLSSecret(t, ns, "expired", caSecretData(t, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		}))
		iss := createCAIssuer(t, ns, "expired", "expired", nil)
		waitReady(t, iss, metav1.ConditionFalse, v1alpha1.ReasonCAExpired)
	})

	t.Run("an Issuer becomes Ready when its missing Secret appears", func(t *testing.T) {
		iss := createCAIssuer(t, ns, "later", "later", nil)
		cond := waitReady(t, iss, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)
		if !strings.Contains(cond.Message, ns+"/later") {
			t.Errorf("message %q does not name the Secret", cond.Message)
		}
		createTLSSecret(t, ns, "later", caSecretData(t, nil))
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	})

	t.Run("a ClusterIssuer reads its Secret from the cluster resource namespace", func(t *testing.T) {
		// A Secret of that name elsewhere does not count.
		createTLSSecret(t, ns, ns+"-cluster", caSecretData(t, nil))
		iss := &v1alpha1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: ns + "-cluster"},
			Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: ns + "-cluster"}},
		}
		if err := e.admin.Create(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		cond := waitReady(t, iss, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)
		if !strings.Contains(cond.Message, certmintNS+"/"+ns+"-cluster") {
			t.Errorf("message %q does not name the Secret in %s", cond.Message, certmintNS)
		}
		createTLSSecret(t, certmintNS, ns+"-cluster", caSecretData(t, nil))
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	})

	t.Run("a selfSigned ClusterIssuer is Ready with a generated root", func(t *testing.T) {
		iss := &v1alpha1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: ns + "-selfsigned"},
			Spec:       v1alpha1.IssuerSpec{SelfSigned: &v1alpha1.SelfSignedIssuer{}},
		}
		if err := e.admin.Create(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
		block, _ := pem.Decode([]byte(iss.Status.TrustBundle))
		if block == nil {
			t.Fatal("no trust bundle")
		}
		root, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !root.IsCA {
			t.Fatalf("trust bundle is not a CA certificate: %v", err)
		}

		// The generated root goes with its issuer.
		var secrets corev1.SecretList
		if err := e.admin.List(t.Context(), &secrets, client.InNamespace(certmintNS), client.MatchingLabels{"certmint.io/issuer-name": iss.Name}); err != nil || len(secrets.Items) != 1 {
			t.Fatalf("want one root Secret labelled for the issuer, got %d (%v)", len(secrets.Items), err)
		}
		if err := e.admin.Delete(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
			err := e.admin.Get(ctx, client.ObjectKeyFromObject(&secrets.Items[0]), &corev1.Secret{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Errorf("root Secret not deleted with its issuer: %v", err)
		}
	})

	t.Run("the API server rejects specs that are not exactly one backend", func(t *testing.T) {
		for name, spec := range map[string]v1alpha1.IssuerSpec{
			"none": {},
			"both": {SelfSigned: &v1alpha1.SelfSignedIssuer{}, CA: &v1alpha1.CAIssuer{SecretName: "x"}},
		} {
			err := e.admin.Create(t.Context(), &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "invalid-" + name}, Spec: spec})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "exactly one of selfSigned, ca, acme or vault") {
				t.Errorf("%s: err = %v, want the one-of rule", name, err)
			}
		}
		err := e.admin.Create(t.Context(), &v1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "invalid-pattern"},
			Spec: v1alpha1.IssuerSpec{
				SelfSigned: &v1alpha1.SelfSignedIssuer{},
				Policy: &v1alpha1.Policy{
					AllowedDNSNames: []string{"Bad_Name"},
					AllowedURIs:     []string{"no scheme"},
					MaxDuration:     &metav1.Duration{Duration: time.Minute},
					AllowedKeyTypes: []v1alpha1.KeyType{{Algorithm: v1alpha1.KeyAlgorithmRSA, MinSize: ptr.To[int32](1024)}},
				},
			},
		})
		for _, rule := range []string{"lower-case DNS name", "absolute URI", "at least 10m", "at least 2048 bits"} {
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), rule) {
				t.Errorf("err = %v, want the rule %q", err, rule)
			}
		}
		err = e.admin.Create(t.Context(), &v1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "valid-policy"},
			Spec: v1alpha1.IssuerSpec{
				SelfSigned: &v1alpha1.SelfSignedIssuer{},
				Policy: &v1alpha1.Policy{
					AllowedDNSNames: []string{"*.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}"},
					AllowedURIs:     []string{"spiffe://${TRUST_DOMAIN}/ns/${POD_NAMESPACE}/sa/*"},
					MaxDuration:     &metav1.Duration{Duration: time.Hour},
				},
			},
		})
		if err != nil {
			t.Errorf("a valid policy was rejected: %v", err)
		}
	})
}

// issuance sets up a namespace with a Ready CA Issuer and one pod on each
// node, all with ServiceAccount "web".
type issuance struct {
	ns          string
	signer      string
	trustBundle []byte
	podA, podB  *corev1.Pod
	// svc is the Service-style DNS name the default policy allows the pods.
	svc string
}

func newIssuance(t testing.TB, ns string) *issuance {
	t.Helper()
	e := requireEnv(t)
	ctx := t.Context()
	podA, err := e.createPod(ctx, ns, "web-a", nodeA, "web")
	if err != nil {
		t.Fatal(err)
	}
	podB, err := e.createPod(ctx, ns, "web-b", nodeB, "web")
	if err != nil {
		t.Fatal(err)
	}
	data := caSecretData(t, nil)
	createTLSSecret(t, ns, "ca", data)
	iss := createCAIssuer(t, ns, "ca", "ca", nil)
	waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	return &issuance{
		ns:          ns,
		signer:      request.IssuerRef{Kind: request.KindIssuer, Namespace: ns, Name: "ca"}.SignerName(),
		trustBundle: data[corev1.TLSCertKey],
		podA:        podA, podB: podB,
		svc: "web." + ns + ".svc",
	}
}

func createCSR(t testing.TB, as kubernetes.Interface, csr *certificatesv1.CertificateSigningRequest) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	created, err := as.CertificatesV1().CertificateSigningRequests().Create(t.Context(), csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating CSR: %v", err)
	}
	return created
}

func issued(csr *certificatesv1.CertificateSigningRequest) bool {
	return len(csr.Status.Certificate) > 0
}

func denied(csr *certificatesv1.CertificateSigningRequest) bool {
	return condition(csr, certificatesv1.CertificateDenied) != nil
}

func TestNodeBinding(t *testing.T) {
	requireEnv(t)
	startController(t, "node-binding")
	it := newIssuance(t, uniqueName("node-binding"))
	spiffe := "spiffe://cluster.local/ns/" + it.ns + "/sa/web"

	t.Run("the driver gets a certificate for a pod on its own node", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA,
			dnsNames: []string{it.svc}, uris: []string{spiffe}}))
		// The API server, not the driver, recorded where the request came from.
		if got := created.Spec.Extra[request.ExtraNodeName]; len(got) != 1 || got[0] != nodeA {
			t.Fatalf("spec.extra node-name = %v, want [%s]", got, nodeA)
		}
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		if c := condition(csr, certificatesv1.CertificateApproved); c == nil || c.Reason != policy.ReasonApproved {
			t.Fatalf("conditions = %+v, want Approved by policy", csr.Status.Conditions)
		}
		block, _ := pem.Decode(csr.Status.Certificate)
		if block == nil {
			t.Fatal("status.certificate holds no PEM")
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(it.trustBundle)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: it.svc, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("certificate does not verify against the issuer's CA: %v", err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffe {
			t.Errorf("URIs = %v, want %s", leaf.URIs, spiffe)
		}
		if lifetime := leaf.NotAfter.Sub(leaf.NotBefore); lifetime > time.Hour+10*time.Minute {
			t.Errorf("lifetime %s is longer than the hour asked for (plus backdating)", lifetime)
		}
	})

	t.Run("the same request claiming a pod on another node is denied", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podB, node: nodeA,
			dnsNames: []string{it.svc}, uris: []string{spiffe}}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		c := condition(csr, certificatesv1.CertificateDenied)
		if c == nil || c.Reason != policy.ReasonNodeMismatch {
			t.Fatalf("conditions = %+v, want Denied %s", csr.Status.Conditions, policy.ReasonNodeMismatch)
		}
		if want := `pod ` + it.ns + `/web-b is on node "node-b" but the request came from the driver on node "node-a"`; c.Message != want {
			t.Errorf("message = %q, want %q", c.Message, want)
		}
		if len(csr.Status.Certificate) != 0 {
			t.Error("a denied request got a certificate")
		}

		// The pod is on another node than the requester, so it is not told:
		// otherwise a node could write Events on any pod. A denial for a pod
		// on the requester's own node is, and serves as the marker that the
		// controller's Events have been written.
		marker := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{"not-allowed." + it.ns}}))
		waitForCSR(t, marker.Name, denied)
		waitForPodEvent(t, it.podA, policy.ReasonNameNotAllowed)
		time.Sleep(time.Second)
		if found, err := podHasEvent(t.Context(), it.podB, policy.ReasonNodeMismatch); err != nil || found {
			t.Errorf("pod %s on %s got a %s Event (err %v) from a request made on %s", it.podB.Name, nodeB, policy.ReasonNodeMismatch, err, nodeA)
		}
	})

	t.Run("lying about the node in the label does not help", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podB, node: nodeB, dnsNames: []string{it.svc}}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		if c := condition(csr, certificatesv1.CertificateDenied); c == nil || c.Reason != policy.ReasonNodeMismatch {
			t.Fatalf("conditions = %+v, want Denied %s", csr.Status.Conditions, policy.ReasonNodeMismatch)
		}
	})

	t.Run("node-b's driver gets the certificate for its own pod", func(t *testing.T) {
		created := createCSR(t, env.driverB, newCSR(t, csrSpec{signer: it.signer, pod: it.podB, node: nodeB, dnsNames: []string{it.svc}}))
		waitForCSR(t, created.Name, issued)
	})

	t.Run("a request from any other identity is denied", func(t *testing.T) {
		// A pod-bound token of another ServiceAccount on the right node.
		ctx := t.Context()
		intruderName := uniqueName("intruder")
		intruderPod, err := env.createPod(ctx, certmintNS, intruderName, nodeA, intruderName)
		if err != nil {
			t.Fatal(err)
		}
		// Let the intruder create CSRs, as a careless RBAC setup might.
		binding := &rbacBinding{name: intruderName, sa: intruderName}
		binding.create(t)
		cfg, err := env.podBoundConfig(ctx, intruderPod)
		if err != nil {
			t.Fatal(err)
		}
		intruder := kubernetes.NewForConfigOrDie(cfg)
		var created *certificatesv1.CertificateSigningRequest
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			created, err = intruder.CertificatesV1().CertificateSigningRequests().Create(ctx,
				newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}), metav1.CreateOptions{})
			return err == nil, nil // RBAC takes a moment to see the new binding
		})
		if err != nil {
			t.Fatalf("intruder could not create a CSR: %v", err)
		}
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		c := condition(csr, certificatesv1.CertificateDenied)
		if c == nil || c.Reason != policy.ReasonNotDriver {
			t.Fatalf("conditions = %+v, want Denied %s", csr.Status.Conditions, policy.ReasonNotDriver)
		}
	})

	t.Run("a pod of the driver's ServiceAccount outside its DaemonSet is denied", func(t *testing.T) {
		// Whoever may create pods in the driver's namespace could run one as
		// the driver's ServiceAccount on any node.
		ctx := t.Context()
		rogue, err := env.createPod(ctx, certmintNS, uniqueName("rogue-driver"), nodeA, driverSA)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := env.podBoundConfig(ctx, rogue)
		if err != nil {
			t.Fatal(err)
		}
		created := createCSR(t, kubernetes.NewForConfigOrDie(cfg), newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		c := condition(csr, certificatesv1.CertificateDenied)
		if c == nil || c.Reason != policy.ReasonNotDriver || !strings.Contains(c.Message, "not a pod of DaemonSet") {
			t.Fatalf("conditions = %+v, want Denied %s naming the DaemonSet", csr.Status.Conditions, policy.ReasonNotDriver)
		}
	})

	t.Run("a name outside the policy is denied with the allowed names", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{"admin.kube-system.svc"}}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		c := condition(csr, certificatesv1.CertificateDenied)
		if c == nil || c.Reason != policy.ReasonNameNotAllowed || !strings.Contains(c.Message, it.svc) {
			t.Fatalf("conditions = %+v, want Denied %s listing the allowed names", csr.Status.Conditions, policy.ReasonNameNotAllowed)
		}
	})

	t.Run("a request for a pod that does not exist is denied", func(t *testing.T) {
		ghost := it.podA.DeepCopy()
		ghost.Name, ghost.UID = "ghost", "00000000-0000-0000-0000-000000000000"
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: ghost, node: nodeA, dnsNames: []string{"ghost"}}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		if c := condition(csr, certificatesv1.CertificateDenied); c == nil || c.Reason != policy.ReasonPodNotFound {
			t.Fatalf("conditions = %+v, want Denied %s", csr.Status.Conditions, policy.ReasonPodNotFound)
		}
	})

	t.Run("requests to a missing issuer are denied", func(t *testing.T) {
		signer := request.IssuerRef{Kind: request.KindClusterIssuer, Name: "does-not-exist"}.SignerName()
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		if c := condition(csr, certificatesv1.CertificateDenied); c == nil || c.Reason != "IssuerNotFound" {
			t.Fatalf("conditions = %+v, want Denied IssuerNotFound", csr.Status.Conditions)
		}
	})
}

func TestIssuerPolicy(t *testing.T) {
	e := requireEnv(t)
	startController(t, "policy")
	it := newIssuance(t, uniqueName("policy"))

	// A ClusterIssuer that allows CAs and a wider DNS pattern.
	cluster := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("policy-ca")},
		Spec: v1alpha1.IssuerSpec{
			SelfSigned: &v1alpha1.SelfSignedIssuer{},
			Policy: &v1alpha1.Policy{
				AllowCA:         true,
				AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.com"},
				MaxDuration:     &metav1.Duration{Duration: 2 * time.Hour},
			},
		},
	}
	if err := e.admin.Create(t.Context(), cluster); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cluster, metav1.ConditionTrue, v1alpha1.ReasonReady)
	clusterSigner := request.IssuerRef{Kind: request.KindClusterIssuer, Name: cluster.Name}.SignerName()
	wide := "api." + it.ns + ".example.com"

	t.Run("an issuer that allows CAs issues one limited to leaves", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: clusterSigner, pod: it.podA, node: nodeA, dnsNames: []string{wide}, isCA: true}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		block, _ := pem.Decode(csr.Status.Certificate)
		if block == nil {
			t.Fatalf("not issued: %+v", csr.Status.Conditions)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !cert.IsCA || !cert.MaxPathLenZero {
			t.Errorf("IsCA %v MaxPathLenZero %v, want a CA for leaves only", cert.IsCA, cert.MaxPathLenZero)
		}
		if !cert.PermittedDNSDomainsCritical || len(cert.PermittedDNSDomains) != 1 || cert.PermittedDNSDomains[0] != wide {
			t.Errorf("name constraints: critical %v, DNS %v; want the CA limited to %s", cert.PermittedDNSDomainsCritical, cert.PermittedDNSDomains, wide)
		}
	})

	t.Run("the default policy denies the same CA request", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}, isCA: true}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		if c := condition(csr, certificatesv1.CertificateDenied); c == nil || c.Reason != policy.ReasonCANotAllowed {
			t.Fatalf("conditions = %+v, want Denied %s", csr.Status.Conditions, policy.ReasonCANotAllowed)
		}
	})

	t.Run("the wider DNS pattern of the policy is allowed, the default names no longer", func(t *testing.T) {
		ok := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: clusterSigner, pod: it.podA, node: nodeA, dnsNames: []string{wide}}))
		waitForCSR(t, ok.Name, issued)
		replaced := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: clusterSigner, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
		csr := waitForCSR(t, replaced.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		if c := condition(csr, certificatesv1.CertificateDenied); c == nil || c.Reason != policy.ReasonNameNotAllowed {
			t.Fatalf("conditions = %+v, want Denied %s", csr.Status.Conditions, policy.ReasonNameNotAllowed)
		}
	})

	t.Run("a duration over the policy's maximum is denied", func(t *testing.T) {
		created := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: clusterSigner, pod: it.podA, node: nodeA, dnsNames: []string{wide}, duration: 3 * time.Hour}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool { return issued(c) || denied(c) })
		if c := condition(csr, certificatesv1.CertificateDenied); c == nil || c.Reason != policy.ReasonDurationTooLong {
			t.Fatalf("conditions = %+v, want Denied %s", csr.Status.Conditions, policy.ReasonDurationTooLong)
		}
	})
}

func TestMetrics(t *testing.T) {
	requireEnv(t)
	ctl := startController(t, "metrics")
	it := newIssuance(t, uniqueName("metrics"))
	ok := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
	bad := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podB, node: nodeA, dnsNames: []string{it.svc}}))
	waitForCSR(t, ok.Name, issued)
	waitForCSR(t, bad.Name, denied)

	for metric, want := range map[string]float64{
		`certmint_requests_total{result="approved",signer="` + it.signer + `"}`: 1,
		`certmint_requests_total{result="signed",signer="` + it.signer + `"}`:   1,
		`certmint_requests_total{result="denied",signer="` + it.signer + `"}`:   1,
		`certmint_sign_duration_seconds_count{signer="` + it.signer + `"}`:      1,
		`certmint_issuer_ready{signer="` + it.signer + `"}`:                     1,
	} {
		if got, err := ctl.metric(metric); err != nil || got != want {
			t.Errorf("%s = %v (%v), want %v", metric, got, err, want)
		}
	}
}

func podHasEvent(ctx context.Context, pod *corev1.Pod, reason string) (bool, error) {
	var events eventsv1.EventList
	if err := env.admin.List(ctx, &events, client.InNamespace(pod.Namespace)); err != nil {
		return false, err
	}
	for _, ev := range events.Items {
		if ev.Regarding.UID == pod.UID && ev.Reason == reason {
			return true, nil
		}
	}
	return false, nil
}

func waitForPodEvent(t testing.TB, pod *corev1.Pod, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		return podHasEvent(ctx, pod, reason)
	})
	if err != nil {
		t.Errorf("no %s Event on pod %s/%s: %v", reason, pod.Namespace, pod.Name, err)
	}
}

// rbacBinding lets a ServiceAccount in the certmint namespace create CSRs.
type rbacBinding struct{ name, sa string }

func (b *rbacBinding) create(t testing.TB) {
	t.Helper()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: b.name},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{certificatesv1.GroupName},
			Resources: []string{"certificatesigningrequests"},
			Verbs:     []string{"create", "get"},
		}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: b.name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: b.name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: certmintNS, Name: b.sa}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.admin.Create(t.Context(), obj); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCleanupRemovesFinishedRequests(t *testing.T) {
	requireEnv(t)
	startController(t, "cleanup", "--csr-cleanup-grace=2s")
	it := newIssuance(t, uniqueName("cleanup"))

	signed := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
	refused := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podB, node: nodeA, dnsNames: []string{it.svc}}))
	for _, name := range []string{signed.Name, refused.Name} {
		err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			err := env.admin.Get(ctx, types.NamespacedName{Name: name}, &certificatesv1.CertificateSigningRequest{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Errorf("CSR %s was not cleaned up: %v", name, err)
		}
	}
}

// TestLeaderFailover runs two controllers; the leader is killed while
// requests keep coming. Every request must be signed, and signed once.
func TestLeaderFailover(t *testing.T) {
	requireEnv(t)
	ctx := t.Context()
	it := newIssuanceWithoutController(t, uniqueName("failover"))

	first := startController(t, "first", "--leader-elect=true")
	second := startController(t, "second", "--leader-elect=true")

	// Record every certificate each request ever shows.
	// Watch from a listed resourceVersion: a watch from "now" waits for the
	// watch cache to prove it is current, which etcd 3.4 cannot help with.
	list, err := env.kube.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := env.kube.CertificatesV1().CertificateSigningRequests().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	certs := map[string]map[string]bool{}
	failed := map[string]bool{}
	var watchErr error
	go func() {
		for ev := range w.ResultChan() {
			csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
			if !ok {
				mu.Lock()
				watchErr = fmt.Errorf("watch ended: %v", ev.Object)
				mu.Unlock()
				return
			}
			if csr.Spec.SignerName != it.signer || ev.Type == watch.Deleted {
				continue
			}
			mu.Lock()
			if certs[csr.Name] == nil {
				certs[csr.Name] = map[string]bool{}
			}
			if len(csr.Status.Certificate) > 0 {
				certs[csr.Name][string(csr.Status.Certificate)] = true
			}
			if condition(csr, certificatesv1.CertificateFailed) != nil {
				failed[csr.Name] = true
			}
			mu.Unlock()
		}
	}()

	leader := func() (*controllerProcess, *controllerProcess) {
		var l, s *controllerProcess
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			a, _ := first.metric("leader_election_master_status")
			b, _ := second.metric("leader_election_master_status")
			switch {
			case a == 1 && b == 0:
				l, s = first, second
			case b == 1 && a == 0:
				l, s = second, first
			default:
				return false, nil
			}
			return true, nil
		})
		if err != nil {
			t.Fatal("no single leader among the two controllers")
		}
		return l, s
	}
	active, standby := leader()

	const total = 60
	var names []string
	for i := range total {
		if i == total/3 {
			// Kill the leader mid-stream, without it releasing the lease.
			active.Kill()
		}
		csr := createCSR(t, env.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}}))
		names = append(names, csr.Name)
		time.Sleep(50 * time.Millisecond)
	}
	for _, name := range names {
		waitForCSR(t, name, issued)
	}
	if v, err := standby.metric("leader_election_master_status"); err != nil || v != 1 {
		t.Errorf("standby did not take over: leader_election_master_status = %v (%v)", v, err)
	}
	if v, err := standby.metric(`certmint_requests_total{result="signed"`); err != nil || v == 0 {
		t.Errorf("standby signed %v requests (%v); the test did not exercise failover", v, err)
	}
	// Let late watch events arrive before counting.
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	if watchErr != nil {
		t.Fatal(watchErr)
	}
	for _, name := range names {
		if n := len(certs[name]); n != 1 {
			t.Errorf("CSR %s showed %d different certificates, want exactly 1", name, n)
		}
		if failed[name] {
			t.Errorf("CSR %s was marked Failed", name)
		}
	}
}

// newIssuanceWithoutController makes the issuance fixtures with a
// controller that is stopped again before the test's own controllers start.
func newIssuanceWithoutController(t testing.TB, ns string) *issuance {
	t.Helper()
	setupCtl := startController(t, ns+"-setup")
	it := newIssuance(t, ns)
	setupCtl.Stop()
	return it
}

package controller_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/acmesolver"
	"github.com/certmint/certmint/pkg/controller/certificate"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/pebble"
)

// TestACMEIssuer gets a certificate for a node-bound request from Pebble
// through a real HTTP-01 validation. The leader runs the order; Pebble's
// validation request goes to the standby's solver only, so the test also
// shows that any replica answers.
func TestACMEIssuer(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	leaderSolver, standbySolver := freeAddr(t), freeAddr(t)
	_, standbyPort, err := net.SplitHostPort(standbySolver)
	if err != nil {
		t.Fatal(err)
	}
	httpPort, err := strconv.Atoi(standbyPort)
	if err != nil {
		t.Fatal(err)
	}
	pb := pebble.Start(t, pebble.Options{HTTPPort: httpPort})
	startController(t, "acme-leader", "--leader-elect=true", "--acme-http01-address="+leaderSolver)

	ns := uniqueName("acme")
	pod, err := e.createPod(ctx, ns, "web", nodeA, "web")
	if err != nil {
		t.Fatal(err)
	}
	issuerName := uniqueName("pebble")
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: issuerName},
		Spec: v1alpha1.IssuerSpec{
			ACME: &v1alpha1.ACMEIssuer{
				Server:               pb.DirectoryURL,
				Email:                "certs@certmint.test",
				AccountKeySecretName: issuerName + "-account",
				CABundle:             string(pb.TLSCA),
				TrustBundle:          string(pb.Root),
				Solvers:              []v1alpha1.ACMESolver{{HTTP01: &v1alpha1.ACMEHTTP01Solver{}}},
			},
			Policy: &v1alpha1.Policy{AllowedDNSNames: []string{"${POD_NAME}.${POD_NAMESPACE}.certmint.test", "cert.${POD_NAMESPACE}.certmint.test"}},
		},
	}
	if err := e.admin.Create(ctx, iss); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.admin.Delete(context.Background(), iss)
		// Deleting the issuer leaves its account key behind.
		_ = e.admin.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: certmintNS, Name: iss.Spec.ACME.AccountKeySecretName}})
	})
	// Only the leader reconciles issuers: this one is the leader from now.
	cond := waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	t.Logf("issuer ready: %s", cond.Message)
	startController(t, "acme-standby", "--leader-elect=true", "--acme-http01-address="+standbySolver)
	signer := request.IssuerRef{Kind: request.KindClusterIssuer, Name: issuerName}.SignerName()

	t.Run("the account key is generated in the controller's namespace", func(t *testing.T) {
		var secret corev1.Secret
		if err := e.admin.Get(ctx, types.NamespacedName{Namespace: certmintNS, Name: iss.Spec.ACME.AccountKeySecretName}, &secret); err != nil {
			t.Fatal(err)
		}
		if block, _ := pem.Decode(secret.Data[corev1.TLSPrivateKeyKey]); block == nil || block.Type != "PRIVATE KEY" {
			t.Fatalf("tls.key of the account Secret is not a PEM private key: %q", secret.Data[corev1.TLSPrivateKeyKey])
		}
	})

	t.Run("the issuer publishes Pebble's root as its trust bundle", func(t *testing.T) {
		if !bytes.Equal(bytes.TrimSpace([]byte(iss.Status.TrustBundle)), bytes.TrimSpace(pb.Root)) {
			t.Fatalf("status.trustBundle is not Pebble's root:\n%s", iss.Status.TrustBundle)
		}
	})

	t.Run("a node-bound request is signed by Pebble after an HTTP-01 validation", func(t *testing.T) {
		name := "web." + ns + ".certmint.test"
		// From the watch cache's current state ("0"): a fresher resource
		// version can be refused while that cache has seen no ConfigMap
		// change.
		challenges, err := e.kube.CoreV1().ConfigMaps(certmintNS).Watch(ctx, metav1.ListOptions{LabelSelector: acmesolver.LabelChallenge + "=true", ResourceVersion: "0"})
		if err != nil {
			t.Fatal(err)
		}
		defer challenges.Stop()
		start := time.Now()
		created := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: signer, pod: pod, node: nodeA, dnsNames: []string{name}}))
		csr := waitForCSR(t, created.Name, issued)
		t.Logf("issued %s in %s", created.Name, time.Since(start).Round(time.Millisecond))

		chain := parseChain(t, csr.Status.Certificate)
		leaf := chain[0]
		if !slices.Equal(leaf.DNSNames, []string{name}) {
			t.Errorf("leaf DNS names = %v, want [%s]", leaf.DNSNames, name)
		}
		key, err := csrKey()
		if err != nil {
			t.Fatal(err)
		}
		if !key.PublicKey.Equal(leaf.PublicKey) {
			t.Error("the leaf does not certify the key of the node's request")
		}
		for _, c := range chain {
			if bytes.Equal(c.RawIssuer, c.RawSubject) {
				t.Errorf("the chain holds the self-signed %s; roots belong in the trust bundle only", c.Subject)
			}
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(iss.Status.TrustBundle)) {
			t.Fatal("status.trustBundle holds no certificate")
		}
		intermediates := x509.NewCertPool()
		for _, c := range chain[1:] {
			intermediates.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, DNSName: name}); err != nil {
			t.Errorf("the chain does not verify against the published trust bundle: %v", err)
		}
		// The key authorization was published for the replicas to answer
		// and withdrawn once validated.
		var published, withdrawn bool
		timeout := time.After(10 * time.Second)
		for !published || !withdrawn {
			select {
			case ev, ok := <-challenges.ResultChan():
				if !ok || ev.Type == watch.Error {
					t.Fatalf("watching challenge ConfigMaps: %+v", ev.Object)
				}
				published = published || ev.Type == watch.Added
				withdrawn = withdrawn || ev.Type == watch.Deleted
			case <-timeout:
				t.Fatalf("challenge ConfigMap published: %t, withdrawn: %t", published, withdrawn)
			}
		}
		// Pebble's VA logs each HTTP-01 fetch it made and its result.
		if log := pb.Log(); !strings.Contains(log, "/.well-known/acme-challenge/") {
			t.Errorf("Pebble logged no HTTP-01 validation:\n%s", tail([]byte(log), 30))
		}
	})

	t.Run("a request with a URI SAN is approved by policy but refused by the ACME issuer", func(t *testing.T) {
		spiffeID := "spiffe://cluster.local/ns/" + ns + "/sa/web"
		created := createCSR(t, e.driverA, newCSR(t, csrSpec{
			signer: signer, pod: pod, node: nodeA,
			dnsNames: []string{"web." + ns + ".certmint.test"},
			uris:     []string{spiffeID},
		}))
		csr := waitForCSR(t, created.Name, func(c *certificatesv1.CertificateSigningRequest) bool {
			return condition(c, certificatesv1.CertificateFailed) != nil
		})
		if condition(csr, certificatesv1.CertificateApproved) == nil {
			t.Error("the request was not approved: the refusal must come from the issuer, not the policy")
		}
		failed := condition(csr, certificatesv1.CertificateFailed)
		if !strings.Contains(failed.Message, "URI SANs ("+spiffeID+")") || !strings.Contains(failed.Message, "DNS names only") {
			t.Errorf("failure message does not say what the ACME issuer cannot certify: %s: %s", failed.Reason, failed.Message)
		}
		if len(csr.Status.Certificate) > 0 {
			t.Error("a refused request got a certificate")
		}
	})

	t.Run("a Certificate gets its Secret from Pebble, over the passes of one order", func(t *testing.T) {
		host := "cert." + ns + ".certmint.test"
		// Orders Pebble added, not requests to add one: Pebble refuses a
		// share of nonces on purpose, and the client asks again.
		const added = "Added order"
		ordersBefore := strings.Count(pb.Log(), added)
		cert := newCert(ns, "acme", issuerName, host)
		if err := e.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to be Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
		leafOf(t, readySecret(t, ns, "acme-tls"), pb.Root, host)
		if n := strings.Count(pb.Log(), added) - ordersBefore; n != 1 {
			t.Errorf("Pebble got %d orders for one Certificate, want 1: each pass must ask with the same request", n)
		}
	})

	t.Run("no challenge is left published", func(t *testing.T) {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			var left corev1.ConfigMapList
			if err := e.admin.List(ctx, &left, client.InNamespace(certmintNS), client.MatchingLabels{acmesolver.LabelChallenge: "true"}); err != nil {
				return false, err
			}
			return len(left.Items) == 0, nil
		})
		if err != nil {
			t.Fatalf("HTTP-01 challenge ConfigMaps remain: %v", err)
		}
	})
}

func parseChain(t *testing.T, chainPEM []byte) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		t.Fatalf("status.certificate holds no certificate: %q", chainPEM)
	}
	return chain
}

func TestACMEIssuerSpecValidation(t *testing.T) {
	e := requireEnv(t)
	ns := uniqueName("acme-spec")
	if err := e.ensureServiceAccount(t.Context(), ns, "default"); err != nil {
		t.Fatal(err)
	}
	valid := func() *v1alpha1.ACMEIssuer {
		return &v1alpha1.ACMEIssuer{
			Server:               "https://acme.example.com/directory",
			AccountKeySecretName: "account",
			TrustBundle:          "root PEM",
			Solvers:              []v1alpha1.ACMESolver{{HTTP01: &v1alpha1.ACMEHTTP01Solver{}}},
		}
	}
	tests := []struct {
		name    string
		spec    v1alpha1.IssuerSpec
		wantErr string
	}{
		{name: "a plain http server URL", spec: v1alpha1.IssuerSpec{ACME: func() *v1alpha1.ACMEIssuer { a := valid(); a.Server = "http://acme.example.com/directory"; return a }()}, wantErr: "must be an https URL"},
		{name: "no solver", spec: v1alpha1.IssuerSpec{ACME: func() *v1alpha1.ACMEIssuer { a := valid(); a.Solvers = nil; return a }()}, wantErr: "set solvers"},
		{name: "solvers and the old solver both", spec: v1alpha1.IssuerSpec{ACME: func() *v1alpha1.ACMEIssuer { a := valid(); a.Solver = &a.Solvers[0]; return a }()}, wantErr: "not both"},
		{name: "a solver with no challenge type", spec: v1alpha1.IssuerSpec{ACME: func() *v1alpha1.ACMEIssuer { a := valid(); a.Solvers[0].HTTP01 = nil; return a }()}, wantErr: "exactly one of http01 or dns01"},
		{name: "an email that is not one", spec: v1alpha1.IssuerSpec{ACME: func() *v1alpha1.ACMEIssuer { a := valid(); a.Email = "certs"; return a }()}, wantErr: "must be an email address"},
		{name: "acme next to another backend", spec: v1alpha1.IssuerSpec{ACME: valid(), CA: &v1alpha1.CAIssuer{SecretName: "ca"}}, wantErr: "exactly one of selfSigned, ca, acme or vault"},
	}
	for _, tt := range tests {
		t.Run("the API server rejects "+tt.name, func(t *testing.T) {
			err := e.admin.Create(t.Context(), &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("acme-spec")}, Spec: tt.spec})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("create: %v, want Invalid saying %q", err, tt.wantErr)
			}
		})
	}
	t.Run("the API server rejects a namespaced Issuer with a complete acme spec", func(t *testing.T) {
		err := e.admin.Create(t.Context(), &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "acme"}, Spec: v1alpha1.IssuerSpec{ACME: valid()}})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "acme is available only on ClusterIssuers") {
			t.Fatalf("create: %v, want Invalid saying acme is available only on ClusterIssuers", err)
		}
	})
	t.Run("the API server accepts a ClusterIssuer with a complete spec", func(t *testing.T) {
		ci := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("acme-spec")}, Spec: v1alpha1.IssuerSpec{ACME: valid()}}
		if err := e.admin.Create(t.Context(), ci); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.admin.Delete(context.Background(), ci) })
	})
	t.Run("the API server accepts the one solver of issuers written before solvers", func(t *testing.T) {
		spec := valid()
		spec.Solver, spec.Solvers = &spec.Solvers[0], nil
		ci := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("acme-spec")}, Spec: v1alpha1.IssuerSpec{ACME: spec}}
		if err := e.admin.Create(t.Context(), ci); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.admin.Delete(context.Background(), ci) })
		if got := ci.Spec.ACME.SolverList(); len(got) != 1 || got[0].HTTP01 == nil {
			t.Errorf("solvers read from the old field: %+v", got)
		}
	})
}

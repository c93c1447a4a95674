package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

const (
	// rotationIssuer is the ClusterIssuer whose CA the test replaces.
	rotationIssuer = "e2e-ca-rotation"
	// caRotationTimeout allows the drivers' re-issuance spread (30s by
	// default) and the calls after it.
	caRotationTimeout = 3 * time.Minute
)

// TestCARotation replaces the CA Secret of a ClusterIssuer under a server
// and a client on different nodes that call each other over mutual TLS
// every 200ms, and checks that both move to the new CA by themselves, long
// before their certificates are due for renewal, while the client goes on
// trusting the old CA, and that no call fails on the way.
func TestCARotation(t *testing.T) {
	if len(testCluster.Nodes) < 2 {
		t.Fatalf("cluster has %d nodes; the test needs two", len(testCluster.Nodes))
	}
	f := framework.New(t, testCluster)
	installCertmint(t, f)
	oldRoot, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, rotationIssuer)
	if err != nil {
		t.Fatal(err)
	}
	createServiceAccounts(t, f, "server", "client")
	// Certificates of the default lifetime (24h): only the rotation makes
	// the drivers replace them during the test.
	server := deploy.CertPod("server", testCluster.Nodes[0].Name, "server", rotationIssuer, testappImage, []string{"mtls-serve",
		fmt.Sprintf("--listen=:%d", mtlsPort), "--cert-dir=/tls", "--peer-uri=" + spiffeID(f.Namespace, "client")})
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), server, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	server = f.WaitForPodRunning("server", podTimeout)
	client := deploy.CertPod("client", testCluster.Nodes[1].Name, "client", rotationIssuer, testappImage, []string{"mtls-call",
		fmt.Sprintf("--addr=%s:%d", server.Status.PodIP, mtlsPort), "--server-name=server." + f.Namespace + ".svc",
		"--peer-uri=" + spiffeID(f.Namespace, "server"), "--every=200ms", "--timeout=5s"})
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitForPodRunning("client", podTimeout)
	waitForFirstCall(t, f, "client")
	for _, pod := range []string{"server", "client"} {
		if !signedUnder(t, catFile(t, f, pod, "/tls/tls.crt"), oldRoot) {
			t.Fatalf("%s's first certificate does not chain to the issuer's first root", pod)
		}
	}

	newRoot := rotateCASecret(t, f, rotationIssuer)
	rotatedAt := time.Now()
	var serverMoved, clientMoved time.Duration
	f.WaitFor("both pods to hold certificates from the new CA", caRotationTimeout, func(context.Context) (bool, string, error) {
		// Read the trust first: a certificate from the new CA read after it
		// must already be trusted by what was read before.
		clientTrust, serverTrust := catFile(t, f, "client", "/tls/ca.crt"), catFile(t, f, "server", "/tls/ca.crt")
		serverCert, clientCert := catFile(t, f, "server", "/tls/tls.crt"), catFile(t, f, "client", "/tls/tls.crt")
		for pod, trust := range map[string]string{"client": clientTrust, "server": serverTrust} {
			if !bundleHolds(t, trust, oldRoot) {
				return false, "", fmt.Errorf("%s's ca.crt dropped the old root %s after the rotation; certificates it signed are still in use:\n%s", pod, time.Since(rotatedAt).Round(time.Second), trust)
			}
		}
		if signedUnder(t, serverCert, newRoot) {
			if !bundleHolds(t, clientTrust, newRoot) {
				return false, "", fmt.Errorf("the server holds a certificate from the new CA that the client's ca.crt does not trust yet")
			}
			if serverMoved == 0 {
				serverMoved = time.Since(rotatedAt)
			}
		}
		if signedUnder(t, clientCert, newRoot) {
			if !bundleHolds(t, serverTrust, newRoot) {
				return false, "", fmt.Errorf("the client holds a certificate from the new CA that the server's ca.crt does not trust yet")
			}
			if clientMoved == 0 {
				clientMoved = time.Since(rotatedAt)
			}
		}
		return serverMoved > 0 && clientMoved > 0, fmt.Sprintf("server moved after %s, client after %s", serverMoved, clientMoved), nil
	})
	t.Logf("after the rotation the server held a certificate from the new CA within %s, the client within %s",
		serverMoved.Round(time.Second), clientMoved.Round(time.Second))

	// Calls with the new certificates on both sides.
	time.Sleep(2 * time.Second)
	clientLog, err := f.Kubectl("logs", "client")
	if err != nil {
		t.Fatal(err)
	}
	serverLog, err := f.Kubectl("logs", "server")
	if err != nil {
		t.Fatal(err)
	}
	// The server may take a moment to listen after it is Running: only
	// failures after the first success count.
	_, afterFirst, _ := strings.Cut(clientLog, "verified server ")
	if failed := strings.Count(afterFirst, "call failed"); failed > 0 {
		t.Errorf("%d of the client's calls failed across the rotation:\n%s", failed, clientLog)
	}
	if strings.Contains(serverLog, "handshake with") {
		t.Errorf("the server refused handshakes across the rotation:\n%s", serverLog)
	}
	t.Logf("%d calls succeeded; server certificates seen by the client: %v",
		strings.Count(clientLog, "verified server "), serials(serverSerial, clientLog))

	status := clusterIssuerStatus(t, rotationIssuer)
	retiring, _, _ := unstructured.NestedSlice(status, "retiringCAs")
	if len(retiring) != 1 {
		t.Errorf("the issuer lists %d retiring CAs, want the old root", len(retiring))
	} else if c, _ := retiring[0].(map[string]any)["certificate"].(string); !bundleHolds(t, c, oldRoot) {
		t.Errorf("the retiring CA is not the old root:\n%s", c)
	}
	if before, _, _ := unstructured.NestedString(status, "reissueBefore"); before == "" {
		t.Error("the issuer did not set reissueBefore")
	}
}

// rotateCASecret replaces the CA of the ca ClusterIssuer name, as a user
// rotating it does: a new root and a new intermediate in the same Secret.
// It returns the new root.
func rotateCASecret(t *testing.T, f *framework.Framework, name string) *x509.Certificate {
	t.Helper()
	data, root, err := deploy.CASecretData("certmint e2e rotated")
	if err != nil {
		t.Fatal(err)
	}
	secrets := f.Client.CoreV1().Secrets(deploy.Namespace)
	secret, err := secrets.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret.Data = data
	if _, err := secrets.Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("replacing the CA Secret: %v", err)
	}
	return root
}

// signedUnder reports whether the chain in chainPEM (leaf first) verifies
// up to root.
func signedUnder(t *testing.T, chainPEM string, root *x509.Certificate) bool {
	t.Helper()
	certs := pemCertificates(t, chainPEM)
	if len(certs) == 0 {
		t.Fatalf("no certificate in %q", chainPEM)
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// bundleHolds reports whether the PEM bundle holds c.
func bundleHolds(t *testing.T, bundle string, c *x509.Certificate) bool {
	t.Helper()
	for _, b := range pemCertificates(t, bundle) {
		if b.Equal(c) {
			return true
		}
	}
	return false
}

func pemCertificates(t *testing.T, text string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func clusterIssuerStatus(t *testing.T, name string) map[string]any {
	t.Helper()
	dyn, err := dynamic.NewForConfig(testCluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	u, err := dyn.Resource(deploy.ClusterIssuers).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	return status
}

package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/certmint/certmint/pkg/controller/podcertificate"
	"github.com/certmint/certmint/pkg/controller/trustbundle"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

const (
	// podCertIssuer is the ClusterIssuer of the projected pods.
	podCertIssuer = "e2e-pod-certificates"
	// refreshTimeout allows the earliest refresh the API lets a signer ask
	// for (ten minutes after notBefore, which is backdated), the kubelet's
	// own jitter of up to five minutes and its refresh pass, which runs
	// every one to two minutes.
	refreshTimeout = 20 * time.Minute
	// trustUpdateTimeout allows the kubelet's resync of projected volumes
	// and its ClusterTrustBundle cache.
	trustUpdateTimeout = 5 * time.Minute
)

// TestPodCertificate checks the native path on real kubelets, with no
// certmint driver involved: pods on two nodes with a podCertificate
// projection and a clusterTrustBundle projection of a certmint CA
// ClusterIssuer get their key and chain from the kubelet and certmint, and
// verify each other over mutual TLS; requests the policy forbids show on
// the pod; across a CA rotation the ClusterTrustBundle carries both CAs and
// old and new pods keep talking; and the kubelet refreshes the credentials
// at beginRefreshAt with no failed call.
func TestPodCertificate(t *testing.T) {
	if len(testCluster.Nodes) < 2 {
		t.Fatalf("cluster has %d nodes; the test needs two", len(testCluster.Nodes))
	}
	f := framework.New(t, testCluster)
	installCertmint(t, f)
	oldRoot, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, podCertIssuer)
	if err != nil {
		t.Fatal(err)
	}
	createServiceAccounts(t, f, "server", "client")
	// The shortest lifetime the API allows, refreshed as early as it lets
	// a signer ask, so the kubelet refreshes while the test runs.
	short := deploy.Projection{
		MaxExpirationSeconds: new(int32(3600)),
		Annotations: map[string]string{
			podcertificate.AnnotationDNSNames:    "${POD_NAME}.${POD_NAMESPACE}.svc",
			podcertificate.AnnotationRenewBefore: "1h",
		},
	}
	serverID, clientID := spiffeID(f.Namespace, "server"), spiffeID(f.Namespace, "client")
	server := deploy.ProjectedPod("server", testCluster.Nodes[0].Name, "server", podCertIssuer, testappImage, []string{"mtls-serve",
		fmt.Sprintf("--listen=:%d", mtlsPort), "--cert-dir=/tls", "--peer-uri=" + clientID}, short)
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), server, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	server = f.WaitForPodRunning("server", podTimeout)
	serverAddr := fmt.Sprintf("%s:%d", server.Status.PodIP, mtlsPort)
	callServer := func() []string {
		return []string{"mtls-call", "--addr=" + serverAddr, "--server-name=server." + f.Namespace + ".svc",
			"--peer-uri=" + serverID, "--every=1s", "--timeout=5s"}
	}
	client := deploy.ProjectedPod("client", testCluster.Nodes[1].Name, "client", podCertIssuer, testappImage, callServer(), short)
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitForPodRunning("client", podTimeout)
	waitForFirstCall(t, f, "client")
	firstServerCert, firstClientCert := catFile(t, f, "server", "/tls/tls.crt"), catFile(t, f, "client", "/tls/tls.crt")
	ref := request.IssuerRef{Kind: request.KindClusterIssuer, Name: podCertIssuer}

	t.Run("the kubelet's files hold a key made on the node, a chain from certmint's CA and the issuer's ClusterTrustBundle", func(t *testing.T) {
		f := f.WithT(t)
		for pod, id := range map[string]string{"server": serverID, "client": clientID} {
			chain := catFile(t, f, pod, "/tls/tls.crt")
			if !signedUnder(t, chain, oldRoot) {
				t.Errorf("%s's tls.crt does not chain to the issuer's root", pod)
			}
			leaf := pemCertificates(t, chain)[0]
			key, err := pki.ParsePrivateKey([]byte(catFile(t, f, pod, "/tls/tls.key")))
			if err != nil {
				t.Fatalf("%s's tls.key: %v", pod, err)
			}
			if !pki.PublicKeysEqual(leaf.PublicKey, key.Public()) {
				t.Errorf("%s's certificate is not for its key", pod)
			}
			if uris := uriStrings(leaf); !slices.Equal(uris, []string{id}) {
				t.Errorf("%s's certificate names %v, want %s", pod, uris, id)
			}
			if l := leaf.NotAfter.Sub(leaf.NotBefore); l != time.Hour {
				t.Errorf("%s's certificate lives %s, want the hour its projection asks for", pod, l)
			}
			if !bundleHolds(t, catFile(t, f, pod, "/tls/ca.crt"), oldRoot) {
				t.Errorf("%s's ca.crt does not hold the issuer's root", pod)
			}
		}
		ctb, err := f.Client.CertificatesV1().ClusterTrustBundles().Get(t.Context(), trustbundle.Name(ref), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading the issuer's ClusterTrustBundle: %v", err)
		}
		if ctb.Spec.SignerName != ref.SignerName() || !bundleHolds(t, ctb.Spec.TrustBundle, oldRoot) {
			t.Errorf("ClusterTrustBundle %s is for %s and holds %d certificates, want the root for %s", ctb.Name, ctb.Spec.SignerName,
				len(pemCertificates(t, ctb.Spec.TrustBundle)), ref.SignerName())
		}
	})

	t.Run("requests the policy forbids are denied, and the pod's Events say why", func(t *testing.T) {
		f := f.WithT(t)
		if err := deploy.SelfSignedClusterIssuer(t.Context(), testCluster.Config, podCertIssuer+"-rsa", map[string]any{
			"allowedKeyTypes": []any{map[string]any{"algorithm": "RSA"}},
		}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			pod, issuer, reason, text string
			projection                deploy.Projection
		}{
			{"greedy", podCertIssuer, policy.ReasonNameNotAllowed, `DNS name "bank.example.com" is not allowed`,
				deploy.Projection{Annotations: map[string]string{podcertificate.AnnotationDNSNames: "bank.example.com"}}},
			{"typo", podCertIssuer, certificatesv1.PodCertificateRequestConditionInvalidUserConfig, `"certmint.io/dns-name": not an annotation certmint knows`,
				deploy.Projection{Annotations: map[string]string{"certmint.io/dns-name": "typo.example.com"}}},
			{"wrong-key", podCertIssuer + "-rsa", certificatesv1.PodCertificateRequestConditionUnsupportedKeyType, "key ECDSA 256 is not allowed; allowed: RSA",
				deploy.Projection{}},
		} {
			pod := deploy.ProjectedPod(c.pod, testCluster.Nodes[0].Name, "client", c.issuer, testappImage, []string{"sleep"}, c.projection)
			if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			f.WaitFor(fmt.Sprintf("a Warning Event %s on pod %s", c.reason, c.pod), podTimeout, func(ctx context.Context) (bool, string, error) {
				note, err := podEventNote(ctx, f, c.pod, c.reason)
				if err != nil || note == "" {
					return false, fmt.Sprint(err), nil
				}
				if !strings.Contains(note, c.text) {
					return false, "", fmt.Errorf("the Event says %q, want it to say %q", note, c.text)
				}
				return true, "", nil
			})
			p, err := f.Client.CoreV1().Pods(f.Namespace).Get(t.Context(), c.pod, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Status.Phase != corev1.PodPending {
				t.Errorf("pod %s is %s with a denied certificate, want it Pending", c.pod, p.Status.Phase)
			}
		}
	})

	t.Run("across a CA rotation the ClusterTrustBundle carries both CAs, and old and new pods keep talking", func(t *testing.T) {
		f := f.WithT(t)
		newRoot := rotateCASecret(t, f, podCertIssuer)
		f.WaitFor("the ClusterTrustBundle to hold the old and the new root", time.Minute, func(ctx context.Context) (bool, string, error) {
			ctb, err := f.Client.CertificatesV1().ClusterTrustBundles().Get(ctx, trustbundle.Name(ref), metav1.GetOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			return bundleHolds(t, ctb.Spec.TrustBundle, oldRoot) && bundleHolds(t, ctb.Spec.TrustBundle, newRoot),
				fmt.Sprintf("%d certificates", len(pemCertificates(t, ctb.Spec.TrustBundle))), nil
		})
		// The server's certificate is the old CA's until it is refreshed;
		// a new client's is the new CA's. Each must trust the other's.
		f.WaitFor("the server's ca.crt to hold the new root", trustUpdateTimeout, func(context.Context) (bool, string, error) {
			return bundleHolds(t, catFile(t, f, "server", "/tls/ca.crt"), newRoot), "", nil
		})
		fresh := deploy.ProjectedPod("fresh-client", testCluster.Nodes[1].Name, "client", podCertIssuer, testappImage, callServer(), deploy.Projection{})
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), fresh, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitForPodRunning("fresh-client", podTimeout)
		if !signedUnder(t, catFile(t, f, "fresh-client", "/tls/tls.crt"), newRoot) {
			t.Fatal("a pod created after the rotation does not hold a certificate from the new CA")
		}
		if !bundleHolds(t, catFile(t, f, "fresh-client", "/tls/ca.crt"), oldRoot) {
			t.Fatal("a pod created after the rotation does not trust the old CA, whose certificates are still in use")
		}
		waitForFirstCall(t, f, "fresh-client")
	})

	t.Run("the kubelet refreshes both pods' credentials at beginRefreshAt with no failed call", func(t *testing.T) {
		f := f.WithT(t)
		// Looked at every 15s: each look execs into both pods.
		var lastLook time.Time
		f.WaitFor("both pods to hold refreshed certificates", refreshTimeout, func(ctx context.Context) (bool, string, error) {
			if time.Since(lastLook) < 15*time.Second {
				return false, "", nil
			}
			lastLook = time.Now()
			serverCert, clientCert := catFile(t, f, "server", "/tls/tls.crt"), catFile(t, f, "client", "/tls/tls.crt")
			return serverCert != firstServerCert && clientCert != firstClientCert,
				fmt.Sprintf("server refreshed: %v, client refreshed: %v", serverCert != firstServerCert, clientCert != firstClientCert), nil
		})
		// A call after the refresh on both sides.
		f.WaitFor("a call with both refreshed certificates", time.Minute, func(context.Context) (bool, string, error) {
			logs, err := f.Kubectl("logs", "server")
			serial := fmt.Sprintf("(serial %x)", pemCertificates(t, catFile(t, f, "client", "/tls/tls.crt"))[0].SerialNumber)
			return err == nil && strings.Contains(logs, serial), "waiting for the server to see " + serial, nil
		})
		clientLog, err := f.Kubectl("logs", "client")
		if err != nil {
			t.Fatal(err)
		}
		_, afterFirst, _ := strings.Cut(clientLog, "verified server ")
		if failed := strings.Count(afterFirst, "call failed"); failed > 0 {
			t.Errorf("%d of the client's calls failed:\n%s", failed, clientLog)
		}
		for _, pod := range []string{"server", "client"} {
			if warnings := podWarnings(t, f, pod); len(warnings) > 0 {
				t.Errorf("pod %s has Warning Events: %v", pod, warnings)
			}
			var issued int
			reqs, err := f.Client.CertificatesV1().PodCertificateRequests(f.Namespace).List(t.Context(), metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("spec.podName", pod).String(),
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range reqs.Items {
				if len(r.Status.Conditions) == 1 && r.Status.Conditions[0].Type == certificatesv1.PodCertificateRequestConditionTypeIssued {
					issued++
				}
			}
			if issued < 2 {
				t.Errorf("pod %s has %d issued PodCertificateRequests, want its first and its refresh", pod, issued)
			}
		}
	})
}

func uriStrings(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

// podEventNote is the note of an Event of reason on pod, "" if there is
// none.
func podEventNote(ctx context.Context, f *framework.Framework, pod, reason string) (string, error) {
	events, err := f.Client.CoreV1().Events(f.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": pod, "reason": reason}.String(),
	})
	if err != nil || len(events.Items) == 0 {
		return "", err
	}
	return events.Items[0].Message, nil
}

// podWarnings lists the reasons and notes of pod's Warning Events.
func podWarnings(t *testing.T, f *framework.Framework, pod string) []string {
	t.Helper()
	events, err := f.Client.CoreV1().Events(f.Namespace).List(t.Context(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": pod, "type": corev1.EventTypeWarning}.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range events.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

// Certificates of the shortest lifetime the API server signs (10m), renewed
// 30s after they are issued, so the test sees a renewal within a minute.
const (
	rotationDuration    = "10m"
	rotationRenewBefore = "9m30s"
	// rotationTimeout allows the renewal (at most 30s after publish) and
	// the calls after it.
	rotationTimeout = 2 * time.Minute
)

var (
	serverSerial = regexp.MustCompile(`verified server \S+ \S+ \(serial ([0-9a-f]+)\)`)
	clientSerial = regexp.MustCompile(`verified client \S+ \(serial ([0-9a-f]+)\)`)
)

// TestRotation checks that the driver renews certificates in place: a
// server and a client calling it every 200ms, both with certificates due for
// renewal 30s after issue, each see the other's new certificate over the
// same mounts, and no call fails while the files change under them.
func TestRotation(t *testing.T) {
	if len(testCluster.Nodes) < 2 {
		t.Fatalf("cluster has %d nodes; the test needs two", len(testCluster.Nodes))
	}
	f := framework.New(t, testCluster)
	installCertmint(t, f)
	if _, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, caIssuer); err != nil {
		t.Fatal(err)
	}
	createServiceAccounts(t, f, "server", "client")
	server := certPod("server", testCluster.Nodes[0].Name, "server", []string{"mtls-serve",
		fmt.Sprintf("--listen=:%d", mtlsPort), "--cert-dir=/tls", "--peer-uri=" + spiffeID(f.Namespace, "client")})
	shortLived(server)
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), server, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	server = f.WaitForPodRunning("server", podTimeout)
	firstCert := catFile(t, f, "server", "/tls/tls.crt")

	client := certPod("client", testCluster.Nodes[1].Name, "client", []string{"mtls-call",
		fmt.Sprintf("--addr=%s:%d", server.Status.PodIP, mtlsPort), "--server-name=server." + f.Namespace + ".svc",
		"--peer-uri=" + spiffeID(f.Namespace, "server"), "--every=200ms", "--timeout=5s"})
	shortLived(client)
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitForPodRunning("client", podTimeout)

	f.WaitFor("both sides to present a renewed certificate", rotationTimeout, func(context.Context) (bool, string, error) {
		clientLog, err := f.Kubectl("logs", "client")
		if err != nil {
			return false, err.Error(), nil
		}
		serverLog, err := f.Kubectl("logs", "server")
		if err != nil {
			return false, err.Error(), nil
		}
		servers, clients := serials(serverSerial, clientLog), serials(clientSerial, serverLog)
		return len(servers) >= 2 && len(clients) >= 2, fmt.Sprintf("server serials seen by the client %v, client serials seen by the server %v", servers, clients), nil
	})

	if cert := catFile(t, f, "server", "/tls/tls.crt"); cert == firstCert {
		t.Error("the server's tls.crt did not change in its mount")
	}
	clientLog, err := f.Kubectl("logs", "client")
	if err != nil {
		t.Fatal(err)
	}
	// The server was Running before the client started, but it may take a
	// moment to listen: only failures after the first success count.
	if _, afterFirst, ok := strings.Cut(clientLog, "verified server "); !ok || strings.Contains(afterFirst, "call failed") {
		t.Errorf("the client's calls failed during the renewal:\n%s", clientLog)
	}
}

// shortLived makes p's certmint volume ask for a short certificate renewed
// soon after issue.
func shortLived(p *corev1.Pod) {
	attrs := p.Spec.Volumes[0].CSI.VolumeAttributes
	attrs["csi.certmint.io/duration"] = rotationDuration
	attrs["csi.certmint.io/renew-before"] = rotationRenewBefore
}

// serials returns the distinct serial numbers re matches in log, in order.
func serials(re *regexp.Regexp, log string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	return out
}

func catFile(t *testing.T, f *framework.Framework, pod, file string) string {
	t.Helper()
	out, err := f.Kubectl("exec", pod, "--", "/testapp", "cat", "--file="+file)
	if err != nil {
		t.Fatalf("reading %s in pod %s: %v", file, pod, err)
	}
	return out
}

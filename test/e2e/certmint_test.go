package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certmint/certmint/pkg/issuer/selfsigned"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

const (
	// caIssuer is the ClusterIssuer the test applies, signing with a CA the
	// test generates. Its Secret is the only API object allowed to hold a
	// private key.
	caIssuer = "e2e-ca"
	// mtlsPort is where the server pod serves mutual TLS.
	mtlsPort = 8443
	// serverGroup is the server pod's fsGroup; its process runs as another
	// user and reads its key only through this group.
	serverGroup = 2000
	serverUser  = 1000
	// Long enough for the first start of a driver pod, which waits for the
	// kubelet to register it.
	podTimeout = 2 * time.Minute
)

// TestCertmint installs certmint from deploy/ with kubectl apply -k, as a
// user does, and checks on both nodes what the project promises: pods on
// different nodes authenticate each other with their mounted certificates;
// RBAC is least privilege; files have the names, modes, group, key and
// certificate the attributes ask for, and keystores open with openssl and
// keytool; a typo in an attribute keeps a pod from starting with an Event
// naming it; a node's driver cannot get a certificate for another node's
// pod; a restarted driver leaves existing volumes alone; deleting pods leaves
// nothing behind; and no API object ends up holding a private key.
func TestCertmint(t *testing.T) {
	if len(testCluster.Nodes) < 2 {
		t.Fatalf("cluster has %d nodes; the test needs two", len(testCluster.Nodes))
	}
	f := framework.New(t, testCluster)
	sys := installCertmint(t, f)
	if _, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, caIssuer); err != nil {
		t.Fatal(err)
	}
	caSecret := deploy.Namespace + "/" + caIssuer

	node1 := testCluster.Nodes[0].Name
	requests := watchAllRequests(t, f)
	server, client := startMTLSPair(t, f)
	serverID, clientID := spiffeID(f.Namespace, "server"), spiffeID(f.Namespace, "client")
	serverAddr := fmt.Sprintf("%s:%d", server.Status.PodIP, mtlsPort)
	serverName := "server." + f.Namespace + ".svc"

	t.Run("a client pod on node 2 and a server pod on node 1 verify each other over mTLS", func(t *testing.T) {
		checkMTLS(t, f.WithT(t), server)
	})

	t.Run("the driver cannot read Secrets and the controller may approve and sign only for certmint signers", func(t *testing.T) {
		checkRBAC(t, f.WithT(t))
	})

	t.Run("the client refuses a server that is not the identity it expects", func(t *testing.T) {
		f := f.WithT(t)
		other := spiffeID(f.Namespace, "someone-else")
		out, err := f.Kubectl("exec", "client", "--", "/testapp", "mtls-call",
			"--addr="+serverAddr, "--server-name="+serverName, "--peer-uri="+other)
		if err == nil || !strings.Contains(err.Error(), "want "+other) {
			t.Errorf("calling the server as if it were %s: err = %v, output %q; want a refusal naming it", other, err, out)
		}
	})

	t.Run("the server refuses a client that is not the identity it expects", func(t *testing.T) {
		f := f.WithT(t)
		// The server pod calls itself: its certificate is valid, but it is
		// the server's identity, not the client's.
		_, err := f.Kubectl("exec", "server", "--", "/testapp", "mtls-call",
			fmt.Sprintf("--addr=127.0.0.1:%d", mtlsPort), "--server-name="+serverName, "--peer-uri="+serverID)
		if err == nil {
			t.Fatal("the server answered a client presenting the server's own identity")
		}
		want := fmt.Sprintf("peer is [%s], want %s", serverID, clientID)
		f.WaitFor("the server's log to show the refusal", 10*time.Second, func(context.Context) (bool, string, error) {
			logs, err := f.Kubectl("logs", "server")
			if err != nil {
				return false, err.Error(), nil
			}
			return strings.Contains(logs, want), "log: " + logs, nil
		})
	})

	t.Run("files have the documented names, modes and group inside the containers", func(t *testing.T) {
		f := f.WithT(t)
		for _, c := range []struct {
			pod, want string
		}{
			// fsGroup: readable by the group, which the non-root server
			// process needs (and the working mTLS above shows it has).
			{"server", fmt.Sprintf("ca.crt 0440 0 %[1]d\ntls.crt 0440 0 %[1]d\ntls.key 0440 0 %[1]d\n", serverGroup)},
			// No fsGroup: root only.
			{"client", "ca.crt 0400 0 0\ntls.crt 0400 0 0\ntls.key 0400 0 0\n"},
		} {
			out, err := f.Kubectl("exec", c.pod, "--", "/testapp", "files", "--dir=/tls")
			if err != nil {
				t.Fatal(err)
			}
			if out != c.want {
				t.Errorf("files in %s:\n%s\nwant:\n%s", c.pod, out, c.want)
			}
		}
	})

	t.Run("file names, fs-group, key type, encoding, subject and duration follow the attributes", func(t *testing.T) {
		f := f.WithT(t)
		const group = 3000
		pod := certPod("attributes", testCluster.Nodes[0].Name, "default", []string{"sleep"})
		attrs := pod.Spec.Volumes[0].CSI.VolumeAttributes
		for k, v := range map[string]string{
			"certificate-file": "cert.pem",
			"privatekey-file":  "key.pem",
			"ca-file":          "ca.pem",
			"fs-group":         fmt.Sprint(group),
			"key-algorithm":    "RSA",
			"key-size":         "3072",
			"key-encoding":     "PKCS1",
			"common-name":      "${POD_NAME}.${POD_NAMESPACE}.svc",
			"duration":         "1h",
			"key-usages":       "digital signature,key encipherment,client auth",
		} {
			attrs["csi.certmint.io/"+k] = v
		}
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitForPodRunning("attributes", podTimeout)
		out, err := f.Kubectl("exec", "attributes", "--", "/testapp", "files", "--dir=/tls")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("ca.pem 0440 0 %[1]d\ncert.pem 0440 0 %[1]d\nkey.pem 0440 0 %[1]d\n", group); out != want {
			t.Errorf("files:\n%s\nwant:\n%s", out, want)
		}
		keyPEM, err := f.Kubectl("exec", "attributes", "--", "/testapp", "cat", "--file=/tls/key.pem")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(keyPEM, "-----BEGIN RSA PRIVATE KEY-----\n") {
			t.Errorf("key.pem does not start as a PKCS#1 RSA key: %.40q", keyPEM)
		}
		certPEM, err := f.Kubectl("exec", "attributes", "--", "/testapp", "cat", "--file=/tls/cert.pem")
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(certPEM))
		if block == nil {
			t.Fatalf("cert.pem holds no PEM: %q", certPEM)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if want := "attributes." + f.Namespace + ".svc"; cert.Subject.CommonName != want {
			t.Errorf("common name %q, want %q", cert.Subject.CommonName, want)
		}
		if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || pub.N.BitLen() != 3072 {
			t.Errorf("public key %T, want a 3072-bit RSA key", cert.PublicKey)
		}
		// The CA backdates by five minutes against clock skew.
		if life := cert.NotAfter.Sub(cert.NotBefore); life < time.Hour || life > time.Hour+6*time.Minute {
			t.Errorf("lifetime %s, want 1h (plus the backdating)", life)
		}
		if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Errorf("extended key usages %v, want client auth only", cert.ExtKeyUsage)
		}
	})

	t.Run("PKCS#12 and JKS files copied out of the pod open with openssl and keytool", func(t *testing.T) {
		f := f.WithT(t)
		const password = "e2e-keystore-pw"
		pod := certPod("keystores", testCluster.Nodes[1].Name, "default", []string{"sleep"})
		attrs := pod.Spec.Volumes[0].CSI.VolumeAttributes
		attrs["csi.certmint.io/pkcs12-enable"] = "true"
		attrs["csi.certmint.io/pkcs12-password"] = password
		attrs["csi.certmint.io/jks-enable"] = "true"
		attrs["csi.certmint.io/jks-password"] = password
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitForPodRunning("keystores", podTimeout)
		dir := t.TempDir()
		copyOut := func(name string) string {
			data, err := f.Kubectl("exec", "keystores", "--", "/testapp", "cat", "--file=/tls/"+name)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}
		leafPEM, err := os.ReadFile(copyOut("tls.crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(leafPEM)
		if block == nil {
			t.Fatalf("tls.crt holds no PEM: %q", leafPEM)
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}

		out, err := exec.CommandContext(t.Context(), "openssl", "pkcs12", "-in", copyOut("keystore.p12"),
			"-passin", "pass:"+password, "-nodes").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl pkcs12: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "-----BEGIN PRIVATE KEY-----") {
			t.Errorf("openssl found no private key in keystore.p12:\n%s", out)
		}
		if !strings.Contains(string(out), strings.TrimSpace(string(pem.EncodeToMemory(block)))) {
			t.Errorf("keystore.p12 lacks the certificate of tls.crt:\n%s", out)
		}

		out, err = exec.CommandContext(t.Context(), "keytool", "-list", "-v", "-keystore", copyOut("keystore.jks"),
			"-storetype", "JKS", "-storepass", password).CombinedOutput()
		if err != nil {
			t.Fatalf("keytool -list: %v\n%s", err, out)
		}
		sum := sha256.Sum256(leaf.Raw)
		fingerprint := strings.ToUpper(strings.ReplaceAll(fmt.Sprintf("% x", sum[:]), " ", ":"))
		for _, want := range []string{"Alias name: certificate", "Entry type: PrivateKeyEntry", "Alias name: ca", "Entry type: trustedCertEntry", "SHA256: " + fingerprint} {
			if !strings.Contains(string(out), want) {
				t.Errorf("keytool -list of keystore.jks lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("a typo in an attribute keeps the pod ContainerCreating with an Event naming it", func(t *testing.T) {
		f := f.WithT(t)
		const typo = "csi.certmint.io/dns-name"
		pod := certPod("typo", node1, "default", []string{"sleep"})
		pod.Spec.Volumes[0].CSI.VolumeAttributes[typo] = "typo." + f.Namespace
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitFor("a FailedMount event on pod typo naming "+typo, podTimeout, func(ctx context.Context) (bool, string, error) {
			events, err := f.Client.CoreV1().Events(f.Namespace).List(ctx, metav1.ListOptions{
				FieldSelector: "involvedObject.name=typo,reason=FailedMount",
			})
			if err != nil {
				return false, err.Error(), nil
			}
			var msgs []string
			for _, e := range events.Items {
				if strings.Contains(e.Message, `volumeAttributes["`+typo+`"]`) {
					return true, "", nil
				}
				msgs = append(msgs, e.Message)
			}
			return false, fmt.Sprintf("events: %q", msgs), nil
		})
		p, err := f.Client.CoreV1().Pods(f.Namespace).Get(t.Context(), "typo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodPending || len(p.Status.ContainerStatuses) != 1 ||
			p.Status.ContainerStatuses[0].State.Waiting == nil || p.Status.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" {
			t.Errorf("pod typo: phase %s, containers %+v; want Pending and ContainerCreating", p.Status.Phase, p.Status.ContainerStatuses)
		}
	})

	t.Run("a namespaced CA Issuer and a selfSigned ClusterIssuer issue to pods, and a denial shows on the pod", func(t *testing.T) {
		checkIssuerKinds(t, f.WithT(t), node1)
	})

	t.Run("the driver of node 1 is denied a certificate for a pod on node 2", func(t *testing.T) {
		driverClient := driverClientOn(t, sys, node1)
		// The control: the same token and request shape for node 1's own
		// pod is approved, so the denial below is node binding's doing.
		if got := requestAs(t, driverClient, server, node1); got != "Approved" {
			t.Errorf("request for the pod on node 1 by node 1's driver: %s, want Approved", got)
		}
		if got := requestAs(t, driverClient, client, node1); got != "Denied: "+"NodeMismatch" {
			t.Errorf("request for the pod on node 2 by node 1's driver: %s, want Denied: NodeMismatch", got)
		}
	})

	t.Run("a driver pod deleted and recreated leaves existing volumes working and serves new pods", func(t *testing.T) {
		f := f.WithT(t)
		before, err := f.Kubectl("exec", "server", "--", "/testapp", "cat", "--file=/tls/tls.crt")
		if err != nil {
			t.Fatal(err)
		}
		old := driverPodOn(t, sys, node1)
		if err := sys.Client.CoreV1().Pods(deploy.Namespace).Delete(t.Context(), old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitFor("a new driver pod on "+node1, podTimeout, func(ctx context.Context) (bool, string, error) {
			pods, err := sys.Client.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{
				LabelSelector: "app.kubernetes.io/name=" + deploy.DriverDaemonSet,
				FieldSelector: "spec.nodeName=" + node1,
			})
			if err != nil {
				return false, err.Error(), nil
			}
			var states []string
			for _, p := range pods.Items {
				ready := slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
					return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
				})
				if p.UID != old.UID && p.DeletionTimestamp == nil && ready {
					return true, "", nil
				}
				states = append(states, fmt.Sprintf("%s ready=%v", p.Name, ready))
			}
			return false, fmt.Sprint(states), nil
		})
		after, err := f.Kubectl("exec", "server", "--", "/testapp", "cat", "--file=/tls/tls.crt")
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Errorf("the server's certificate changed across the driver's restart")
		}
		checkMTLS(t, f, server)
		pod := certPod("after-restart", node1, "default", []string{"sleep"})
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitForPodRunning("after-restart", podTimeout)
	})

	t.Run("deleting the pods leaves no mount, no state and no request behind", func(t *testing.T) {
		f := f.WithT(t)
		pods := []*corev1.Pod{server, client}
		// The checks below must be able to fail: first see what they look
		// for while the pods run. The driver deletes its requests as soon as
		// it has read them, so only the watch shows that the label the
		// request check selects by is on them.
		for _, p := range pods {
			f.WaitFor("the watch to show a request for pod "+p.Name+" with label "+request.LabelPodUID+", without which the request check would prove nothing",
				time.Minute, func(context.Context) (bool, string, error) {
					saw, err := requests.saw(p.UID)
					return saw, "", err
				})
			if n := len(mountsOf(t, csiMountsOf(p))); n == 0 {
				t.Fatalf("no mount of pod %s found while it runs; the check would prove nothing", p.Name)
			}
			if n := len(dirEntries(t, deploy.StateDir(testCluster.NodesDir, p.Spec.NodeName))); n == 0 {
				t.Fatalf("no volume state on %s while pod %s runs", p.Spec.NodeName, p.Name)
			}
		}
		deletePods(t, f, "server", "client", "typo", "keystores", "attributes", "after-restart", "from-issuer", "from-selfsigned", "denied")
		for _, p := range pods {
			if m := mountsOf(t, csiMountsOf(p)); len(m) > 0 {
				t.Errorf("mounts of deleted pod %s remain:\n%s", p.Name, strings.Join(m, "\n"))
			}
			csrs, err := f.Client.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{
				LabelSelector: request.LabelPodUID + "=" + string(p.UID),
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range csrs.Items {
				t.Errorf("CSR %s of deleted pod %s remains", c.Name, p.Name)
			}
		}
		for _, n := range testCluster.Nodes {
			if left := dirEntries(t, deploy.StateDir(testCluster.NodesDir, n.Name)); len(left) > 0 {
				t.Errorf("volume state left on %s: %v", n.Name, left)
			}
			dataRoot := filepath.Join(deploy.KubeletDir(testCluster.NodesDir, n.Name), "plugins", request.DriverName, "volumes")
			if left := dirEntries(t, dataRoot); len(left) > 0 {
				t.Errorf("volume directories left on %s: %v", n.Name, left)
			}
			if m := mountsOf(t, dataRoot+"/"); len(m) > 0 {
				t.Errorf("volume mounts left on %s:\n%s", n.Name, strings.Join(m, "\n"))
			}
		}
	})

	t.Run("no API object holds a private key", func(t *testing.T) {
		// The test's CA Secrets: the ClusterIssuer's and the namespaced
		// Issuer's, which users create themselves.
		for _, found := range privateKeysInAPI(t, f, caSecret, f.Namespace+"/team-ca") {
			t.Errorf("private key material in %s", found)
		}
	})
}

// installCertmint builds and loads the images, applies the kustomize overlay
// of deploy/ for this cluster, and waits until the driver runs on every node
// and the controller is available. When t ends it deletes what it applied.
func installCertmint(t *testing.T, f *framework.Framework) *framework.Framework {
	t.Helper()
	start := time.Now()
	if err := deploy.Images(t.Context(), testCluster); err != nil {
		t.Fatal(err)
	}
	out, err := repo.OutputDir()
	if err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(out, "e2e", "deploy")
	if err := deploy.WriteOverlay(overlay, testCluster.NodesDir); err != nil {
		t.Fatal(err)
	}
	if err := deploy.Apply(t.Context(), testCluster.Kubectl, overlay); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		uninstall(t, f, func(ctx context.Context) *exec.Cmd {
			return testCluster.Kubectl(ctx, "delete", "-k", overlay, "--ignore-not-found", "--wait=false")
		})
	})
	sys := waitCertmintRunning(t, f)
	t.Logf("certmint built, installed with kubectl apply -k and running in %s", time.Since(start).Round(100*time.Millisecond))
	return sys
}

// waitCertmintRunning waits until the driver runs on every node and the
// controller is available. It returns a framework for the certmint
// namespace, which dumps that namespace too if t fails.
func waitCertmintRunning(t *testing.T, f *framework.Framework) *framework.Framework {
	t.Helper()
	sys := *f
	sys.Namespace = deploy.Namespace
	t.Cleanup(func() {
		if t.Failed() {
			sys.Dump()
		}
	})
	sys.WaitForDaemonSetRunning(deploy.DriverDaemonSet, podTimeout)
	sys.WaitForDeploymentAvailable(deploy.ControllerDeployment, podTimeout)
	return &sys
}

// uninstall runs an uninstall command (kubectl or helm) and waits until the certmint namespace and the CRDs are gone,
// so that the next installation starts from nothing.
func uninstall(t *testing.T, f *framework.Framework, command func(ctx context.Context) *exec.Cmd) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := command(ctx).CombinedOutput(); err != nil {
		t.Errorf("uninstalling certmint: %v\n%s", err, out)
		return
	}
	// Helm keeps CRDs and the namespace it was asked to create; the next
	// installation must find neither.
	err := f.Client.CoreV1().Namespaces().Delete(ctx, deploy.Namespace, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting namespace %s: %v", deploy.Namespace, err)
	}
	for _, crd := range []string{"issuers.certmint.io", "clusterissuers.certmint.io", "certificates.certmint.io", "orders.certmint.io", "challenges.certmint.io"} {
		if out, err := testCluster.Kubectl(ctx, "delete", "crd", crd, "--ignore-not-found").CombinedOutput(); err != nil {
			t.Errorf("deleting CRD %s: %v\n%s", crd, err, out)
		}
	}
	err = framework.Wait(ctx, "namespace "+deploy.Namespace+" to be gone", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		_, err := f.Client.CoreV1().Namespaces().Get(ctx, deploy.Namespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
	if err != nil {
		t.Error(err)
	}
}

// deletePods deletes the named pods of the test's namespace and waits until
// they are gone. A grace period, unlike the test pods' 0, makes the kubelet
// remove each pod from the API, which it does only once the pod's volumes are
// torn down: nothing of them may remain after that.
func deletePods(t *testing.T, f *framework.Framework, names ...string) {
	t.Helper()
	for _, name := range names {
		err := f.Client.CoreV1().Pods(f.Namespace).Delete(t.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(1))})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	f.WaitFor(fmt.Sprintf("pods %v to be gone", names), podTimeout, func(ctx context.Context) (bool, string, error) {
		var left []string
		for _, name := range names {
			_, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, name, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				left = append(left, name)
			}
		}
		return len(left) == 0, fmt.Sprintf("left: %v", left), nil
	})
}

// createServiceAccounts creates ServiceAccounts of names in the test's
// namespace.
func createServiceAccounts(t *testing.T, f *framework.Framework, names ...string) {
	t.Helper()
	for _, sa := range names {
		if _, err := f.Client.CoreV1().ServiceAccounts(f.Namespace).Create(t.Context(),
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating ServiceAccount %s: %v", sa, err)
		}
	}
}

// waitForFirstCall waits until the mtls-call pod caller has called its
// server successfully once.
func waitForFirstCall(t *testing.T, f *framework.Framework, caller string) {
	t.Helper()
	f.WaitFor(caller+"'s first successful call", time.Minute, func(context.Context) (bool, string, error) {
		logs, err := f.Kubectl("logs", caller)
		return err == nil && strings.Contains(logs, "verified server "), caller + " log: " + logs, nil
	})
}

// startMTLSPair starts a server pod on the first node and a client pod on
// the second, each with a certmint volume from the test's ClusterIssuer and
// a ServiceAccount named after it, and returns them once they run.
func startMTLSPair(t *testing.T, f *framework.Framework) (server, client *corev1.Pod) {
	t.Helper()
	createServiceAccounts(t, f, "server", "client")
	server = certPod("server", testCluster.Nodes[0].Name, "server", []string{"mtls-serve",
		fmt.Sprintf("--listen=:%d", mtlsPort), "--cert-dir=/tls", "--peer-uri=" + spiffeID(f.Namespace, "client")})
	server.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser:    new(int64(serverUser)),
		RunAsGroup:   new(int64(serverUser)),
		RunAsNonRoot: new(true),
		FSGroup:      new(int64(serverGroup)),
	}
	server.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(mtlsPort)}},
		PeriodSeconds: 1,
	}
	client = certPod("client", testCluster.Nodes[1].Name, "client", []string{"sleep"})
	for _, p := range []*corev1.Pod{server, client} {
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating pod %s: %v", p.Name, err)
		}
	}
	return f.WaitForPodRunning("server", podTimeout), f.WaitForPodRunning("client", podTimeout)
}

// checkMTLS has the client pod call the server pod over mutual TLS and
// checks that each verified the other's identity.
func checkMTLS(t *testing.T, f *framework.Framework, server *corev1.Pod) {
	t.Helper()
	serverID, clientID := spiffeID(f.Namespace, "server"), spiffeID(f.Namespace, "client")
	serverName := "server." + f.Namespace + ".svc"
	out, err := f.Kubectl("exec", "client", "--", "/testapp", "mtls-call",
		fmt.Sprintf("--addr=%s:%d", server.Status.PodIP, mtlsPort), "--server-name="+serverName, "--peer-uri="+serverID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("client printed:\n%s", out)
	if want := "verified server " + serverName + " " + serverID + " "; !strings.Contains(out, want) {
		t.Errorf("client output lacks %q", want)
	}
	if want := "server: verified client " + clientID + "\n"; !strings.Contains(out, want) {
		t.Errorf("client output lacks %q", want)
	}
	logs, err := f.Kubectl("logs", "server")
	if err != nil {
		t.Fatal(err)
	}
	if want := "verified client " + clientID + " "; !strings.Contains(logs, want) {
		t.Errorf("server log lacks %q:\n%s", want, logs)
	}
}

// checkRBAC asks the API server what the installed ServiceAccounts may do.
func checkRBAC(t *testing.T, f *framework.Framework) {
	t.Helper()
	driver := "system:serviceaccount:" + deploy.Namespace + ":" + deploy.DriverDaemonSet
	controller := "system:serviceaccount:" + deploy.Namespace + ":" + deploy.ControllerDeployment
	signers := func(verb, name string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Verb: verb, Name: name}
	}
	for _, c := range []struct {
		user  string
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{driver, authorizationv1.ResourceAttributes{Resource: "secrets", Verb: "get"}, false},
		{driver, authorizationv1.ResourceAttributes{Resource: "secrets", Verb: "list", Namespace: deploy.Namespace}, false},
		// A pod's addresses, for ${POD_IP}: with deploy/podips (which the
		// tests install) the driver watches its node's pods while a volume
		// asks, which RBAC cannot narrow. It reads no single pod and writes
		// none.
		{driver, authorizationv1.ResourceAttributes{Resource: "pods", Verb: "watch"}, true},
		{driver, authorizationv1.ResourceAttributes{Resource: "pods", Verb: "get", Namespace: "default"}, false},
		{driver, authorizationv1.ResourceAttributes{Resource: "pods", Subresource: "status", Verb: "update", Namespace: "default"}, false},
		// Renewal failures are reported as Events on the pods, which live
		// in any namespace; the driver writes them but reads none.
		{driver, authorizationv1.ResourceAttributes{Resource: "events", Verb: "create", Namespace: "default"}, true},
		{driver, authorizationv1.ResourceAttributes{Resource: "events", Verb: "patch", Namespace: "default"}, true},
		{driver, authorizationv1.ResourceAttributes{Resource: "events", Verb: "list", Namespace: "default"}, false},
		{driver, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Verb: "create"}, true},
		{driver, authorizationv1.ResourceAttributes{Group: "certmint.io", Resource: "clusterissuers", Verb: "watch"}, true},
		{driver, authorizationv1.ResourceAttributes{Group: "certmint.io", Resource: "clusterissuers", Verb: "update"}, false},
		{driver, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: "approval", Verb: "update"}, false},
		{driver, signers("approve", "clusterissuers.certmint.io/*"), false},
		{driver, signers("sign", "clusterissuers.certmint.io/*"), false},
		{controller, signers("approve", "clusterissuers.certmint.io/*"), true},
		{controller, signers("sign", "issuers.certmint.io/*"), true},
		{controller, signers("approve", "kubernetes.io/kube-apiserver-client"), false},
		{controller, signers("approve", "kubernetes.io/*"), false},
		{controller, signers("sign", "kubernetes.io/kubelet-serving"), false},
		// A Certificate's Secret lives in its namespace; the admission
		// policy installed with the controller limits it to TLS Secrets
		// (test/integration/controller checks that).
		{controller, authorizationv1.ResourceAttributes{Resource: "secrets", Verb: "create", Namespace: "default"}, true},
		{controller, authorizationv1.ResourceAttributes{Resource: "secrets", Verb: "delete", Namespace: "default"}, false},
		{controller, authorizationv1.ResourceAttributes{Resource: "serviceaccounts", Subresource: "token", Verb: "create", Namespace: deploy.Namespace}, false},
		// Vault's Kubernetes auth: a token for its one ServiceAccount, and
		// for no other, the driver's least of all.
		{controller, authorizationv1.ResourceAttributes{Resource: "serviceaccounts", Subresource: "token", Verb: "create", Namespace: deploy.Namespace, Name: "certmint-vault"}, true},
		{controller, authorizationv1.ResourceAttributes{Resource: "serviceaccounts", Subresource: "token", Verb: "create", Namespace: deploy.Namespace, Name: deploy.DriverDaemonSet}, false},
		// ACME challenges routed through an Ingress controller: their
		// Ingresses live next to the solver Service, and nowhere else.
		{controller, authorizationv1.ResourceAttributes{Group: "networking.k8s.io", Resource: "ingresses", Verb: "create", Namespace: deploy.Namespace}, true},
		{controller, authorizationv1.ResourceAttributes{Group: "networking.k8s.io", Resource: "ingresses", Verb: "create", Namespace: "default"}, false},
		{controller, authorizationv1.ResourceAttributes{Group: "networking.k8s.io", Resource: "ingresses", Verb: "update", Namespace: "default"}, false},
		// Pod certificates: sign the kubelet's requests through their
		// status and publish trust bundles, for certmint's signers only.
		{controller, signers("attest", "clusterissuers.certmint.io/*"), true},
		{controller, signers("attest", "kubernetes.io/*"), false},
		{controller, signers("sign", "example.com/*"), false},
		{controller, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "podcertificaterequests", Subresource: "status", Verb: "update", Namespace: "default"}, true},
		{controller, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "podcertificaterequests", Verb: "create", Namespace: "default"}, false},
		{controller, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "podcertificaterequests", Verb: "update", Namespace: "default"}, false},
		{controller, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "clustertrustbundles", Verb: "create"}, true},
		{controller, authorizationv1.ResourceAttributes{Resource: "nodes", Verb: "update"}, false},
		{controller, authorizationv1.ResourceAttributes{Resource: "serviceaccounts", Subresource: "token", Verb: "create", Namespace: "default"}, false},
		{driver, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "podcertificaterequests", Verb: "create", Namespace: "default"}, false},
		{driver, authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "clustertrustbundles", Verb: "create"}, false},
	} {
		attrs := c.attrs
		sar, err := f.Client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: c.user, ResourceAttributes: &attrs},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != c.want {
			t.Errorf("%s may %s %s %s/%s %q in %q: %v, want %v", c.user, attrs.Verb, attrs.Group, attrs.Resource, attrs.Subresource, attrs.Name, attrs.Namespace, sar.Status.Allowed, c.want)
		}
	}
}

func spiffeID(namespace, serviceAccount string) string {
	return deploy.SPIFFEID(namespace, serviceAccount)
}

// certPod is a testapp pod on node with a certmint volume from the test's
// ClusterIssuer.
func certPod(name, node, serviceAccount string, args []string) *corev1.Pod {
	return deploy.CertPod(name, node, serviceAccount, caIssuer, testappImage, args)
}

// driverClientOn returns a client that authenticates as the driver pod on
// node does: the driver's ServiceAccount, with a token bound to that pod, so
// the API server stamps node's name on what it creates.
func driverClientOn(t *testing.T, sys *framework.Framework, node string) kubernetes.Interface {
	t.Helper()
	driver := driverPodOn(t, sys, node)
	tr, err := sys.Client.CoreV1().ServiceAccounts(deploy.Namespace).CreateToken(t.Context(), driver.Spec.ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: new(int64(600)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: driver.Name, UID: driver.UID},
		}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for driver pod %s: %v", driver.Name, err)
	}
	cfg := rest.AnonymousClientConfig(testCluster.Config)
	cfg.BearerToken = tr.Status.Token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// driverPodOn returns the running driver pod on node.
func driverPodOn(t *testing.T, sys *framework.Framework, node string) *corev1.Pod {
	t.Helper()
	pods, err := sys.Client.CoreV1().Pods(deploy.Namespace).List(t.Context(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=" + deploy.DriverDaemonSet,
		FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("finding the driver pod on %s: %d pods, %v", node, len(pods.Items), err)
	}
	return &pods.Items[0]
}

// requestAs creates, with c, the request the driver on node would make for
// pod's certificate, and returns its outcome: "Approved" once the
// certificate is issued, or "Denied: <reason>".
func requestAs(t *testing.T, c kubernetes.Interface, pod *corev1.Pod, node string) string {
	t.Helper()
	return requestFromAs(t, c, pod, node, caIssuer, nil)
}

// requestFromAs is requestAs for a certificate from the ClusterIssuer
// issuer that names the addresses ips besides the pod's names.
func requestFromAs(t *testing.T, c kubernetes.Interface, pod *corev1.Pod, node, issuer string, ips []net.IP) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	uri, err := url.Parse(spiffeID(pod.Namespace, pod.Spec.ServiceAccountName))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		DNSNames:    []string{pod.Name + "." + pod.Namespace + ".svc"},
		URIs:        []*url.URL{uri},
		IPAddresses: ips,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	annotations := map[string]string{
		request.AnnotationPodName:      pod.Name,
		request.AnnotationPodNamespace: pod.Namespace,
		request.AnnotationVolumeID:     "e2e-node-binding",
	}
	if ips != nil {
		annotations[request.AnnotationPodIPs] = request.PodIPsPrimary
	}
	seconds := int32(time.Hour / time.Second)
	csr, err := c.CertificatesV1().CertificateSigningRequests().Create(t.Context(), &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "e2e-node-binding-",
			Labels: map[string]string{
				request.LabelManagedBy: request.DriverName,
				request.LabelNode:      node,
				request.LabelPodUID:    string(pod.UID),
			},
			Annotations: annotations,
		},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        request.IssuerRef{Kind: request.KindClusterIssuer, Name: issuer}.SignerName(),
			ExpirationSeconds: &seconds,
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating CSR for pod %s as the driver on %s: %v", pod.Name, node, err)
	}
	defer func() {
		if err := c.CertificatesV1().CertificateSigningRequests().Delete(context.Background(), csr.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting CSR %s: %v", csr.Name, err)
		}
	}()
	if got := csr.Spec.Extra[request.ExtraNodeName]; !slices.Equal(got, []string{node}) {
		t.Fatalf("CSR %s stamped with node %v, want %s", csr.Name, got, node)
	}
	var outcome string
	err = framework.Wait(t.Context(), "CSR "+csr.Name+" to be decided", time.Minute, func(ctx context.Context) (bool, string, error) {
		got, err := c.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == certificatesv1.CertificateDenied {
				outcome = "Denied: " + cond.Reason
				return true, "", nil
			}
		}
		if len(got.Status.Certificate) > 0 {
			outcome = "Approved"
			return true, "", nil
		}
		return false, fmt.Sprintf("conditions %+v", got.Status.Conditions), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return outcome
}

func dynamicClient(t *testing.T) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(testCluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// mountsOf returns the lines of the host's mount table whose mount point
// contains s.
func mountsOf(t *testing.T, s string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Field 5 is the mount point.
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.Contains(fields[4], s) {
			found = append(found, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// csiMountsOf is what the mount points of p's CSI volumes contain.
func csiMountsOf(p *corev1.Pod) string {
	return "/pods/" + string(p.UID) + "/volumes/kubernetes.io~csi/"
}

// dirEntries lists dir; a missing dir is empty.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// privateKeysInAPI names every object that can carry data (Secrets,
// ConfigMaps, CertificateSigningRequests, Pods, Events, Issuers and
// ClusterIssuers, in every namespace) holding PEM private key material,
// except the Secrets allowed, each of which must be found.
func privateKeysInAPI(t *testing.T, f *framework.Framework, allowed ...string) []string {
	t.Helper()
	const marker = "PRIVATE KEY-----"
	ctx := t.Context()
	var found []string
	check := func(kind, name string, obj any) {
		data, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), marker) {
			found = append(found, kind+" "+name)
		}
	}
	secrets, err := f.Client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	allowedSeen := map[string]bool{}
	for _, s := range secrets.Items {
		name := s.Namespace + "/" + s.Name
		if slices.Contains(allowed, name) {
			allowedSeen[name] = true
			continue
		}
		// Data is base64 in JSON: look at the decoded values.
		for k, v := range s.Data {
			if strings.Contains(string(v), marker) {
				found = append(found, "Secret "+name+" key "+k)
			}
		}
		check("Secret", name, s.StringData)
	}
	for _, name := range allowed {
		if !allowedSeen[name] {
			t.Errorf("the CA Secret %s was not among the Secrets listed; the scan missed it", name)
		}
	}
	configMaps, err := f.Client.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range configMaps.Items {
		check("ConfigMap", c.Namespace+"/"+c.Name, c.Data)
		for k, v := range c.BinaryData {
			if strings.Contains(string(v), marker) {
				found = append(found, "ConfigMap "+c.Namespace+"/"+c.Name+" key "+k)
			}
		}
	}
	csrs, err := f.Client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range csrs.Items {
		// spec.request and status.certificate are base64 in JSON.
		for field, v := range map[string][]byte{"spec.request": c.Spec.Request, "status.certificate": c.Status.Certificate} {
			if strings.Contains(string(v), marker) {
				found = append(found, "CertificateSigningRequest "+c.Name+" "+field)
			}
		}
		check("CertificateSigningRequest", c.Name, c)
	}
	pods, err := f.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		check("Pod", p.Namespace+"/"+p.Name, p)
	}
	events, err := f.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		check("Event", e.Namespace+"/"+e.Name, e)
	}
	dyn := dynamicClient(t)
	for _, gvr := range []schema.GroupVersionResource{deploy.Issuers, deploy.ClusterIssuers} {
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range list.Items {
			check(u.GetKind(), u.GetNamespace()+"/"+u.GetName(), u.Object)
		}
	}
	return found
}

// checkIssuerKinds runs a pod from a CA Issuer in the test's namespace and
// one from a selfSigned ClusterIssuer, each checked against its issuer's
// root, and a pod asking for a name the default policy does not grant,
// which must stay ContainerCreating with the controller's denial as an
// Event on it.
func checkIssuerKinds(t *testing.T, f *framework.Framework, node string) {
	t.Helper()
	ctx := t.Context()
	data, root, err := deploy.CASecretData("e2e namespaced")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Client.CoreV1().Secrets(f.Namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "team-ca"}, Type: corev1.SecretTypeTLS, Data: data,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	issuer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "certmint.io/v1alpha1",
		"kind":       "Issuer",
		"metadata":   map[string]any{"name": "team", "namespace": f.Namespace},
		"spec":       map[string]any{"ca": map[string]any{"secretName": "team-ca"}},
	}}
	if _, err := dynamicClient(t).Resource(deploy.Issuers).Namespace(f.Namespace).Create(ctx, issuer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	selfSigned := "e2e-selfsigned-" + f.Namespace
	if err := deploy.SelfSignedClusterIssuer(ctx, testCluster.Config, selfSigned, nil); err != nil {
		t.Fatal(err)
	}

	fromIssuer := certPod("from-issuer", node, "default", []string{"sleep"})
	attrs := fromIssuer.Spec.Volumes[0].CSI.VolumeAttributes
	attrs["csi.certmint.io/issuer-name"] = "team"
	delete(attrs, "csi.certmint.io/issuer-kind")
	fromSelfSigned := certPod("from-selfsigned", node, "default", []string{"sleep"})
	fromSelfSigned.Spec.Volumes[0].CSI.VolumeAttributes["csi.certmint.io/issuer-name"] = selfSigned
	denied := certPod("denied", node, "default", []string{"sleep"})
	denied.Spec.Volumes[0].CSI.VolumeAttributes["csi.certmint.io/dns-names"] = "admin.kube-system.svc"
	for _, p := range []*corev1.Pod{fromIssuer, fromSelfSigned, denied} {
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	f.WaitForPodRunning("from-issuer", podTimeout)
	if !signedUnder(t, catFile(t, f, "from-issuer", "/tls/tls.crt"), root) {
		t.Error("from-issuer's certificate does not chain to the namespaced Issuer's root")
	}
	if got := catFile(t, f, "from-issuer", "/tls/ca.crt"); !bundleHolds(t, got, root) {
		t.Errorf("from-issuer's ca.crt does not hold the Issuer's root:\n%s", got)
	}
	f.WaitForPodRunning("from-selfsigned", podTimeout)
	status := clusterIssuerStatus(t, selfSigned)
	bundle, _ := status["trustBundle"].(string)
	selfSignedRoot := pemCertificates(t, bundle)
	if len(selfSignedRoot) != 1 || !signedUnder(t, catFile(t, f, "from-selfsigned", "/tls/tls.crt"), selfSignedRoot[0]) {
		t.Errorf("from-selfsigned's certificate does not chain to the ClusterIssuer's generated root (bundle %q)", bundle)
	}
	if got := catFile(t, f, "from-selfsigned", "/tls/ca.crt"); got != bundle {
		t.Errorf("from-selfsigned's ca.crt = %q, want the ClusterIssuer's trust bundle", got)
	}

	f.WaitFor("an Event on pod denied with the controller's reason NameNotAllowed", podTimeout, func(ctx context.Context) (bool, string, error) {
		events, err := f.Client.EventsV1().Events(f.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		var seen []string
		for _, e := range events.Items {
			if e.Regarding.Name != "denied" {
				continue
			}
			if e.Reason == "NameNotAllowed" && strings.Contains(e.Note, "admin.kube-system.svc") {
				return true, "", nil
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		return false, fmt.Sprintf("events on the pod: %q", seen), nil
	})
	p, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, "denied", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("pod denied is %s, want Pending: it must not start without its certificate", p.Status.Phase)
	}

	// The generated root goes with its ClusterIssuer, so that no API object
	// but the test's own CA Secrets holds a key at the end.
	if err := dynamicClient(t).Resource(deploy.ClusterIssuers).Delete(ctx, selfSigned, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rootSecret := selfsigned.RootSecretName(request.IssuerRef{Kind: request.KindClusterIssuer, Name: selfSigned})
	f.WaitFor("the generated root Secret "+rootSecret+" to be deleted with its ClusterIssuer", time.Minute, func(ctx context.Context) (bool, string, error) {
		_, err := f.Client.CoreV1().Secrets(deploy.Namespace).Get(ctx, rootSecret, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
}

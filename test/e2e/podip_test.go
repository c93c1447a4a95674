package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

const (
	// podIPIssuer is a CA ClusterIssuer that certifies pods' addresses in
	// the harness's pod network.
	podIPIssuer = "e2e-ca-pod-ips"
	podNetwork  = "10.244.0.0/16"
	// podIPTimeout allows the pod's sandbox, its status update, the
	// driver's watch, the re-issue and a kubelet sync on a shared machine.
	podIPTimeout = 2 * time.Minute
)

// TestPodIP checks ${POD_IP} on the real cluster: a server pod whose volume
// asks for its own address gets a first certificate without it (the
// kubelet publishes the volume before the pod's sandbox, and its address,
// exist), then one naming it once the pod's status has it; a client pod on
// the other node dials that address and verifies the server's certificate
// for it. The driver of the server's node is denied a certificate naming
// the client's address for the server.
func TestPodIP(t *testing.T) {
	if len(testCluster.Nodes) < 2 {
		t.Fatalf("cluster has %d nodes; the test needs two", len(testCluster.Nodes))
	}
	f := framework.New(t, testCluster)
	sys := installCertmint(t, f)
	if _, err := deploy.CAClusterIssuerWithPolicy(t.Context(), testCluster.Config, podIPIssuer, map[string]any{
		"podIPs": map[string]any{"cidrs": []any{podNetwork}},
	}); err != nil {
		t.Fatal(err)
	}
	createServiceAccounts(t, f, "server", "client")
	node1, node2 := testCluster.Nodes[0].Name, testCluster.Nodes[1].Name

	server := deploy.CertPod("server", node1, "server", podIPIssuer, testappImage, []string{"mtls-serve",
		fmt.Sprintf("--listen=:%d", mtlsPort), "--cert-dir=/tls", "--peer-uri=" + spiffeID(f.Namespace, "client")})
	server.Spec.Volumes[0].CSI.VolumeAttributes["csi.certmint.io/ip-sans"] = "${POD_IP}"
	seen := watchPodAddress(t, f, "server")
	created := time.Now()
	server, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), server, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The volume's files, read on the node itself, every 10ms: the window
	// is measured as the driver opens it and closes it.
	certPath := filepath.Join(deploy.KubeletDir(testCluster.NodesDir, node1), "pods", string(server.UID),
		"volumes", "kubernetes.io~csi", "tls", "mount", "tls.crt")
	var firstCert, ipCert time.Time
	var leaf *x509.Certificate
	err = framework.Wait(t.Context(), "the server's certificate to name its pod's address", podIPTimeout, func(context.Context) (bool, string, error) {
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			c, err := readLeaf(certPath)
			if err != nil {
				continue
			}
			if firstCert.IsZero() {
				firstCert = time.Now()
				if len(c.IPAddresses) > 0 {
					return false, "", fmt.Errorf("the first certificate names %v; the pod cannot have had an address when its volume was published", c.IPAddresses)
				}
			}
			if len(c.IPAddresses) > 0 {
				ipCert, leaf = time.Now(), c
				return true, "", nil
			}
		}
		return false, "certificate seen " + fmt.Sprint(!firstCert.IsZero()) + ", without an address", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	server = f.WaitForPodRunning("server", podTimeout)
	podIP := server.Status.PodIP
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != podIP {
		t.Fatalf("the certificate names %v, want the pod's address %s alone", leaf.IPAddresses, podIP)
	}
	addressSeen, started := seen()
	t.Logf("window without the address: first certificate %s after the pod's creation, the pod's address in its status %s after that, "+
		"the certificate naming it %s after the address (%s after the first certificate); the container was seen running %s before it",
		firstCert.Sub(created).Round(time.Millisecond), addressSeen.Sub(firstCert).Round(time.Millisecond),
		ipCert.Sub(addressSeen).Round(time.Millisecond), ipCert.Sub(firstCert).Round(time.Millisecond),
		ipCert.Sub(started).Round(time.Millisecond))

	client := deploy.CertPod("client", node2, "client", podIPIssuer, testappImage, []string{"sleep"})
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client = f.WaitForPodRunning("client", podTimeout)
	call := func(serverName string) (string, error) {
		return f.Kubectl("exec", "client", "--", "/testapp", "mtls-call", fmt.Sprintf("--addr=%s:%d", podIP, mtlsPort),
			"--server-name="+serverName, "--peer-uri="+spiffeID(f.Namespace, "server"))
	}

	t.Run("a client on the other node dials the server's address and verifies its certificate for it", func(t *testing.T) {
		f := f.WithT(t)
		// The server may take a moment to listen after it runs.
		f.WaitFor("the client's call to "+podIP+" verified by address", time.Minute, func(context.Context) (bool, string, error) {
			out, err := call(podIP)
			if err != nil {
				return false, err.Error(), nil
			}
			return strings.Contains(out, "verified server "+podIP+" "), "output: " + out, nil
		})
	})

	t.Run("the same call verifying another address fails", func(t *testing.T) {
		// The control: what makes the call above pass is the address in
		// the certificate.
		out, err := call(client.Status.PodIP)
		if want := "not " + client.Status.PodIP; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("verifying the server as %s: err = %v, output %q; want a refusal containing %q", client.Status.PodIP, err, out, want)
		}
	})

	t.Run("the driver of the server's node is denied the client's address for the server", func(t *testing.T) {
		driver := driverClientOn(t, sys, node1)
		if got := requestFromAs(t, driver, server, node1, podIPIssuer, []net.IP{net.ParseIP(podIP)}); got != "Approved" {
			t.Errorf("request naming the server's own address: %s, want Approved", got)
		}
		if got := requestFromAs(t, driver, server, node1, podIPIssuer, []net.IP{net.ParseIP(client.Status.PodIP)}); got != "Denied: PodIPMismatch" {
			t.Errorf("request naming the client's address for the server: %s, want Denied: PodIPMismatch", got)
		}
	})
}

// readLeaf reads the first certificate of the PEM file at path.
func readLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

// watchPodAddress watches pod name from before it exists and returns a
// function that tells when the watch first saw the pod's address in its
// status and its container running (zero if not yet).
func watchPodAddress(t *testing.T, f *framework.Framework, name string) func() (address, started time.Time) {
	t.Helper()
	pods := f.Client.CoreV1().Pods(f.Namespace)
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	// An informer rather than a bare watch: it lists first and watches
	// from there, which a watch cache that lags behind the store accepts.
	informer := cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return pods.Watch(ctx, o)
		},
	}, &corev1.Pod{}, 0, cache.Indexers{})
	var mu sync.Mutex
	var address, started time.Time
	observe := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if address.IsZero() && pod.Status.PodIP != "" {
			address = now
		}
		if started.IsZero() && len(pod.Status.ContainerStatuses) > 0 && pod.Status.ContainerStatuses[0].State.Running != nil {
			started = now
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { informer.RunWithContext(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		t.Fatalf("the watch on pod %s did not start", name)
	}
	return func() (time.Time, time.Time) {
		mu.Lock()
		defer mu.Unlock()
		return address, started
	}
}

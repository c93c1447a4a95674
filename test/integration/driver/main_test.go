// Package driver_test runs the certmint node driver (the same wiring the
// binary runs, in-process) against a real kube-apiserver and etcd. The
// driver authenticates with a token bound to a driver Pod on a Node, uses
// the RBAC from deploy/rbac/driver.yaml, and mounts real tmpfs and bind
// mounts. A test signer stands in for the controller: it approves and signs
// requests with a throwaway CA, or denies them, and the test publishes that
// CA as the issuers' trust bundle.
package driver_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/nodedriver"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/e2e/cluster"
)

const (
	nodeName   = "node-1"
	driverNS   = "certmint"
	driverSA   = "certmint-driver"
	driverPod  = "certmint-driver-node-1"
	workloadNS = "shop"
	workloadSA = "web"
	deniedPod  = "denied-0"
	// pendingIssuer is an Issuer in workloadNS that has not published a
	// trust bundle yet; clusterIssuer is a ClusterIssuer that has.
	pendingIssuer = "pending"
	clusterIssuer = "mesh"
	denialReason  = "PolicyViolation"
	denialText    = `DNS name "denied-0.shop.svc" is not allowed by Issuer shop/ca`
)

// env is the shared environment; nil when the tests run with -short.
var env *testEnv

type testEnv struct {
	admin  kubernetes.Interface
	dyn    dynamic.Interface
	node   csispec.NodeClient
	signer *csrtest.Signer
	// dataRoot holds the driver's per-volume tmpfs directories.
	dataRoot string
	// healthURL is the driver's /healthz.
	healthURL string
	// regSocket is the driver's kubelet registration socket.
	regSocket string

	// kubeconfigFor makes credentials for a driver on another node.
	kubeconfigFor func(ctx context.Context, node string) (string, error)

	mu sync.Mutex
	// requests are the CSRs the signer saw, as the API server stored them.
	requests []*certificatesv1.CertificateSigningRequest
	// decide overrides the signer's decision for requests of a pod, by
	// pod name.
	decide map[string]func(*certificatesv1.CertificateSigningRequest) csrtest.Decision
}

// decideFor has the signer decide requests of the pod named pod with
// decide, until the test ends.
func (e *testEnv) decideFor(t testing.TB, pod string, decide func(*certificatesv1.CertificateSigningRequest) csrtest.Decision) {
	e.mu.Lock()
	e.decide[pod] = decide
	e.mu.Unlock()
	t.Cleanup(func() {
		e.mu.Lock()
		delete(e.decide, pod)
		e.mu.Unlock()
	})
}

func (e *testEnv) seen() []*certificatesv1.CertificateSigningRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*certificatesv1.CertificateSigningRequest(nil), e.requests...)
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 {
		// Failing, not skipping: a run that skips every test reports ok.
		fmt.Fprintln(os.Stderr, "FAIL: these tests need root (the driver mounts tmpfs and bind mounts); run them as root, or with -short to skip them")
		os.Exit(1)
	}
	os.Exit(runWithEnv(m))
}

func runWithEnv(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "certmint-driver-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	setupCtx, setupCancel := context.WithTimeout(ctx, 10*time.Minute)
	defer setupCancel()
	binDir, err := cluster.Binaries(setupCtx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "finding Kubernetes binaries:", err)
		return 1
	}
	cp, err := cluster.StartControlPlane(setupCtx, cluster.ControlPlaneOptions{Dir: filepath.Join(dir, "cluster"), BinDir: binDir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		return 1
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()

	driverDone := make(chan error, 1)
	env, err = setup(setupCtx, ctx, cp, dir, driverDone)
	if err != nil {
		fmt.Fprintln(os.Stderr, "setting up the driver test environment:", err)
		for name, path := range cp.LogFiles() {
			fmt.Fprintf(os.Stderr, "--- %s log (%s):\n%s\n", name, path, cluster.LogTail(path, 40))
		}
		return 1
	}
	code := m.Run()
	cancel()
	if err := <-driverDone; err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		code = 1
	}
	// A request the signer failed to act on fails the run: the test that
	// made it may have passed for the wrong reason.
	for _, err := range env.signer.Failures() {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		code = 1
	}
	return code
}

// setup makes the objects a real deployment has (driver namespace,
// ServiceAccount and RBAC from deploy/, the CRDs from deploy/crds, a Node, a
// driver Pod bound to it), starts the test signer, creates issuers whose
// trust bundle is the signer's CA, and starts the driver with a token bound
// to the driver Pod. runCtx bounds the driver's and the signer's lifetime.
func setup(ctx, runCtx context.Context, cp *cluster.ControlPlane, dir string, driverDone chan<- error) (*testEnv, error) {
	admin, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		return nil, err
	}
	e := &testEnv{admin: admin, dyn: dyn, dataRoot: filepath.Join(dir, "volumes"),
		decide: map[string]func(*certificatesv1.CertificateSigningRequest) csrtest.Decision{}}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"namespace.yaml", "rbac/driver.yaml"} {
		if err := apply(ctx, admin, filepath.Join(root, "deploy", f)); err != nil {
			return nil, fmt.Errorf("applying deploy/%s: %w", f, err)
		}
	}
	if err := cp.InstallCRDs(ctx, filepath.Join(root, "deploy", "crds")); err != nil {
		return nil, err
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNS}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := admin.CoreV1().ServiceAccounts(workloadNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: workloadSA}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	e.kubeconfigFor = func(ctx context.Context, node string) (string, error) {
		return driverKubeconfig(ctx, admin, cp, node, filepath.Join(dir, node+".kubeconfig"))
	}
	kubeconfig, err := e.kubeconfigFor(ctx, nodeName)
	if err != nil {
		return nil, err
	}

	e.signer, err = csrtest.NewSigner()
	if err != nil {
		return nil, err
	}
	e.signer.Decide = func(r *certificatesv1.CertificateSigningRequest) csrtest.Decision {
		e.mu.Lock()
		e.requests = append(e.requests, r.DeepCopy())
		decide := e.decide[r.Annotations[request.AnnotationPodName]]
		e.mu.Unlock()
		if decide != nil {
			return decide(r)
		}
		if r.Annotations[request.AnnotationPodName] == deniedPod {
			return csrtest.Decision{Deny: true, Reason: denialReason, Message: denialText}
		}
		return csrtest.Decision{}
	}
	if err := e.signer.Start(runCtx, admin); err != nil {
		return nil, err
	}
	for _, iss := range []struct{ namespace, name, bundle string }{
		{workloadNS, "ca", e.signer.TrustBundle()},
		{workloadNS, pendingIssuer, ""},
		{"", clusterIssuer, e.signer.TrustBundle()},
	} {
		if err := createIssuer(ctx, dyn, iss.namespace, iss.name, iss.bundle); err != nil {
			return nil, err
		}
	}

	healthAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	e.healthURL = "http://" + healthAddr + "/healthz"
	socket := filepath.Join(dir, "csi.sock")
	regDir := filepath.Join(dir, "plugins_registry")
	if err := os.MkdirAll(regDir, 0o700); err != nil {
		return nil, err
	}
	e.regSocket = filepath.Join(regDir, request.DriverName+"-reg.sock")
	go func() {
		driverDone <- nodedriver.Run(runCtx, nodedriver.Options{
			Endpoint: "unix://" + socket, NodeName: nodeName, Kubeconfig: kubeconfig,
			StateDir: filepath.Join(dir, "state"), DataRoot: e.dataRoot, PluginRegistrationDir: regDir,
			HealthAddr: healthAddr, MetricsAddr: healthAddr, Version: "it", Logger: testLogger(),
			ReissueSpread: reissueSpread, GCInterval: gcInterval,
		})
	}()

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	e.node = csispec.NewNodeClient(conn)
	// Healthy means the driver's watches on its CSRs and on the issuers are
	// established, which also proves the RBAC lets it list and watch them.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get(e.healthURL)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return nil, fmt.Errorf("driver did not become healthy: %w", err)
	}
	return e, nil
}

// The in-process driver's re-issue spread and garbage collection interval,
// short for tests.
const (
	reissueSpread = 3 * time.Second
	gcInterval    = 500 * time.Millisecond
)

// driverKubeconfig makes what a driver pod on node has: the Node, a driver
// Pod bound to it, and a kubeconfig file with a token bound to that Pod.
func driverKubeconfig(ctx context.Context, admin kubernetes.Interface, cp *cluster.ControlPlane, node, path string) (string, error) {
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	// The ServiceAccount admission plugin needs the ServiceAccount's token
	// controller to have run; there is none, so create pods without
	// automounted tokens.
	pod, err := admin.CoreV1().Pods(driverNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "certmint-driver-" + node},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: driverSA, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "driver", Image: "certmint/csi-driver:test"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	tr, err := admin.CoreV1().ServiceAccounts(driverNS).CreateToken(ctx, driverSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a pod-bound token: %w", err)
	}
	if err := clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"it": {Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"driver": {Token: tr.Status.Token}},
		Contexts:       map[string]*clientcmdapi.Context{"it": {Cluster: "it", AuthInfo: "driver"}},
		CurrentContext: "it",
	}, path); err != nil {
		return "", err
	}
	return path, nil
}

// testLogger writes the driver's logs to stderr at a verbosity that shows
// every call, so a leak of secrets into logs would be visible in CI output.
func testLogger() logr.Logger {
	return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// apply creates the objects of a manifest; it knows the kinds deploy/ uses
// for the driver.
func apply(ctx context.Context, c kubernetes.Interface, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return err
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			return fmt.Errorf("unexpected %T in %s", obj, path)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func stripComments(doc []byte) []byte {
	var out []string
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

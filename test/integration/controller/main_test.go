// Package controller_test runs the certmint controller binary against a real
// kube-apiserver and etcd, with the RBAC from deploy/rbac/controller.yaml,
// and acts as the driver would: pod-bound ServiceAccount tokens for driver
// pods on two nodes, CertificateSigningRequests naming pods.
package controller_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/e2e/cluster"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/stack"
)

const (
	certmintNS     = "certmint"
	driverSA       = "certmint-driver"
	controllerSA   = "certmint-controller"
	nodeA, nodeB   = "node-a", "node-b"
	driverPodA     = "driver-a"
	driverPodB     = "driver-b"
	startupTimeout = 60 * time.Second
)

// env is the shared cluster; nil when the tests run with -short.
var env *testEnv

type testEnv struct {
	cp     *cluster.ControlPlane
	admin  client.Client
	kube   kubernetes.Interface
	scheme *runtime.Scheme
	// driverA and driverB act as the driver on node-a and node-b.
	driverA, driverB kubernetes.Interface
	// asDaemonSetPod makes a pod one of the driver DaemonSet's.
	asDaemonSetPod func(*corev1.Pod)
	// controllerKubeconfig authenticates as the controller's ServiceAccount.
	controllerKubeconfig string
	controllerBinary     string
	dir                  string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(runWithEnv(m))
}

func runWithEnv(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	env, err = setup(ctx)
	if env != nil && env.cp != nil {
		defer func() {
			if err := env.cp.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
			}
		}()
	}
	if env != nil && env.dir != "" {
		defer os.RemoveAll(env.dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "setting up the integration environment:", err)
		return 1
	}
	return m.Run()
}

func setup(ctx context.Context) (*testEnv, error) {
	e := &testEnv{}
	dir, err := os.MkdirTemp("", "certmint-controller-it-")
	if err != nil {
		return e, err
	}
	e.dir = dir

	// Build the real binary first: it is what a Deployment runs.
	e.controllerBinary = filepath.Join(dir, "controller")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.controllerBinary, "github.com/certmint/certmint/cmd/controller")
	if out, err := build.CombinedOutput(); err != nil {
		return e, fmt.Errorf("building the controller: %w\n%s", err, out)
	}

	binDir, err := cluster.Binaries(ctx)
	if err != nil {
		return e, err
	}
	e.cp, err = cluster.StartControlPlane(ctx, cluster.ControlPlaneOptions{Dir: filepath.Join(dir, "cluster"), BinDir: binDir})
	if err != nil {
		return e, err
	}
	e.scheme = runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(e.scheme); err != nil {
			return e, err
		}
	}
	if e.admin, err = client.New(e.cp.Config, client.Options{Scheme: e.scheme}); err != nil {
		return e, err
	}
	protoConfig := rest.CopyConfig(e.cp.Config)
	protoConfig.ContentType = "application/vnd.kubernetes.protobuf"
	if e.kube, err = kubernetes.NewForConfig(protoConfig); err != nil {
		return e, err
	}

	root, err := filepath.Abs("../../..")
	if err != nil {
		return e, err
	}
	if err := e.cp.InstallCRDs(ctx, filepath.Join(root, "deploy", "crds")); err != nil {
		return e, err
	}
	for _, f := range []string{"namespace.yaml", "rbac/driver.yaml", "rbac/controller.yaml", "rbac/controller-secrets-policy.yaml"} {
		if err := e.apply(ctx, filepath.Join(root, "deploy", f)); err != nil {
			return e, err
		}
	}
	if e.asDaemonSetPod, err = deploy.StandInDriverDaemonSet(ctx, e.cp.Config, driverSA); err != nil {
		return e, err
	}
	for _, n := range []string{nodeA, nodeB} {
		if err := e.admin.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			return e, err
		}
	}
	if e.driverA, err = e.driverClient(ctx, driverPodA, nodeA); err != nil {
		return e, err
	}
	if e.driverB, err = e.driverClient(ctx, driverPodB, nodeB); err != nil {
		return e, err
	}
	if err := e.writeControllerKubeconfig(ctx); err != nil {
		return e, err
	}
	return e, nil
}

// apply creates every object of a multi-document manifest.
func (e *testEnv) apply(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	decoder := serializer.NewCodecFactory(e.scheme).UniversalDeserializer()
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := decoder.Decode([]byte(doc), nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := e.admin.Create(ctx, obj.(client.Object)); err != nil {
			return fmt.Errorf("%s: creating %T: %w", path, obj, err)
		}
	}
	return nil
}

// driverClient creates a driver pod on node and returns a client
// authenticated with a token bound to it, as the driver's own would be.
func (e *testEnv) driverClient(ctx context.Context, podName, node string) (kubernetes.Interface, error) {
	pod, err := e.createPod(ctx, certmintNS, podName, node, driverSA, e.asDaemonSetPod)
	if err != nil {
		return nil, err
	}
	cfg, err := e.podBoundConfig(ctx, pod)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func (e *testEnv) podBoundConfig(ctx context.Context, pod *corev1.Pod) (*rest.Config, error) {
	tr, err := e.kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
			ExpirationSeconds: ptr.To[int64](3600),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return e.tokenConfig(tr.Status.Token), nil
}

func (e *testEnv) tokenConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            e.cp.Config.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.cp.Config.CAData, CAFile: e.cp.Config.CAFile},
		// Protobuf, as the driver uses: JSON costs the API server more.
		ContentConfig: rest.ContentConfig{ContentType: "application/vnd.kubernetes.protobuf"},
		QPS:           500,
		Burst:         1000,
	}
}

func (e *testEnv) writeControllerKubeconfig(ctx context.Context) error {
	tr, err := e.kube.CoreV1().ServiceAccounts(certmintNS).CreateToken(ctx, controllerSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("controller token: %w", err)
	}
	caData := e.cp.Config.CAData
	if len(caData) == 0 {
		if caData, err = os.ReadFile(e.cp.CAFile); err != nil {
			return err
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["it"] = &clientcmdapi.Cluster{Server: e.cp.Config.Host, CertificateAuthorityData: caData}
	kc.AuthInfos["it"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["it"] = &clientcmdapi.Context{Cluster: "it", AuthInfo: "it"}
	kc.CurrentContext = "it"
	e.controllerKubeconfig = filepath.Join(e.dir, "controller.kubeconfig")
	return clientcmd.WriteToFile(*kc, e.controllerKubeconfig)
}

// createPod creates a pod bound to node, adjusted by tweaks; no kubelet
// runs it, which node binding does not need.
func (e *testEnv) createPod(ctx context.Context, ns, name, node, sa string, tweaks ...func(*corev1.Pod)) (*corev1.Pod, error) {
	if err := e.ensureServiceAccount(ctx, ns, sa); err != nil {
		return nil, err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			ServiceAccountName:           sa,
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: "app", Image: "unused"}},
		},
	}
	for _, tweak := range tweaks {
		tweak(pod)
	}
	if err := e.admin.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
	}
	return pod, nil
}

func (e *testEnv) ensureServiceAccount(ctx context.Context, ns, sa string) error {
	if err := e.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
		return err
	}
	err := e.admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	return client.IgnoreAlreadyExists(err)
}

var nameSeq atomic.Int64

// uniqueName makes names unique within a run, so tests can be repeated
// (-count) against the one cluster.
func uniqueName(base string) string {
	return fmt.Sprintf("%s-%d", base, nameSeq.Add(1))
}

func requireEnv(t testing.TB) *testEnv {
	t.Helper()
	if env == nil {
		t.Skip("needs kube-apiserver and etcd; runs without -short")
	}
	return env
}

// controllerProcess is one running controller binary.
type controllerProcess struct {
	*stack.Process
	metricsAddr string
}

// startController runs the controller binary as its ServiceAccount and
// waits until it reports ready. It is stopped when t ends.
func startController(t testing.TB, name string, extraArgs ...string) *controllerProcess {
	t.Helper()
	e := requireEnv(t)
	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	args := append([]string{
		"--kubeconfig=" + e.controllerKubeconfig,
		"--driver-namespace=" + certmintNS,
		"--driver-service-account=" + driverSA,
		"--cluster-resource-namespace=" + certmintNS,
		"--metrics-bind-address=" + metricsAddr,
		"--health-probe-bind-address=" + probeAddr,
		"--csr-cleanup-grace=1h",
		// Tests that need the ACME solver pass their own address; a later
		// flag wins.
		"--acme-http01-address=0",
	}, extraArgs...)
	proc, err := stack.StartBinary(name, e.controllerBinary, filepath.Join(t.TempDir(), name+".log"), args...)
	if err != nil {
		t.Fatal(err)
	}
	p := &controllerProcess{Process: proc, metricsAddr: metricsAddr}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("controller %s log:\n%s", name, p.LogTail(60))
		}
	})
	if err := p.WaitHTTP(t.Context(), "http://"+probeAddr+"/readyz", startupTimeout); err != nil {
		t.Fatalf("controller %s not ready: %v", name, err)
	}
	resp, err := http.Get("http://" + probeAddr + "/healthz")
	if err != nil {
		t.Fatalf("controller %s /healthz: %v", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("controller %s /healthz: %s", name, resp.Status)
	}
	return p
}

// metric returns the sum of the samples of a metric whose line starts with
// prefix (name and, optionally, some labels).
func (p *controllerProcess) metric(prefix string) (float64, error) {
	return stack.ScrapeSum("http://"+p.metricsAddr+"/metrics", prefix)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := stack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func tail(b []byte, lines int) string {
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// csrSpec is what the driver puts in a request.
type csrSpec struct {
	signer   string
	pod      *corev1.Pod
	node     string // label; the driver's own node
	subject  pkix.Name
	dnsNames []string
	uris     []string
	ips      []net.IP
	emails   []string
	duration time.Duration
	isCA     bool
	// usages replace the driver's default usages when set.
	usages []certificatesv1.KeyUsage
}

// csrKey is the one key every test request uses: what is under test is the
// request's claims, not its key.
var csrKey = sync.OnceValues(func() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
})

// newCSR builds a request the way the driver does (request package labels
// and annotations).
func newCSR(t testing.TB, s csrSpec) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: s.subject, DNSNames: s.dnsNames, IPAddresses: s.ips, EmailAddresses: s.emails}
	usages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth}
	if s.usages != nil {
		usages = s.usages
	}
	if s.isCA {
		// As the driver asks for is-ca: a basicConstraints extension.
		value, err := asn1.Marshal(struct{ IsCA bool }{true})
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: value})
		usages = append(usages, certificatesv1.UsageCertSign)
	}
	for _, u := range s.uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	key, err := csrKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	if s.duration == 0 {
		s.duration = time.Hour
	}
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "certmint-",
			Labels: map[string]string{
				request.LabelManagedBy: request.DriverName,
				request.LabelNode:      s.node,
				request.LabelPodUID:    string(s.pod.UID),
			},
			Annotations: map[string]string{
				request.AnnotationPodNamespace: s.pod.Namespace,
				request.AnnotationPodName:      s.pod.Name,
				request.AnnotationVolumeID:     "csi-" + string(s.pod.UID),
			},
		},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        s.signer,
			ExpirationSeconds: ptr.To(int32(s.duration / time.Second)),
			Usages:            usages,
		},
	}
}

// waitForCSR polls until done says the request reached the wanted state.
func waitForCSR(t testing.TB, name string, done func(*certificatesv1.CertificateSigningRequest) bool) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	var csr certificatesv1.CertificateSigningRequest
	// Generous: the leader-election tests wait out a killed leader's lease
	// (15 s by default) on a busy machine.
	const timeout = 2 * time.Minute
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := env.admin.Get(ctx, types.NamespacedName{Name: name}, &csr); err != nil {
			return false, err
		}
		return done(&csr), nil
	})
	if err != nil {
		t.Fatalf("waited %v for CSR %s to be decided: %v; last seen: %+v", timeout, name, err, csr.Status)
	}
	return &csr
}

func condition(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
	for i := range csr.Status.Conditions {
		if csr.Status.Conditions[i].Type == typ {
			return &csr.Status.Conditions[i]
		}
	}
	return nil
}

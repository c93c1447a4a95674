// Package stack runs certmint's own binaries against a real control plane:
// etcd and kube-apiserver, the CRDs and RBAC of deploy/, the controller
// binary as its ServiceAccount, and the driver binary for one node with a
// token bound to a driver pod of the driver's DaemonSet, called over its CSI
// socket the way the kubelet calls it. No kubelet runs; the caller creates
// the pods whose volumes it publishes. The benchmarks and the integration
// tests of driver and controller together use it.
package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/test/e2e/cluster"
	"github.com/certmint/certmint/test/e2e/deploy"
)

// Names of what the stack creates.
const (
	Namespace     = deploy.Namespace
	DriverSA      = "certmint-driver"
	ControllerSA  = "certmint-controller"
	DriverPodName = "certmint-driver-stack"
)

// Options configure Start.
type Options struct {
	// Dir holds everything the stack writes but logs; required. The caller
	// removes it.
	Dir string
	// LogDir receives every component's log; required.
	LogDir string
	// Node is the name of the driver's node; defaults to "stack-node".
	Node string
	// Symbols builds the binaries with symbol tables, for profiling.
	Symbols bool
	// ExtraAPIServerArgs are passed to kube-apiserver.
	ExtraAPIServerArgs []string
	// ControllerFlags and DriverFlags are passed to the binaries after the
	// stack's own, so they win.
	ControllerFlags []string
	DriverFlags     []string
	// Logf reports progress; nil is quiet.
	Logf func(format string, args ...any)
}

// Stack is the running stack.
type Stack struct {
	opts  Options
	Node  string
	CP    *cluster.ControlPlane
	Admin kubernetes.Interface

	ControllerBin, DriverBin string
	Controller               *Process
	// ControllerMetrics is the URL of the controller's /metrics.
	ControllerMetrics string
	Driver            *Driver
	// DriverPod is the driver's pod, owned by the driver's DaemonSet.
	DriverPod        *corev1.Pod
	driverKubeconfig string
}

// Start builds the binaries and starts everything. On error, what started
// is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Dir == "" || opts.LogDir == "" {
		return nil, errors.New("stack: Dir and LogDir are required")
	}
	if opts.Node == "" {
		opts.Node = "stack-node"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &Stack{opts: opts, Node: opts.Node}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	opts.Logf("building the controller and driver binaries")
	// Next to the logs, so that profiles taken during the run can be read
	// against them afterwards.
	binDir := filepath.Join(opts.LogDir, "bin")
	if s.ControllerBin, err = BuildBinary(ctx, root, "./cmd/controller", binDir, opts.Symbols); err != nil {
		return nil, err
	}
	if s.DriverBin, err = BuildBinary(ctx, root, "./cmd/csi-driver", binDir, opts.Symbols); err != nil {
		return nil, err
	}
	opts.Logf("starting etcd and kube-apiserver")
	kubeBinDir, err := cluster.Binaries(ctx)
	if err != nil {
		return nil, err
	}
	s.CP, err = cluster.StartControlPlane(ctx, cluster.ControlPlaneOptions{
		Dir: filepath.Join(opts.Dir, "controlplane"), LogDir: opts.LogDir, BinDir: kubeBinDir, ExtraAPIServerArgs: opts.ExtraAPIServerArgs,
	})
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(s.CP.Config)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.QPS, cfg.Burst = 500, 1000
	if s.Admin, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if err := s.CP.InstallCRDs(ctx, filepath.Join(root, "deploy", "crds")); err != nil {
		return nil, err
	}
	for _, f := range []string{"namespace.yaml", "rbac/driver.yaml", "podips/driver-pods.yaml", "rbac/controller.yaml", "rbac/controller-secrets-policy.yaml"} {
		if err := ApplyManifest(ctx, s.CP.Config, filepath.Join(root, "deploy", f)); err != nil {
			return nil, err
		}
	}
	if _, err := s.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: s.Node}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	opts.Logf("starting the controller")
	if err := s.startController(ctx); err != nil {
		return nil, err
	}
	if err := s.writeDriverKubeconfig(ctx); err != nil {
		return nil, err
	}
	opts.Logf("starting the driver")
	if err := s.StartDriver(ctx, "driver.log"); err != nil {
		return nil, err
	}
	return s, nil
}

// StartDriver starts the driver, after Stop, again on the same node and
// directory, logging to logName in the log directory: it takes over the
// volumes the last one published, as after a DaemonSet rollout.
func (s *Stack) StartDriver(ctx context.Context, logName string) error {
	d, err := StartDriver(ctx, s.DriverBin, s.driverKubeconfig, s.Node, filepath.Join(s.opts.Dir, "driver"),
		filepath.Join(s.opts.LogDir, logName), s.opts.DriverFlags...)
	if err != nil {
		return err
	}
	s.Driver = d
	return nil
}

// DriverConfig authenticates as the driver does: with its token bound to
// its pod on the node. Tests use it to make requests as a compromised
// driver would.
func (s *Stack) DriverConfig() (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", s.driverKubeconfig)
}

// KubeletDir is where the pods' kubelet directories of the driver's node
// are: target paths of volumes go under it.
func (s *Stack) KubeletDir() string { return filepath.Join(s.opts.Dir, "kubelet") }

// CPUTimes are the CPU times used so far by the driver, the controller,
// kube-apiserver and etcd, in that order.
func (s *Stack) CPUTimes() [4]time.Duration {
	t := [4]time.Duration{s.Driver.CPUTime(), s.Controller.CPUTime()}
	for i, name := range []string{"kube-apiserver", "etcd"} {
		for _, pid := range PIDsMentioning(name, s.CP.Dir) {
			t[2+i] += ProcCPU(pid)
		}
	}
	return t
}

// Stop stops what runs; the caller removes the directory.
func (s *Stack) Stop() {
	if s.Driver != nil {
		s.Driver.Stop()
	}
	if s.Controller != nil {
		s.Controller.Stop()
	}
	if s.CP != nil {
		if err := s.CP.Stop(); err != nil {
			s.opts.Logf("stopping the control plane: %v", err)
		}
	}
}

func (s *Stack) startController(ctx context.Context) error {
	tr, err := s.Admin.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, ControllerSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("controller token: %w", err)
	}
	kubeconfig := filepath.Join(s.opts.Dir, "controller.kubeconfig")
	if err := s.writeKubeconfig(kubeconfig, tr.Status.Token); err != nil {
		return err
	}
	metricsAddr, err := FreeAddr()
	if err != nil {
		return err
	}
	probeAddr, err := FreeAddr()
	if err != nil {
		return err
	}
	s.ControllerMetrics = "http://" + metricsAddr + "/metrics"
	// The deployment's flags, but for addresses; the default worker count
	// and client limits are what runs in a cluster.
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=" + metricsAddr,
		"--health-probe-bind-address=" + probeAddr,
		// No ACME issuer here; its challenge server would only need a port.
		"--acme-http01-address=0",
	}, s.opts.ControllerFlags...)
	s.Controller, err = StartBinary("controller", s.ControllerBin, filepath.Join(s.opts.LogDir, "controller.log"), args...)
	if err != nil {
		return err
	}
	return s.Controller.WaitHTTP(ctx, "http://"+probeAddr+"/readyz", StartTimeout)
}

// writeDriverKubeconfig creates the driver's pod on the node, as its
// DaemonSet would, and writes a kubeconfig with a token bound to that pod:
// the API server stamps the node's name on every request made with it.
func (s *Stack) writeDriverKubeconfig(ctx context.Context) error {
	asDaemonSetPod, err := deploy.StandInDriverDaemonSet(ctx, s.CP.Config, DriverSA)
	if err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: DriverPodName},
		Spec: corev1.PodSpec{
			NodeName: s.Node, ServiceAccountName: DriverSA, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "driver", Image: "certmint/csi-driver:stack"}},
		},
	}
	asDaemonSetPod(pod)
	if s.DriverPod, err = s.Admin.CoreV1().Pods(Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the driver pod: %w", err)
	}
	tr, err := s.Admin.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, DriverSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](3 * 3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: s.DriverPod.Name, UID: s.DriverPod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("driver token: %w", err)
	}
	s.driverKubeconfig = filepath.Join(s.opts.Dir, "driver.kubeconfig")
	return s.writeKubeconfig(s.driverKubeconfig, tr.Status.Token)
}

func (s *Stack) writeKubeconfig(path, token string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["stack"] = &clientcmdapi.Cluster{Server: s.CP.Config.Host, CertificateAuthorityData: s.CP.Config.CAData}
	kc.AuthInfos["stack"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["stack"] = &clientcmdapi.Context{Cluster: "stack", AuthInfo: "stack"}
	kc.CurrentContext = "stack"
	return clientcmd.WriteToFile(*kc, path)
}

// ApplyManifest creates every object of a multi-document manifest; objects
// that exist already are left as they are.
func ApplyManifest(ctx context.Context, cfg *rest.Config, path string) error {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	decoder := serializer.NewCodecFactory(scheme.Scheme).UniversalDeserializer()
	for _, doc := range strings.Split(string(data), "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := decoder.Decode([]byte(doc), nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		o, ok := obj.(client.Object)
		if !ok {
			return fmt.Errorf("%s: unexpected %T", path, obj)
		}
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: creating %T: %w", path, obj, err)
		}
	}
	return nil
}

func stripComments(doc string) string {
	var out []string
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// RepoRoot is the directory of the certmint module's go.mod, found upwards
// from the working directory: the stack builds the binaries from it and
// reads deploy/ there.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/certmint/certmint\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run inside the certmint repository")
		}
		dir = parent
	}
}

package main

import (
	"context"
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

const (
	certmintNS      = deploy.Namespace
	driverSA        = "certmint-driver"
	controllerSA    = "certmint-controller"
	driverDaemonSet = deploy.DriverDaemonSet
	nodeName        = "bench-node"
	driverPodName   = "certmint-driver-bench"
	workloadNS      = "bench"
	workloadSA      = "web"
	issuerName      = "bench-ca"
)

// env is a control plane with the controller and one node's driver, both
// the real binaries with the RBAC of deploy/.
type env struct {
	dir, logDir string
	cp          *cluster.ControlPlane
	admin       kubernetes.Interface

	controllerBin, driverBin string
	controller               *process
	controllerMetrics        string // URL of its /metrics
	driver                   *driverProcess
	driverKubeconfig         string
	driverFlags              []string
}

// startEnv starts everything in dir, which the caller removes, and writes
// the logs to opts.logDir.
func startEnv(ctx context.Context, dir string, opts options) (*env, error) {
	logDir := opts.logDir
	e := &env{dir: dir, logDir: logDir, driverFlags: opts.driverFlags}
	logf("building the controller and driver binaries")
	// Next to the logs, so that profiles taken during the run can be read
	// against them afterwards; a profiling run keeps their symbols.
	binDir := filepath.Join(logDir, "bin")
	var err error
	if e.controllerBin, err = buildBinary(ctx, "./cmd/controller", binDir, opts.profile); err != nil {
		return e, err
	}
	if e.driverBin, err = buildBinary(ctx, "./cmd/csi-driver", binDir, opts.profile); err != nil {
		return e, err
	}
	logf("starting etcd and kube-apiserver")
	kubeBinDir, err := cluster.Binaries(ctx)
	if err != nil {
		return e, err
	}
	cpOpts := cluster.ControlPlaneOptions{Dir: filepath.Join(dir, "controlplane"), LogDir: logDir, BinDir: kubeBinDir}
	if opts.profile {
		cpOpts.ExtraAPIServerArgs = []string{"--profiling=true"}
	}
	if e.cp, err = cluster.StartControlPlane(ctx, cpOpts); err != nil {
		return e, err
	}
	cfg := rest.CopyConfig(e.cp.Config)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.QPS, cfg.Burst = 500, 1000
	if e.admin, err = kubernetes.NewForConfig(cfg); err != nil {
		return e, err
	}
	if err := e.cp.InstallCRDs(ctx, filepath.Join("deploy", "crds")); err != nil {
		return e, err
	}
	for _, f := range []string{"namespace.yaml", "rbac/driver.yaml", "rbac/controller.yaml"} {
		if err := applyManifest(ctx, e.cp.Config, filepath.Join("deploy", f)); err != nil {
			return e, err
		}
	}
	if _, err := e.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNS}}, metav1.CreateOptions{}); err != nil {
		return e, err
	}
	if _, err := e.admin.CoreV1().ServiceAccounts(workloadNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: workloadSA}}, metav1.CreateOptions{}); err != nil {
		return e, err
	}
	if _, err := e.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{}); err != nil {
		return e, err
	}

	logf("starting the controller")
	if err := e.startController(ctx); err != nil {
		return e, err
	}
	logf("creating the CA ClusterIssuer %s", issuerName)
	if _, err := deploy.CAClusterIssuer(ctx, e.cp.Config, issuerName); err != nil {
		return e, err
	}
	if err := e.writeDriverKubeconfig(ctx); err != nil {
		return e, err
	}
	logf("starting the driver")
	e.driver, err = startDriver(ctx, e.driverBin, e.driverKubeconfig, filepath.Join(dir, "driver"), filepath.Join(logDir, "driver.log"), opts.driverFlags...)
	return e, err
}

// cpuTimes are the CPU times used so far by the driver, the controller,
// kube-apiserver and etcd, in that order.
func (e *env) cpuTimes() [4]time.Duration {
	t := [4]time.Duration{e.driver.cpuTime(), e.controller.cpuTime()}
	for i, name := range []string{"kube-apiserver", "etcd"} {
		for _, pid := range pidsMentioning(name, e.cp.Dir) {
			t[2+i] += procCPU(pid)
		}
	}
	return t
}

// stop stops what runs; the caller removes the directory.
func (e *env) stop() {
	if e.driver != nil {
		e.driver.stop()
	}
	if e.controller != nil {
		e.controller.stop()
	}
	if e.cp != nil {
		if err := e.cp.Stop(); err != nil {
			logf("stopping the control plane: %v", err)
		}
	}
}

func (e *env) startController(ctx context.Context) error {
	tr, err := e.admin.CoreV1().ServiceAccounts(certmintNS).CreateToken(ctx, controllerSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("controller token: %w", err)
	}
	kubeconfig := filepath.Join(e.dir, "controller.kubeconfig")
	if err := e.writeKubeconfig(kubeconfig, tr.Status.Token); err != nil {
		return err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return err
	}
	e.controllerMetrics = "http://" + metricsAddr + "/metrics"
	// The deployment's flags, but for addresses; the default worker count
	// and client limits are what is measured.
	e.controller, err = startBinary("controller", e.controllerBin, filepath.Join(e.logDir, "controller.log"),
		"--kubeconfig="+kubeconfig,
		"--metrics-bind-address="+metricsAddr,
		"--health-probe-bind-address="+probeAddr,
		// No ACME issuer here; its challenge server would only need a port.
		"--acme-http01-address=0",
	)
	if err != nil {
		return err
	}
	return e.controller.waitHTTP(ctx, "http://"+probeAddr+"/readyz", startTimeout)
}

// writeDriverKubeconfig creates the driver's pod on the node, as its
// DaemonSet would, and writes a kubeconfig with a token bound to that pod:
// the API server stamps the node's name on every request made with it.
func (e *env) writeDriverKubeconfig(ctx context.Context) error {
	pod, err := e.admin.CoreV1().Pods(certmintNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: driverPodName,
			// No DaemonSet exists, and no garbage collector runs to
			// remove a pod whose owner is missing.
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "DaemonSet", Name: driverDaemonSet,
				UID: "00000000-0000-0000-0000-0000000000d5", Controller: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{
			NodeName: nodeName, ServiceAccountName: driverSA, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "driver", Image: "certmint/csi-driver:bench"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the driver pod: %w", err)
	}
	tr, err := e.admin.CoreV1().ServiceAccounts(certmintNS).CreateToken(ctx, driverSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](3 * 3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("driver token: %w", err)
	}
	e.driverKubeconfig = filepath.Join(e.dir, "driver.kubeconfig")
	return e.writeKubeconfig(e.driverKubeconfig, tr.Status.Token)
}

func (e *env) writeKubeconfig(path, token string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["bench"] = &clientcmdapi.Cluster{Server: e.cp.Config.Host, CertificateAuthorityData: e.cp.Config.CAData}
	kc.AuthInfos["bench"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench"}
	kc.CurrentContext = "bench"
	return clientcmd.WriteToFile(*kc, path)
}

// applyManifest creates every object of a multi-document manifest.
func applyManifest(ctx context.Context, cfg *rest.Config, path string) error {
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

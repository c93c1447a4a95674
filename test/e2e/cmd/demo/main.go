// Command demo shows certmint working on the cluster `cluster up` started;
// hack/demo.sh (make demo) runs it. It builds the driver, controller and test
// app images and loads them on every node, installs certmint from deploy/
// with kubectl apply -k, creates a CA ClusterIssuer, and starts a server pod
// on the first node and a client pod on the second, each with a certmint
// volume, and a second client with a podCertificate projection of the same
// issuer instead. The clients call the server over mutual TLS every few
// seconds; all log the identity they verified. Then it installs Traefik
// and an Ingress annotated for the issuer, whose Certificate's Secret
// Traefik serves to a browser pod over HTTPS. The demo prints what happened and
// leaves everything running.
//
// It learns each node's directories and containerd socket from the
// kubelet's own configuration (the API server's configz proxy), so it needs
// nothing but the cluster's admin kubeconfig.
package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certmint/certmint/pkg/controller/ingress"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/test/e2e/cluster"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
	"github.com/certmint/certmint/test/e2e/image"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

const (
	namespace    = "demo"
	issuerName   = "demo-ca"
	testappImage = "certmint/testapp:demo"
	port         = 8443
	waitTimeout  = 3 * time.Minute
)

func main() {
	out, err := repo.OutputDir()
	if err != nil {
		fatal(err)
	}
	kubeconfig := flag.String("kubeconfig", filepath.Join(out, "cluster", "kubeconfig"), "admin kubeconfig of the cluster")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := run(ctx, *kubeconfig, filepath.Join(out, "cluster", "deploy")); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "demo: %v\n", err)
	os.Exit(1)
}

func step(format string, args ...any) {
	fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
}

func run(ctx context.Context, kubeconfig, overlay string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("loading %s (is the cluster up?): %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	binDir, err := cluster.Binaries(ctx)
	if err != nil {
		return err
	}
	kubectl := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, filepath.Join(binDir, "kubectl"), append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	}
	nodes, err := discoverNodes(ctx, client)
	if err != nil {
		return err
	}
	if len(nodes) < 2 {
		return fmt.Errorf("the demo needs two nodes, the cluster has %d", len(nodes))
	}

	step("building the csi-driver, controller and testapp images and loading them on %d nodes", len(nodes))
	if err := deploy.Images(ctx, nodes); err != nil {
		return err
	}
	tar, err := image.Build(ctx, "./test/e2e/images/testapp", testappImage)
	if err != nil {
		return err
	}
	if err := nodes.LoadImage(ctx, tar); err != nil {
		return err
	}

	step("installing certmint: kubectl apply -k %s (deploy/ with this cluster's kubelet dirs)", overlay)
	if err := deploy.WriteOverlay(overlay, nodes.nodesDir()); err != nil {
		return err
	}
	if err := deploy.Apply(ctx, kubectl, overlay); err != nil {
		return err
	}
	if err := waitInstalled(ctx, client, len(nodes)); err != nil {
		return err
	}

	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := reset(ctx, cfg, client, dyn); err != nil {
		return err
	}
	step("creating a CA and ClusterIssuer %s (its policy also grants each namespace the names under <namespace>.example.test)", issuerName)
	root, err := deploy.CAClusterIssuerWithPolicy(ctx, cfg, issuerName, map[string]any{"allowedDNSNames": demoDNSNames()})
	if err != nil {
		return err
	}

	server, clientNode := nodes[0].name, nodes[1].name
	step("starting pod demo/server on %s and pod demo/client on %s, each with a certmint volume, and pod demo/native-client on %s with a podCertificate projection", server, clientNode, clientNode)
	if err := startPods(ctx, client, server, clientNode); err != nil {
		return err
	}
	for _, caller := range []string{"client", "native-client"} {
		if err := framework.Wait(ctx, caller+"'s first mTLS call", waitTimeout, func(ctx context.Context) (bool, string, error) {
			logs, err := podLogs(ctx, client, caller)
			return err == nil && strings.Contains(logs, "server: verified client"), caller + " log: " + logs, nil
		}); err != nil {
			return err
		}
	}

	step("installing Traefik as the Ingress controller, and an Ingress for %s annotated with %s=%s", shopHost, ingress.AnnotationClusterIssuer, issuerName)
	traefik, err := deploy.Traefik(ctx, nodes, cfg)
	if err != nil {
		return err
	}
	if err := startShop(ctx, client, traefik, root, clientNode); err != nil {
		return err
	}
	if err := framework.Wait(ctx, "an HTTPS request through Traefik with certmint's certificate", waitTimeout, func(ctx context.Context) (bool, string, error) {
		logs, err := podLogs(ctx, client, "browser")
		return err == nil && strings.Contains(logs, "verified server "), "browser log: " + logs, nil
	}); err != nil {
		return err
	}

	fmt.Println()
	for _, pod := range []string{"server", "client", "native-client", "browser"} {
		logs, err := podLogs(ctx, client, pod)
		if err != nil {
			return err
		}
		lines := firstLines(logs, 4)
		if pod == "browser" {
			// Its first calls may come before Traefik loaded the new
			// Secret; the latest show what it serves now.
			lines = lastLines(logs, 2)
		}
		fmt.Printf("--- kubectl -n %s logs %s\n%s\n", namespace, pod, lines)
	}
	for _, args := range [][]string{
		{"-n", namespace, "exec", "server", "--", "/testapp", "files", "--dir=/tls"},
		{"-n", namespace, "exec", "native-client", "--", "/testapp", "files", "--dir=/tls"},
		{"get", "clusterissuers"},
		{"get", "clustertrustbundles"},
		{"-n", namespace, "get", "ingresses,certificates"},
		{"-n", namespace, "get", "pods", "-o", "wide"},
	} {
		var b bytes.Buffer
		cmd := kubectl(ctx, args...)
		cmd.Stdout, cmd.Stderr = &b, &b
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, b.String())
		}
		fmt.Printf("--- kubectl %s\n%s\n", strings.Join(args, " "), b.String())
	}
	return nil
}

// node is one kubelet as its configuration describes it.
type node struct {
	name             string
	podLogsDir       string
	containerdSocket string
}

type nodeList []node

// discoverNodes reads every node's kubelet configuration through the API
// server. The harness lays out each node as NodesDir/<node>/{kubelet,
// pod-logs}, so the pod log directory locates NodesDir.
func discoverNodes(ctx context.Context, client kubernetes.Interface) (nodeList, error) {
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var nodes nodeList
	for _, n := range list.Items {
		raw, err := client.CoreV1().RESTClient().Get().Resource("nodes").Name(n.Name).SubResource("proxy", "configz").DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the kubelet configuration of %s: %w", n.Name, err)
		}
		var configz struct {
			KubeletConfig struct {
				PodLogsDir               string `json:"podLogsDir"`
				ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint"`
			} `json:"kubeletconfig"`
		}
		if err := json.Unmarshal(raw, &configz); err != nil {
			return nil, fmt.Errorf("decoding the kubelet configuration of %s: %w", n.Name, err)
		}
		kc := configz.KubeletConfig
		socket, ok := strings.CutPrefix(kc.ContainerRuntimeEndpoint, "unix://")
		if !ok || kc.PodLogsDir == "" {
			return nil, fmt.Errorf("node %s: runtime endpoint %q, pod logs dir %q: not a harness node", n.Name, kc.ContainerRuntimeEndpoint, kc.PodLogsDir)
		}
		nodes = append(nodes, node{name: n.Name, podLogsDir: kc.PodLogsDir, containerdSocket: socket})
	}
	slices.SortFunc(nodes, func(a, b node) int { return strings.Compare(a.name, b.name) })
	return nodes, nil
}

func (ns nodeList) nodesDir() string { return filepath.Dir(filepath.Dir(ns[0].podLogsDir)) }

// LoadImage imports tarPath into each node's containerd, as the harness
// does when it starts the cluster.
func (ns nodeList) LoadImage(ctx context.Context, tarPath string) error {
	for _, n := range ns {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.containerdSocket, "--namespace", "k8s.io",
			"images", "import", tarPath).CombinedOutput()
		if err != nil {
			return fmt.Errorf("importing %s into %s: %w: %s", filepath.Base(tarPath), n.name, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func waitInstalled(ctx context.Context, client kubernetes.Interface, nodes int) error {
	return framework.Wait(ctx, "the driver on every node and the controller", waitTimeout, func(ctx context.Context) (bool, string, error) {
		ds, err := client.AppsV1().DaemonSets(deploy.Namespace).Get(ctx, deploy.DriverDaemonSet, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		d, err := client.AppsV1().Deployments(deploy.Namespace).Get(ctx, deploy.ControllerDeployment, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		state := fmt.Sprintf("driver ready on %d of %d nodes, controller %d of %d replicas available",
			ds.Status.NumberReady, nodes, d.Status.AvailableReplicas, *d.Spec.Replicas)
		return ds.Status.NumberReady == int32(nodes) && ds.Status.UpdatedNumberScheduled == int32(nodes) &&
			d.Status.AvailableReplicas == *d.Spec.Replicas && d.Status.UpdatedReplicas == *d.Spec.Replicas, state, nil
	})
}

// reset removes what an earlier demo on the same cluster created, so the
// demo can run again.
func reset(ctx context.Context, cfg *rest.Config, client kubernetes.Interface, dyn dynamic.Interface) error {
	errs := []error{
		dyn.Resource(deploy.ClusterIssuers).Delete(ctx, issuerName, metav1.DeleteOptions{}),
		client.CoreV1().Secrets(deploy.Namespace).Delete(ctx, issuerName, metav1.DeleteOptions{}),
		client.CoreV1().Namespaces().Delete(ctx, namespace, metav1.DeleteOptions{}),
	}
	for _, err := range errs {
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	if err := deploy.DeleteTraefik(ctx, cfg); err != nil {
		return err
	}
	return framework.Wait(ctx, "namespace "+namespace+" of an earlier demo to be gone", waitTimeout, func(ctx context.Context) (bool, string, error) {
		_, err := client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
}

// startPods starts the server on serverNode and, once it runs, the client
// on clientNode calling it every five seconds.
func startPods(ctx context.Context, client kubernetes.Interface, serverNode, clientNode string) error {
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := framework.Wait(ctx, "the default ServiceAccount of "+namespace, waitTimeout, func(ctx context.Context) (bool, string, error) {
		_, err := client.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	}); err != nil {
		return err
	}
	for _, sa := range []string{"server", "client"} {
		if _, err := client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	server := pod("server", serverNode, "mtls-serve", fmt.Sprintf("--listen=:%d", port), "--cert-dir=/tls", "--peer-uri="+spiffeID("client"))
	server.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: new(int64(1000)), RunAsNonRoot: new(true), FSGroup: new(int64(2000))}
	server.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}},
		PeriodSeconds: 2,
	}
	if _, err := client.CoreV1().Pods(namespace).Create(ctx, server, metav1.CreateOptions{}); err != nil {
		return err
	}
	var ip string
	if err := framework.Wait(ctx, "pod demo/server to be ready", waitTimeout, func(ctx context.Context) (bool, string, error) {
		p, err := client.CoreV1().Pods(namespace).Get(ctx, "server", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		ip = p.Status.PodIP
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, "", nil
			}
		}
		return false, "phase " + string(p.Status.Phase), nil
	}); err != nil {
		return err
	}
	// No DNS in this cluster: the client dials the IP and checks the name.
	clientPod := pod("client", clientNode, "mtls-call", fmt.Sprintf("--addr=%s:%d", ip, port), "--cert-dir=/tls",
		"--server-name=server."+namespace+".svc", "--peer-uri="+spiffeID("server"), "--every=5s")
	if _, err := client.CoreV1().Pods(namespace).Create(ctx, clientPod, metav1.CreateOptions{}); err != nil {
		return err
	}
	// The same client on the native path: the kubelet makes the key and
	// asks certmint for the certificate through a podCertificate
	// projection; no certmint volume.
	native := deploy.ProjectedPod("native-client", clientNode, "client", issuerName, testappImage, clientPod.Spec.Containers[0].Args, deploy.Projection{})
	native.Namespace = namespace
	_, err := client.CoreV1().Pods(namespace).Create(ctx, native, metav1.CreateOptions{})
	return err
}

// The demo's Ingress: shop answers HTTPS at shopHost through Traefik with
// a certificate from a certmint Certificate, and browser calls it.
const (
	shopHost    = "shop." + namespace + ".example.test"
	shopMessage = "hello over HTTPS, with a certificate certmint keeps in Secret shop-tls"
)

// demoDNSNames are the issuer's DNS patterns: the defaults, for the pods'
// volumes, and the names under <namespace>.example.test, for Certificates.
func demoDNSNames() []any {
	var out []any
	for _, p := range append(slices.Clone(policy.DefaultDNSNames), "*.${POD_NAMESPACE}.example.test") {
		out = append(out, p)
	}
	return out
}

// startShop starts the shop backend and its Ingress, which certmint keeps
// a Certificate for, and a browser pod on node that trusts root and calls
// https://shopHost/ through Traefik every five seconds.
func startShop(ctx context.Context, client kubernetes.Interface, traefik *deploy.TraefikInstance, root *x509.Certificate, node string) error {
	pod, svc := deploy.HTTPBackend("shop", testappImage, shopMessage, 1000)
	if _, err := client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	ing := deploy.TLSIngress("shop", shopHost, "shop", "shop-tls", map[string]string{ingress.AnnotationClusterIssuer: issuerName})
	if _, err := client.NetworkingV1().Ingresses(namespace).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "demo-ca"}, Data: map[string]string{"ca.crt": string(pki.EncodeCertificates(root))}}
	if _, err := client.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return err
	}
	browser := pod.DeepCopy()
	browser.ObjectMeta = metav1.ObjectMeta{Name: "browser"}
	browser.Spec.NodeName = node
	browser.Spec.Containers[0].ReadinessProbe = nil
	browser.Spec.Containers[0].Args = []string{"https-get", "--addr=" + traefik.HTTPSAddr(), "--server-name=" + shopHost,
		"--ca-file=/ca/ca.crt", "--expect-body=" + shopMessage, "--every=5s"}
	browser.Spec.Volumes = []corev1.Volume{{Name: "ca", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "demo-ca"}},
	}}}
	browser.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "ca", MountPath: "/ca", ReadOnly: true}}
	_, err := client.CoreV1().Pods(namespace).Create(ctx, browser, metav1.CreateOptions{})
	return err
}

func spiffeID(serviceAccount string) string {
	return deploy.SPIFFEID(namespace, serviceAccount)
}

// pod runs as a ServiceAccount of its own name, so its SPIFFE ID names it.
func pod(name, node string, args ...string) *corev1.Pod {
	p := deploy.CertPod(name, node, name, issuerName, testappImage, args)
	p.Namespace = namespace
	return p
}

func podLogs(ctx context.Context, client kubernetes.Interface, name string) (string, error) {
	data, err := client.CoreV1().Pods(namespace).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return "", errors.New(strings.TrimSpace(err.Error()))
	}
	return string(data), nil
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

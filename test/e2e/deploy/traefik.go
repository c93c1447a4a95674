package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certmint/certmint/test/e2e/framework"
	"github.com/certmint/certmint/test/e2e/image"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

const (
	// TraefikBinEnv names the environment variable that points at a
	// directory with a prebuilt traefik binary, skipping hack/traefik.sh.
	TraefikBinEnv = "CERTMINT_TRAEFIK_BIN"
	// TraefikNamespace holds Traefik's ServiceAccount and Deployment.
	TraefikNamespace = "traefik"
	// TraefikIngressClass is the IngressClass Traefik serves: Ingresses
	// name it in spec.ingressClassName.
	TraefikIngressClass = "traefik"
	// TraefikHTTPPort is where Traefik serves Ingresses on its pod IP
	// over plain HTTP: port 80, where ACME servers send HTTP-01
	// validations.
	TraefikHTTPPort = 80
	// TraefikHTTPSPort is where Traefik serves Ingresses on its pod IP over
	// HTTPS, with the certificates of their spec.tls Secrets.
	TraefikHTTPSPort = 443
)

const (
	// traefikName names Traefik's ServiceAccount, ClusterRole and binding,
	// and Deployment, and is the value of its pods' name label.
	traefikName = "traefik"
	// traefikController is the controller name Traefik looks for in
	// IngressClasses.
	traefikController = "traefik.io/ingress-controller"
	traefikImage      = "certmint/traefik:" + Tag
	// traefikPingPort serves /ping, the readiness probe.
	traefikPingPort = 8080
	// traefikUser is the unprivileged user Traefik runs as. It needs no
	// capability for ports 80 and 443: its pod's network namespace lets
	// any user bind them (unprivilegedPorts).
	traefikUser = 65532
	// traefikTimeout bounds the wait for the Traefik pod to be Ready, and
	// for its namespace to be gone after Delete.
	traefikTimeout = 2 * time.Minute
	// traefikLogLines is how much of Traefik's log errors and Logs show.
	traefikLogLines = 60
)

var traefikLabels = map[string]string{"app.kubernetes.io/name": traefikName}

// unprivilegedPorts lets every user of a pod bind ports below 1024 in the
// pod's own network namespace, a sysctl the kubelet allows any pod.
var unprivilegedPorts = corev1.Sysctl{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}

// TraefikInstance is a running Traefik, serving every Ingress of class
// TraefikIngressClass in every namespace. It also writes its own address,
// PodIP, into the status of each such Ingress, as Ingress controllers do.
type TraefikInstance struct {
	// PodName and PodIP are those of the one Traefik pod, in
	// TraefikNamespace.
	PodName, PodIP string
	// HTTPPort and HTTPSPort are TraefikHTTPPort and TraefikHTTPSPort.
	HTTPPort, HTTPSPort int

	client kubernetes.Interface
}

// HTTPSAddr is host:port of Traefik's HTTPS entrypoint.
func (t *TraefikInstance) HTTPSAddr() string {
	return net.JoinHostPort(t.PodIP, strconv.Itoa(t.HTTPSPort))
}

// HTTPAddr is host:port of Traefik's plain HTTP entrypoint.
func (t *TraefikInstance) HTTPAddr() string {
	return net.JoinHostPort(t.PodIP, strconv.Itoa(t.HTTPPort))
}

// Logs returns the last lines of the Traefik pod's log: the routers it made,
// the Secrets it could not use, one line per request it served. Tests log it
// when they fail, since framework dumps show only the test's namespace.
func (t *TraefikInstance) Logs(ctx context.Context) (string, error) {
	return podLogTail(ctx, t.client, t.PodName, false)
}

// Traefik installs the Ingress controller of the tests that prove certmint's
// Secrets serve HTTPS: a real one, the release pinned in
// hack/traefik/go.mod, reading Ingresses, Services, EndpointSlices and
// Secrets from the API server as it does in any cluster. It routes to pod
// IPs from EndpointSlices, so it needs no kube-proxy; a client reaches it at
// its pod IP and must send SNI, which is how it picks a certificate.
//
// Traefik builds the binary (through hack/traefik.sh, cached by version,
// unless $CERTMINT_TRAEFIK_BIN names a prebuilt one), loads its image on
// every node with c, installs it into the cluster of cfg with the least
// privilege it needs, and waits until it is Ready. One runs at a time:
// Delete the last one before installing another.
func Traefik(ctx context.Context, c ImageLoader, cfg *rest.Config) (_ *TraefikInstance, err error) {
	bin, err := TraefikBinary(ctx)
	if err != nil {
		return nil, err
	}
	tar, err := image.FromBinary(ctx, bin, traefikImage)
	if err != nil {
		return nil, err
	}
	if err := c.LoadImage(ctx, tar); err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	t := &TraefikInstance{HTTPPort: TraefikHTTPPort, HTTPSPort: TraefikHTTPSPort, client: client}
	defer func() {
		if err != nil {
			// Left in place, a half-installed Traefik would make the next
			// test's install fail on names that already exist.
			ctx, cancel := context.WithTimeout(context.Background(), traefikTimeout)
			defer cancel()
			if cleanupErr := t.Delete(ctx); cleanupErr != nil {
				err = errors.Join(err, fmt.Errorf("removing the failed install: %w", cleanupErr))
			}
		}
	}()
	if err := createTraefik(ctx, client); err != nil {
		return nil, err
	}
	pod, err := waitTraefikReady(ctx, client)
	if err != nil {
		return nil, err
	}
	t.PodName, t.PodIP = pod.Name, pod.Status.PodIP
	return t, nil
}

// createTraefik creates Traefik's objects; it fails if any exists already.
func createTraefik(ctx context.Context, client kubernetes.Interface) error {
	create := func(what string, err error) error {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Traefik's %s: %w (Delete the previous Traefik first)", what, err)
		}
		if err != nil {
			return fmt.Errorf("creating Traefik's %s: %w", what, err)
		}
		return nil
	}
	ns, sa, rbac, class, deployment := traefikObjects()
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return create("namespace", err)
	}
	if _, err := client.CoreV1().ServiceAccounts(TraefikNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return create("ServiceAccount", err)
	}
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, rbac.role, metav1.CreateOptions{}); err != nil {
		return create("ClusterRole", err)
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, rbac.binding, metav1.CreateOptions{}); err != nil {
		return create("ClusterRoleBinding", err)
	}
	if _, err := client.NetworkingV1().IngressClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		return create("IngressClass", err)
	}
	if _, err := client.AppsV1().Deployments(TraefikNamespace).Create(ctx, deployment, metav1.CreateOptions{}); err != nil {
		return create("Deployment", err)
	}
	return nil
}

type traefikRBAC struct {
	role    *rbacv1.ClusterRole
	binding *rbacv1.ClusterRoleBinding
}

// traefikObjects are the manifests of a Traefik install.
func traefikObjects() (*corev1.Namespace, *corev1.ServiceAccount, traefikRBAC, *networkingv1.IngressClass, *appsv1.Deployment) {
	meta := metav1.ObjectMeta{Name: traefikName, Namespace: TraefikNamespace, Labels: traefikLabels}
	read := []string{"get", "list", "watch"}
	rbac := traefikRBAC{
		role: &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: traefikName, Labels: traefikLabels},
			// What the kubernetesingress provider watches, and the Ingress
			// status it writes. Nodes are only read for NodePort Services
			// and native load balancing, but the provider watches them
			// whatever its configuration.
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"services", "secrets", "nodes"}, Verbs: read},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses", "ingressclasses"}, Verbs: read},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses/status"}, Verbs: []string{"update"}},
			},
		},
		binding: &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: traefikName, Labels: traefikLabels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: traefikName},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: traefikName, Namespace: TraefikNamespace}},
		},
	}
	class := &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: TraefikIngressClass, Labels: traefikLabels},
		Spec:       networkingv1.IngressClassSpec{Controller: traefikController},
	}
	args := []string{
		"--log.level=INFO",
		// Plain text: tests and dumps show the log as it is.
		"--log.nocolor=true",
		// One line per request: a failing test's log shows what Traefik
		// answered and with which router.
		"--accesslog=true",
		// Nothing outside the cluster is reachable, or to be called.
		"--global.checknewversion=false",
		"--global.sendanonymoususage=false",
		fmt.Sprintf("--entrypoints.web.address=:%d", TraefikHTTPPort),
		fmt.Sprintf("--entrypoints.websecure.address=:%d", TraefikHTTPSPort),
		"--entrypoints.websecure.http.tls=true",
		fmt.Sprintf("--entrypoints.traefik.address=:%d", traefikPingPort),
		"--ping=true",
		"--providers.kubernetesingress=true",
		// An Ingress whose backend has no ready endpoint yet still gets
		// its router (answering 503) and its certificates, rather than
		// being left out of the configuration.
		"--providers.kubernetesingress.allowemptyservices=true",
		// Ingress status names the pod's own address: there is no
		// LoadBalancer Service to copy it from.
		"--providers.kubernetesingress.ingressendpoint.ip=$(POD_IP)",
	}
	deployment := &appsv1.Deployment{
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: traefikLabels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: traefikLabels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            traefikName,
					TerminationGracePeriodSeconds: new(int64),
					// The test cluster runs no cluster DNS.
					DNSPolicy: corev1.DNSDefault,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   new(true),
						RunAsUser:      new(int64(traefikUser)),
						RunAsGroup:     new(int64(traefikUser)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						Sysctls:        []corev1.Sysctl{unprivilegedPorts},
					},
					Containers: []corev1.Container{{
						Name:            "traefik",
						Image:           traefikImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            args,
						Env: []corev1.EnvVar{{
							Name:      "POD_IP",
							ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}},
						}},
						Ports: []corev1.ContainerPort{
							{Name: "web", ContainerPort: TraefikHTTPPort},
							{Name: "websecure", ContainerPort: TraefikHTTPSPort},
							{Name: "ping", ContainerPort: traefikPingPort},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Path: "/ping", Port: intstr.FromString("ping"),
							}},
							PeriodSeconds: 1,
						},
						// Traefik writes no file with this configuration:
						// certificates come from Secrets, logs go to stdout,
						// and there is no ACME storage or plugin cache.
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: new(false),
							ReadOnlyRootFilesystem:   new(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: TraefikNamespace, Labels: traefikLabels}}
	sa := &corev1.ServiceAccount{ObjectMeta: meta}
	return ns, sa, rbac, class, deployment
}

// waitTraefikReady waits until the Traefik Deployment's pod is Running and
// Ready, and fails at once if Traefik exits: its flags are wrong or it
// cannot reach the API server, which waiting does not cure.
func waitTraefikReady(ctx context.Context, client kubernetes.Interface) (*corev1.Pod, error) {
	var ready *corev1.Pod
	var lastPod string
	err := framework.Wait(ctx, "the Traefik pod in namespace "+TraefikNamespace+" to be Running and Ready", traefikTimeout,
		func(ctx context.Context) (bool, string, error) {
			pods, err := client.CoreV1().Pods(TraefikNamespace).List(ctx, metav1.ListOptions{
				LabelSelector: metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: traefikLabels}),
			})
			if err != nil {
				return false, err.Error(), nil
			}
			var states []string
			for i := range pods.Items {
				p := &pods.Items[i]
				if p.DeletionTimestamp != nil {
					continue
				}
				lastPod = p.Name
				for _, cs := range p.Status.ContainerStatuses {
					if cs.RestartCount > 0 {
						return false, "", fmt.Errorf("traefik in pod %s exited: %s", p.Name, terminated(cs.LastTerminationState))
					}
				}
				if p.Status.Phase == corev1.PodRunning && podReady(p) {
					ready = p
					return true, "", nil
				}
				states = append(states, p.Name+": "+traefikPodState(p))
			}
			if len(states) == 0 {
				return false, "no pod yet", nil
			}
			return false, strings.Join(states, "; "), nil
		})
	if err != nil {
		if lastPod != "" {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			// The log of an exited container is the previous one's.
			logs, logErr := podLogTail(ctx, client, lastPod, true)
			if logErr != nil {
				logs, logErr = podLogTail(ctx, client, lastPod, false)
			}
			if logErr != nil {
				logs = "(no log: " + logErr.Error() + ")"
			}
			err = fmt.Errorf("%w\nlast lines of Traefik's log:\n%s", err, logs)
		}
		return nil, err
	}
	return ready, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func traefikPodState(p *corev1.Pod) string {
	parts := []string{"phase " + string(p.Status.Phase)}
	for _, cs := range p.Status.ContainerStatuses {
		switch s := cs.State; {
		case s.Waiting != nil:
			parts = append(parts, fmt.Sprintf("waiting: %s %s", s.Waiting.Reason, s.Waiting.Message))
		case s.Running != nil:
			parts = append(parts, "running, not Ready")
		}
	}
	return strings.Join(parts, ", ")
}

func terminated(s corev1.ContainerState) string {
	if t := s.Terminated; t != nil {
		return fmt.Sprintf("exit %d %s %s", t.ExitCode, t.Reason, t.Message)
	}
	return "no termination recorded"
}

func podLogTail(ctx context.Context, client kubernetes.Interface, pod string, previous bool) (string, error) {
	lines := int64(traefikLogLines)
	data, err := client.CoreV1().Pods(TraefikNamespace).GetLogs(pod, &corev1.PodLogOptions{TailLines: &lines, Previous: previous}).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the log of %s/%s: %w", TraefikNamespace, pod, err)
	}
	return string(data), nil
}

// DeleteTraefik removes a Traefik installed into the cluster of cfg, as
// TraefikInstance.Delete does, for callers that did not install it (a demo
// run again).
func DeleteTraefik(ctx context.Context, cfg *rest.Config) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return (&TraefikInstance{client: client}).Delete(ctx)
}

// Delete removes Traefik: its namespace (waiting until it is gone, so that
// another Traefik can be installed), IngressClass and RBAC. What is gone
// already is no error.
func (t *TraefikInstance) Delete(ctx context.Context) error {
	var errs []error
	del := func(what string, err error) {
		// A namespace already being deleted answers Conflict.
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("deleting Traefik's %s: %w", what, err))
		}
	}
	c := t.client
	del("namespace", c.CoreV1().Namespaces().Delete(ctx, TraefikNamespace, metav1.DeleteOptions{}))
	del("IngressClass", c.NetworkingV1().IngressClasses().Delete(ctx, TraefikIngressClass, metav1.DeleteOptions{}))
	del("ClusterRoleBinding", c.RbacV1().ClusterRoleBindings().Delete(ctx, traefikName, metav1.DeleteOptions{}))
	del("ClusterRole", c.RbacV1().ClusterRoles().Delete(ctx, traefikName, metav1.DeleteOptions{}))
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return framework.Wait(ctx, "namespace "+TraefikNamespace+" to be deleted", traefikTimeout, func(ctx context.Context) (bool, string, error) {
		ns, err := c.CoreV1().Namespaces().Get(ctx, TraefikNamespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, "phase " + string(ns.Status.Phase), nil
	})
}

var traefikBinary struct {
	sync.Mutex
	path string
}

// TraefikBinary returns the path of the pinned traefik binary: in
// $CERTMINT_TRAEFIK_BIN when that is set, else in the directory
// hack/traefik.sh builds it into (or finds it cached in). Parallel callers,
// in this process or others, share one build; a first build takes minutes.
func TraefikBinary(ctx context.Context) (string, error) {
	if dir := os.Getenv(TraefikBinEnv); dir != "" {
		bin := filepath.Join(dir, "traefik")
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s=%s holds no traefik: %w", TraefikBinEnv, dir, err)
		}
		return bin, nil
	}
	traefikBinary.Lock()
	defer traefikBinary.Unlock()
	if traefikBinary.path != "" {
		return traefikBinary.path, nil
	}
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "traefik.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building Traefik with hack/traefik.sh: %w\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", errors.New("hack/traefik.sh printed no directory")
	}
	traefikBinary.path = filepath.Join(dir, "traefik")
	return traefikBinary.path, nil
}

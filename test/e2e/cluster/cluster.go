package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"golang.org/x/sys/unix"

	"github.com/certmint/certmint/test/e2e/image"
)

const (
	// PauseImage is the sandbox image of every node; Start builds it from
	// pausePackage.
	PauseImage   = "certmint/pause:e2e"
	pausePackage = "./test/e2e/images/pause"

	defaultNodes = 2
	// maxNodes keeps node IPs and pod subnets inside their ranges.
	maxNodes = 200
	// readyTimeout bounds the wait for nodes and controllers once every
	// process runs.
	readyTimeout = 3 * time.Minute
)

// Options configures Start. The zero value is a two-node cluster.
type Options struct {
	// Nodes is the number of nodes; 0 means 2.
	Nodes int
	// BinDir holds the Kubernetes binaries. Empty means Binaries.
	BinDir string
	// LogDir receives every component's log and is emptied first, so the
	// logs outlive the run (CI keeps them). Empty means a directory inside
	// the run directory, removed by Stop.
	LogDir string
	// KubeconfigPath, when set, receives a copy of the admin kubeconfig once
	// the cluster is Ready (so its appearance means Ready); Stop removes it.
	KubeconfigPath string
	// Logf reports progress. Nil discards it.
	Logf func(format string, args ...any)
	// Background marks a cluster that runs on its own until someone stops
	// it (`make demo`, `make cluster-up`). A run that finds one holding the
	// machine's cluster lock fails at once, saying how to stop it, rather
	// than wait for it: it may never end. Runs that end by themselves (test
	// runs) wait for each other.
	Background bool
}

// Cluster is a running multi-node cluster inside its own network namespace.
type Cluster struct {
	Dir          string       // run directory, unique to this run
	Kubeconfig   string       // admin kubeconfig path (system:masters)
	Config       *rest.Config // admin
	ControlPlane *ControlPlane
	Nodes        []*Node
	// NodesDir holds one directory per node, with the kubelet root dir at
	// NodesDir/<node name>/kubelet. It is a shared mount, so a privileged
	// DaemonSet that mounts NodesDir at the same path with Bidirectional
	// propagation can reach its own node's kubelet dir as
	// NodesDir/$(NODE_NAME)/kubelet (NODE_NAME from spec.nodeName), and
	// its mounts there are seen by the kubelet.
	NodesDir string
	// BinDir holds the Kubernetes binaries, kubectl among them.
	BinDir string

	logDir         string
	kubeconfigCopy string
	components     []*process // kube-controller-manager, kube-scheduler
	lock           *os.File
	stopOnce       sync.Once
	stopErr        error
}

// Start brings up a full cluster: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler, and per node a containerd and a
// kubelet, and returns once every node is Ready and namespaces get their
// default ServiceAccount. Only one full cluster runs on a machine at a time:
// Start waits for the machine-wide lock, then removes whatever an earlier run
// left behind. On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = defaultNodes
	}
	if opts.Nodes < 1 || opts.Nodes > maxNodes {
		return nil, fmt.Errorf("nodes must be between 1 and %d, not %d", maxNodes, opts.Nodes)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("a full cluster needs root: it creates a network namespace, cgroups and mounts")
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cniBin, err := cniBinDir()
	if err != nil {
		return nil, err
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = Binaries(ctx); err != nil {
			return nil, err
		}
	}

	lock, err := acquireLock(ctx, logf, opts.Background, false)
	if err != nil {
		return nil, err
	}
	c := &Cluster{BinDir: binDir, lock: lock}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	logf("removing leftovers of earlier runs")
	if err := sweep(ctx); err != nil {
		return nil, err
	}
	if err := c.makeDirs(opts.LogDir); err != nil {
		return nil, err
	}
	logf("run directory %s", c.Dir)
	if err := setUpNetwork(ctx, opts.Nodes); err != nil {
		return nil, err
	}

	// The pause image compiles while the control plane starts.
	type built struct {
		tar string
		err error
	}
	pause := make(chan built, 1)
	go func() {
		tar, err := image.Build(ctx, pausePackage, PauseImage)
		pause <- built{tar, err}
	}()
	logf("starting etcd and kube-apiserver")
	cp, err := startControlPlane(ctx, ControlPlaneOptions{
		Dir:    filepath.Join(c.Dir, "controlplane"),
		LogDir: c.logDir,
		BinDir: binDir,
	}, network{command: inNetns(), advertiseIP: apiserverIP})
	pauseImage := <-pause
	if err != nil {
		return nil, err
	}
	c.ControlPlane, c.Kubeconfig, c.Config = cp, cp.Kubeconfig, cp.Config
	if pauseImage.err != nil {
		return nil, fmt.Errorf("building pause image: %w", pauseImage.err)
	}
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	if err := grantKubeletAccess(ctx, client); err != nil {
		return nil, err
	}

	for i := 1; i <= opts.Nodes; i++ {
		n := newNode(c.Dir, c.NodesDir, i)
		c.Nodes = append(c.Nodes, n)
		logf("starting containerd and kubelet of %s", n.Name)
		if err := n.createCgroups(); err != nil {
			return nil, err
		}
		if err := n.startContainerd(ctx, c.logDir, cniBin); err != nil {
			return nil, err
		}
		if err := n.importImage(ctx, pauseImage.tar); err != nil {
			return nil, err
		}
		if err := n.startKubelet(cp, binDir, c.logDir); err != nil {
			return nil, err
		}
	}
	logf("starting kube-controller-manager and kube-scheduler")
	if err := c.startControllers(); err != nil {
		return nil, err
	}
	logf("waiting for nodes to be Ready")
	if err := c.waitReady(ctx, client); err != nil {
		return nil, err
	}
	if opts.KubeconfigPath != "" {
		tmp := opts.KubeconfigPath + ".tmp"
		if err := writeKubeconfig(tmp, c.Config); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, opts.KubeconfigPath); err != nil {
			return nil, fmt.Errorf("publishing kubeconfig: %w", err)
		}
		c.kubeconfigCopy = opts.KubeconfigPath
	}
	return c, nil
}

func (c *Cluster) makeDirs(logDir string) error {
	if err := os.MkdirAll(baseDir(), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", baseDir(), err)
	}
	dir, err := os.MkdirTemp(baseDir(), runDirPrefix)
	if err != nil {
		return fmt.Errorf("creating run directory: %w", err)
	}
	c.Dir = dir
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("opening up run directory: %w", err)
	}
	c.logDir = logDir
	if c.logDir == "" {
		c.logDir = filepath.Join(dir, "logs")
	} else if err := os.RemoveAll(c.logDir); err != nil {
		return fmt.Errorf("clearing log directory: %w", err)
	}
	c.NodesDir = filepath.Join(dir, "nodes")
	for _, d := range []string{c.logDir, c.NodesDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	// The machine's root is a private mount. Bidirectional mount
	// propagation (the CSI driver mounting into pod volumes) needs the
	// kubelet dirs on a shared one.
	if err := unix.Mount(c.NodesDir, c.NodesDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", c.NodesDir, err)
	}
	if err := unix.Mount("", c.NodesDir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s a shared mount: %w", c.NodesDir, err)
	}
	return nil
}

// grantKubeletAccess lets kube-apiserver's kubelet client identity use the
// kubelet API (logs, exec, port-forward), as kubeadm does.
func grantKubeletAccess(ctx context.Context, client kubernetes.Interface) error {
	_, err := client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "certmint-e2e:kube-apiserver-kubelet-client"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: kubeletClientUser}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("granting kube-apiserver access to kubelets: %w", err)
	}
	return nil
}

func (c *Cluster) startControllers() error {
	cp := c.ControlPlane
	dir := filepath.Join(c.Dir, "controllers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	kubeconfigFor := func(name, user string) (string, error) {
		cfg, err := cp.UserConfig(user)
		if err != nil {
			return "", err
		}
		path := filepath.Join(dir, name+".kubeconfig")
		return path, writeKubeconfig(path, cfg)
	}
	kcmConfig, err := kubeconfigFor("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	schedConfig, err := kubeconfigFor("kube-scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	// Both serve their health endpoints on loopback inside the cluster's
	// namespace, where the default ports are free.
	commands := map[string][]string{
		"kube-controller-manager": {
			"--kubeconfig=" + kcmConfig,
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + cp.serviceAccountKeyFile,
			// Published to every namespace as kube-root-ca.crt, which
			// projected ServiceAccount volumes need.
			"--root-ca-file=" + cp.CAFile,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--v=1",
		},
		"kube-scheduler": {
			"--kubeconfig=" + schedConfig,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--v=1",
		},
	}
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		argv := append(append(inNetns(), filepath.Join(c.BinDir, name)), commands[name]...)
		p, err := startProcess(name, filepath.Join(c.logDir, name+".log"), argv)
		if err != nil {
			return err
		}
		c.components = append(c.components, p)
	}
	return nil
}

// waitReady waits until every node is Ready and kube-controller-manager has
// given the default namespace its ServiceAccount.
func (c *Cluster) waitReady(ctx context.Context, client kubernetes.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var state string
	for {
		for _, p := range c.processes() {
			if p.exited() {
				return p.exitError()
			}
		}
		ready, s := c.readiness(ctx, client)
		if ready {
			return nil
		}
		state = s
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for nodes to be Ready and the default ServiceAccount: %w; last state: %s", ctx.Err(), state)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (c *Cluster) readiness(ctx context.Context, client kubernetes.Interface) (bool, string) {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, fmt.Sprintf("listing nodes: %v", err)
	}
	status := map[string]string{}
	for _, n := range c.Nodes {
		status[n.Name] = "not registered"
	}
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				status[n.Name] = fmt.Sprintf("Ready=%s (%s: %s)", cond.Status, cond.Reason, cond.Message)
				if cond.Status == corev1.ConditionTrue {
					status[n.Name] = "Ready"
				}
			}
		}
	}
	var notReady []string
	for name, s := range status {
		if s != "Ready" {
			notReady = append(notReady, name+": "+s)
		}
	}
	sort.Strings(notReady)
	if len(notReady) > 0 {
		return false, strings.Join(notReady, "; ")
	}
	if _, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return false, "nodes Ready; default ServiceAccount not created yet"
		}
		return false, fmt.Sprintf("getting default ServiceAccount: %v", err)
	}
	return true, ""
}

// LoadImage imports an image tarball (see package image) into every node's
// containerd, so pods can use it with imagePullPolicy Never or IfNotPresent.
func (c *Cluster) LoadImage(ctx context.Context, tarPath string) error {
	for _, n := range c.Nodes {
		if err := n.importImage(ctx, tarPath); err != nil {
			return err
		}
	}
	return nil
}

// Kubectl returns a kubectl command with the admin kubeconfig.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
}

// Command returns a command that runs inside the cluster's network
// namespace. A server a test needs pods to reach (an ACME CA, a DNS server)
// runs this way and listens on the apiserver's address, APIServerIP.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append(append(inNetns(), name), args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// APIServerIP is the cluster-side address of the control plane, reachable
// from pods, from processes started with Command and from the host.
func (c *Cluster) APIServerIP() string { return apiserverIP }

// LogFiles maps component names to their log files.
func (c *Cluster) LogFiles() map[string]string {
	logs := map[string]string{}
	for _, p := range c.processes() {
		logs[p.name] = p.logPath
	}
	return logs
}

func (c *Cluster) processes() []*process {
	var ps []*process
	if c.ControlPlane != nil {
		ps = append(ps, c.ControlPlane.processes...)
	}
	ps = append(ps, c.components...)
	for _, n := range c.Nodes {
		ps = append(ps, n.processes()...)
	}
	return ps
}

// Stop stops every component, kills every container, removes mounts,
// network, cgroups and the run directory, and releases the machine-wide lock.
// It is safe to call more than once and from several goroutines.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		const grace = 5 * time.Second
		var errs []error
		if c.kubeconfigCopy != "" {
			errs = append(errs, os.Remove(c.kubeconfigCopy))
		}
		// Kubelets first, so none restarts containers while they are killed.
		for _, n := range c.Nodes {
			if n.kubelet != nil {
				errs = append(errs, n.kubelet.stop(grace))
			}
		}
		for _, p := range c.components {
			errs = append(errs, p.stop(grace))
		}
		for _, n := range c.Nodes {
			if n.containerd != nil {
				errs = append(errs, n.containerd.stop(grace))
			}
		}
		if c.ControlPlane != nil {
			errs = append(errs, c.ControlPlane.Stop())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		errs = append(errs, sweep(ctx))
		errs = append(errs, c.lock.Close())
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// acquireLock takes the machine-wide full-cluster lock, waiting while
// another run holds it, or failing at once when a background cluster does
// (see Options.Background). The lock is an flock, so it dies with its holder
// and a crashed run never blocks the next. The lock file names its holder:
// its pid and whether it runs in the background.
// Cleanup waits for background clusters too (waitForAll): it runs once one
// has been told to stop.
func acquireLock(ctx context.Context, logf func(string, ...any), background, waitForAll bool) (*os.File, error) {
	if err := os.MkdirAll(baseDir(), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", baseDir(), err)
	}
	path := lockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening cluster lock: %w", err)
	}
	announced := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		holder := readHolder(path)
		if holder.background && !waitForAll {
			f.Close()
			return nil, &BusyError{Holder: holder.pid}
		}
		if !announced {
			logf("another cluster runs on this machine (pid %s); waiting for it to stop", holder.pid)
			announced = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the cluster lock %s held by pid %s: %w", path, holder.pid, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("recording lock holder: %w", err)
	}
	line := strconv.Itoa(os.Getpid())
	if background {
		line += " " + backgroundMark
	}
	if _, err := f.WriteAt([]byte(line+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("recording lock holder: %w", err)
	}
	return f, nil
}

// backgroundMark follows the pid in the lock file of a background cluster.
const backgroundMark = "background"

func lockPath() string { return filepath.Join(baseDir(), "lock") }

type lockHolder struct {
	pid        string
	background bool
}

func readHolder(path string) lockHolder {
	data, _ := os.ReadFile(path)
	fields := strings.Fields(string(data))
	var h lockHolder
	if len(fields) > 0 {
		h.pid = fields[0]
	}
	h.background = len(fields) > 1 && fields[1] == backgroundMark
	return h
}

// BusyError is returned when a background cluster holds the machine's
// cluster lock.
type BusyError struct {
	Holder string // its pid
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("a cluster started by `make demo` or `make cluster-up` is running on this machine (pid %s), and only one runs at a time: stop it with `make demo-down` and try again", e.Holder)
}

// CheckFree reports a *BusyError when a background cluster holds the
// machine's cluster lock, and nil otherwise (free, or held by a run that
// ends by itself); it takes no lock. `make test` calls it first, so that
// it fails at once, where the user sees it.
func CheckFree() error {
	f, err := os.OpenFile(lockPath(), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		return unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}
	if h := readHolder(lockPath()); h.background {
		return &BusyError{Holder: h.pid}
	}
	return nil
}

// Cleanup removes what a crashed full-cluster run left on the machine. It
// waits for a running cluster to stop first, so it never tears down a live one.
func Cleanup(ctx context.Context) error {
	lock, err := acquireLock(ctx, func(string, ...any) {}, false, true)
	if err != nil {
		return err
	}
	defer lock.Close()
	return sweep(ctx)
}

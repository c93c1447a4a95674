package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
)

// Node is one kubelet with its own containerd. All nodes share the cluster's
// network namespace but have their own IP, pod bridge, directories and cgroup
// root.
type Node struct {
	Name    string
	IP      string // InternalIP; the kubelet listens here
	PodCIDR string
	// KubeletDir is the kubelet's --root-dir: NodesDir/<Name>/kubelet.
	KubeletDir       string
	ContainerdSocket string

	index      int
	dir        string // containerd root, state, CNI and runc state
	containerd *process
	kubelet    *process
}

func newNode(runDir, nodesDir string, i int) *Node {
	name := fmt.Sprintf("node-%d", i)
	dir := filepath.Join(runDir, "containerd", name)
	return &Node{
		Name:             name,
		IP:               nodeIP(i),
		PodCIDR:          nodePodCIDR(i),
		KubeletDir:       filepath.Join(nodesDir, name, "kubelet"),
		ContainerdSocket: filepath.Join(dir, "containerd.sock"),
		index:            i,
		dir:              dir,
	}
}

func (n *Node) cgroupRoot() string { return "/" + cgroupPrefix + n.Name }

// createCgroups makes the node's cgroup root in every hierarchy: the
// kubelet refuses a cgroupRoot missing from any of them.
func (n *Node) createCgroups() error {
	for _, root := range cgroupMounts() {
		dir := filepath.Join(root, n.cgroupRoot())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		// A new v1 cpuset starts with no CPUs and memory nodes, and no
		// process could join it or its children.
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			if parent, err := os.ReadFile(filepath.Join(root, file)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, file), parent, 0o644); err != nil {
					return fmt.Errorf("initializing %s: %w", filepath.Join(dir, file), err)
				}
			}
		}
	}
	return nil
}

// startContainerd writes the node's containerd and CNI configuration and
// starts containerd inside the cluster's network namespace.
func (n *Node) startContainerd(ctx context.Context, logDir, cniBinDir string) error {
	cniConfDir := filepath.Join(n.dir, "cni", "net.d")
	for _, dir := range []string{cniConfDir, filepath.Join(n.dir, "root"), filepath.Join(n.dir, "state")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	conflist, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       nodeCNINetwork(n.index),
		"plugins": []any{map[string]any{
			"type":      "bridge",
			"bridge":    nodeBridge(n.index),
			"isGateway": true,
			// Pods only talk to each other and to the apiserver inside
			// the namespace; their source addresses stay visible.
			"ipMasq": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.dir, "cni", "ipam"),
			},
		}},
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding CNI config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cniConfDir, "10-bridge.conflist"), conflist, 0o644); err != nil {
		return fmt.Errorf("writing CNI config: %w", err)
	}
	configPath := filepath.Join(n.dir, "config.toml")
	if err := os.WriteFile(configPath, []byte(n.containerdConfig(cniBinDir, cniConfDir)), 0o644); err != nil {
		return fmt.Errorf("writing containerd config: %w", err)
	}
	p, err := startProcess("containerd-"+n.Name, filepath.Join(logDir, "containerd-"+n.Name+".log"),
		append(inNetns(), "containerd", "--config", configPath))
	if err != nil {
		return err
	}
	n.containerd = p
	return p.waitReady(ctx, "containerd socket of "+n.Name, func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", n.ContainerdSocket)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// containerdConfig keeps every path of this containerd inside the node's
// directory, so two nodes, and a containerd the machine may run itself, never
// meet. TOML basic strings share Go's quoting for the paths used here.
func (n *Node) containerdConfig(cniBinDir, cniConfDir string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # The machine refuses to lower oom_score_adj; without this every sandbox fails.
  restrict_oom_score_adj = true
  # Pod network namespaces stay in the run directory instead of /run/netns.
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %q
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`,
		filepath.Join(n.dir, "root"),
		filepath.Join(n.dir, "state"),
		n.ContainerdSocket,
		filepath.Join(n.dir, "opt"),
		PauseImage,
		filepath.Join(n.dir, "runc"),
		cniBinDir,
		cniConfDir,
	)
}

// startKubelet issues the node's credentials and starts its kubelet.
func (n *Node) startKubelet(cp *ControlPlane, binDir, logDir string) error {
	nodeDir := filepath.Dir(n.KubeletDir)
	pkiDir := filepath.Join(nodeDir, "pki")
	for _, dir := range []string{n.KubeletDir, pkiDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	// Serving certificate from the run's CA: kube-apiserver verifies it
	// (--kubelet-certificate-authority) when it proxies logs and exec.
	servingCert, servingKey, err := cp.issueFiles(pkiDir, "kubelet", certRequest{
		commonName: n.Name,
		dnsNames:   []string{n.Name},
		ips:        []net.IP{net.ParseIP(n.IP)},
	})
	if err != nil {
		return err
	}
	// The node identity the Node authorizer and NodeRestriction act on.
	clientCfg, err := cp.UserConfig("system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(nodeDir, "kubelet.kubeconfig")
	if err := writeKubeconfig(kubeconfig, clientCfg); err != nil {
		return err
	}

	cfg := kubeletv1beta1.KubeletConfiguration{
		TypeMeta:           metav1.TypeMeta{APIVersion: "kubelet.config.k8s.io/v1beta1", Kind: "KubeletConfiguration"},
		Address:            n.IP,
		Port:               10250,
		ReadOnlyPort:       0,
		HealthzBindAddress: n.IP,
		HealthzPort:        ptr.To[int32](10248),
		TLSCertFile:        servingCert,
		TLSPrivateKeyFile:  servingKey,
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: cp.CAFile},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
		},
		Authorization:            kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		ContainerRuntimeEndpoint: "unix://" + n.ContainerdSocket,
		CgroupDriver:             "cgroupfs",
		CgroupRoot:               n.cgroupRoot(),
		// Machines of this kind have cgroup v1 with a hybrid unified mount.
		FailCgroupV1: ptr.To(false),
		FailSwapOn:   ptr.To(false),
		PodLogsDir:   filepath.Join(nodeDir, "pod-logs"),
		// Flex volume plugins default to a fixed host path both nodes would share.
		VolumePluginDir: filepath.Join(nodeDir, "volume-plugins"),
		// Images cannot be pulled again, so garbage collection must never
		// delete them, and a full disk must not evict test pods.
		ImageGCHighThresholdPercent: ptr.To[int32](100),
		ImageGCLowThresholdPercent:  ptr.To[int32](99),
		EvictionHard: map[string]string{
			"memory.available":  "50Mi",
			"nodefs.available":  "1%",
			"imagefs.available": "1%",
		},
		SerializeImagePulls: ptr.To(false),
		// Shorter than the defaults so tests see status changes sooner.
		NodeStatusReportFrequency: metav1.Duration{Duration: 10 * time.Second},
		SyncFrequency:             metav1.Duration{Duration: 10 * time.Second},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encoding kubelet config: %w", err)
	}
	cfgPath := filepath.Join(nodeDir, "kubelet-config.json")
	if err := os.WriteFile(cfgPath, cfgJSON, 0o644); err != nil {
		return fmt.Errorf("writing kubelet config: %w", err)
	}
	p, err := startProcess("kubelet-"+n.Name, filepath.Join(logDir, "kubelet-"+n.Name+".log"), append(inNetns(),
		filepath.Join(binDir, "kubelet"),
		"--config="+cfgPath,
		"--kubeconfig="+kubeconfig,
		"--root-dir="+n.KubeletDir,
		"--cert-dir="+pkiDir,
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP,
		"--v=2",
	))
	if err != nil {
		return err
	}
	n.kubelet = p
	return nil
}

// importImage loads an image tarball into the node's containerd, in the
// namespace the CRI plugin serves.
func (n *Node) importImage(ctx context.Context, tarPath string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.ContainerdSocket, "--namespace", "k8s.io",
		"images", "import", tarPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("importing %s into %s: %w: %s", filepath.Base(tarPath), n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *Node) processes() []*process {
	var ps []*process
	for _, p := range []*process{n.containerd, n.kubelet} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// cniBinDir finds the CNI plugins: Debian installs them to /usr/lib/cni,
// upstream's default is /opt/cni/bin.
func cniBinDir() (string, error) {
	for _, dir := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Stat(filepath.Join(dir, "bridge")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no CNI bridge plugin in /usr/lib/cni or /opt/cni/bin; run make deps")
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// serviceCIDR holds the ClusterIPs; the first address is the
	// `kubernetes` Service that in-cluster clients dial.
	serviceCIDR = "10.96.0.0/16"
	// kubernetesServiceIP is the first address of serviceCIDR.
	kubernetesServiceIP = "10.96.0.1"
	// serviceAccountIssuer is what in-cluster clients expect as `iss`.
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	// adminUser is the identity of Config and Kubeconfig.
	adminUser = "certmint-admin"
	// kubeletClientUser is the identity kube-apiserver presents to kubelets
	// for logs, exec and port-forward.
	kubeletClientUser = "kube-apiserver-kubelet-client"

	startTimeout = 3 * time.Minute
	stopGrace    = 10 * time.Second
	// portRetries bounds how often a start is retried after losing a port race.
	portRetries = 3
)

// ControlPlaneOptions configures StartControlPlane. The zero value is a
// working control plane in a new temporary directory.
type ControlPlaneOptions struct {
	// Dir receives data, certificates, kubeconfigs and logs. Empty means a
	// new temporary directory, which Stop removes.
	Dir string
	// LogDir receives the components' logs. Empty means Dir/logs.
	LogDir string
	// BinDir holds kube-apiserver. Empty means Binaries.
	BinDir string
	// ExtraAPIServerArgs are appended to kube-apiserver's flags, so they
	// override the harness's ("--feature-gates=...").
	ExtraAPIServerArgs []string
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	Dir        string       // run directory
	Kubeconfig string       // admin kubeconfig path (system:masters)
	Config     *rest.Config // admin
	// CAFile is the PEM bundle of the one CA behind every certificate of
	// the run: the apiserver's serving certificate and all client certificates.
	CAFile string

	ca *authority
	// serviceAccountKeyFile signs tokens; kube-controller-manager needs it too.
	serviceAccountKeyFile string
	processes             []*process // in start order
	removeDir             bool
}

// network says where control-plane components run and how the harness
// reaches them. The zero value is loopback with random ports.
type network struct {
	// command, when set, is a prefix that runs a component inside the
	// cluster's network namespace.
	command []string
	// advertiseIP is the apiserver address the `kubernetes` Service points
	// at and the harness dials; empty means loopback with random ports and
	// no `kubernetes` endpoints.
	advertiseIP string
}

const (
	// Fixed ports for a control plane in its own network namespace, where
	// nothing else listens.
	nsEtcdClientPort = 2379
	nsEtcdPeerPort   = 2380
	nsAPIServerPort  = 6443
)

// StartControlPlane starts etcd + kube-apiserver (RBAC+Node authorizers, SA
// token issuer/signing keys, NodeRestriction, --allow-privileged) on loopback
// with random free ports in a fresh dir, and returns when /readyz is ok.
func StartControlPlane(ctx context.Context, opts ControlPlaneOptions) (*ControlPlane, error) {
	return startControlPlane(ctx, opts, network{})
}

// ControlPlaneForTest starts a control plane for t, stops it when t ends
// (after logging the end of each component's log if t failed) and fails t if
// it cannot start.
func ControlPlaneForTest(t testing.TB) *ControlPlane {
	t.Helper()
	binDir, err := Binaries(t.Context())
	if err != nil {
		t.Fatalf("finding Kubernetes binaries: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	cp, err := StartControlPlane(ctx, ControlPlaneOptions{Dir: t.TempDir(), BinDir: binDir})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for name, path := range cp.LogFiles() {
				t.Logf("last lines of %s log (%s):\n%s", name, path, LogTail(path, logTailLines))
			}
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return cp
}

func startControlPlane(ctx context.Context, opts ControlPlaneOptions, nw network) (*ControlPlane, error) {
	if opts.BinDir == "" {
		dir, err := Binaries(ctx)
		if err != nil {
			return nil, err
		}
		opts.BinDir = dir
	}
	cp := &ControlPlane{Dir: opts.Dir}
	if cp.Dir == "" {
		dir, err := os.MkdirTemp("", "certmint-controlplane-")
		if err != nil {
			return nil, fmt.Errorf("creating control plane directory: %w", err)
		}
		cp.Dir, cp.removeDir = dir, true
	}
	for attempt := 1; ; attempt++ {
		err := cp.start(ctx, opts, nw)
		if err == nil {
			return cp, nil
		}
		if stopErr := cp.stopProcesses(); stopErr != nil || !portClash(err) || nw.advertiseIP != "" || attempt == portRetries {
			return nil, errors.Join(err, stopErr, cp.Stop())
		}
	}
}

func (c *ControlPlane) start(ctx context.Context, opts ControlPlaneOptions, nw network) error {
	pkiDir := filepath.Join(c.Dir, "pki")
	logDir := opts.LogDir
	if logDir == "" {
		logDir = filepath.Join(c.Dir, "logs")
	}
	etcdDir := filepath.Join(c.Dir, "etcd")
	// A retry after a port clash starts from an empty etcd.
	if err := os.RemoveAll(etcdDir); err != nil {
		return fmt.Errorf("clearing etcd data: %w", err)
	}
	for _, dir := range []string{pkiDir, logDir, etcdDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}

	listenIP, dialIP := "127.0.0.1", "127.0.0.1"
	etcdPort, peerPort, apiPort := nsEtcdClientPort, nsEtcdPeerPort, nsAPIServerPort
	if nw.advertiseIP == "" {
		ports, err := freeLoopbackPorts(3)
		if err != nil {
			return err
		}
		etcdPort, peerPort, apiPort = ports[0], ports[1], ports[2]
	} else {
		listenIP, dialIP = "0.0.0.0", nw.advertiseIP
	}

	ca, err := newAuthority("certmint-e2e-ca")
	if err != nil {
		return err
	}
	c.ca = ca
	c.CAFile = filepath.Join(pkiDir, "ca.crt")
	if err := os.WriteFile(c.CAFile, ca.certPEM, 0o644); err != nil {
		return fmt.Errorf("writing CA: %w", err)
	}
	serving := certRequest{
		commonName: "kube-apiserver",
		dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips:        []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(kubernetesServiceIP)},
	}
	if nw.advertiseIP != "" {
		serving.ips = append(serving.ips, net.ParseIP(nw.advertiseIP))
	}
	servingCert, servingKey, err := c.issueFiles(pkiDir, "apiserver", serving)
	if err != nil {
		return err
	}
	kubeletClientCert, kubeletClientKey, err := c.issueFiles(pkiDir, "apiserver-kubelet-client", certRequest{commonName: kubeletClientUser})
	if err != nil {
		return err
	}
	saKey, saPub, err := newSigningKey()
	if err != nil {
		return err
	}
	c.serviceAccountKeyFile = filepath.Join(pkiDir, "service-account.key")
	if err := os.WriteFile(c.serviceAccountKeyFile, saKey, 0o600); err != nil {
		return fmt.Errorf("writing ServiceAccount signing key: %w", err)
	}
	saPubPath := filepath.Join(pkiDir, "service-account.pub")
	if err := os.WriteFile(saPubPath, saPub, 0o644); err != nil {
		return fmt.Errorf("writing ServiceAccount verification key: %w", err)
	}

	host := "https://" + net.JoinHostPort(dialIP, strconv.Itoa(apiPort))
	c.Config, err = c.clientConfig(host, adminUser, "system:masters")
	if err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Config); err != nil {
		return err
	}

	etcdURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(etcdPort))
	peerURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))
	etcd, err := startProcess("etcd", filepath.Join(logDir, "etcd.log"), append(append([]string{}, nw.command...),
		"etcd",
		"--name=default",
		"--data-dir="+etcdDir,
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		// The control plane lives as long as one test package; the
		// defaults tune for clusters that live for years.
		"--snapshot-count=10000",
		"--quota-backend-bytes=2147483648",
	))
	if err != nil {
		return err
	}
	c.processes = append(c.processes, etcd)

	apiArgs := append(append([]string{}, nw.command...),
		filepath.Join(opts.BinDir, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address="+listenIP,
		"--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+servingCert,
		"--tls-private-key-file="+servingKey,
		"--client-ca-file="+c.CAFile,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range="+serviceCIDR,
		"--service-account-issuer="+serviceAccountIssuer,
		"--service-account-key-file="+saPubPath,
		"--service-account-signing-key-file="+c.serviceAccountKeyFile,
		"--kubelet-client-certificate="+kubeletClientCert,
		"--kubelet-client-key="+kubeletClientKey,
		"--kubelet-certificate-authority="+c.CAFile,
		// Node names do not resolve; each kubelet listens on its InternalIP.
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
		"--v=1",
	)
	if nw.advertiseIP != "" {
		apiArgs = append(apiArgs, "--advertise-address="+nw.advertiseIP)
	} else {
		// Loopback cannot be a Service endpoint, and nothing in a
		// control-plane-only run could dial the Service anyway.
		apiArgs = append(apiArgs, "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none")
	}
	apiArgs = append(apiArgs, opts.ExtraAPIServerArgs...)

	// kube-apiserver retries etcd until it answers, so both start at once.
	apiserver, err := startProcess("kube-apiserver", filepath.Join(logDir, "kube-apiserver.log"), apiArgs)
	if err != nil {
		return err
	}
	c.processes = append(c.processes, apiserver)

	httpClient, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return fmt.Errorf("building readiness client: %w", err)
	}
	httpClient.Timeout = 2 * time.Second
	ready := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz returned %s", resp.Status)
		}
		return nil
	}
	return apiserver.waitReady(ctx, "kube-apiserver /readyz", ready, etcd)
}

// issueFiles issues a certificate from the run's CA into dir.
func (c *ControlPlane) issueFiles(dir, name string, req certRequest) (certPath, keyPath string, err error) {
	kp, err := c.ca.issue(req)
	if err != nil {
		return "", "", err
	}
	return kp.write(dir, name)
}

// UserConfig returns a client configuration that authenticates as user in
// groups with a client certificate from the run's CA, to act as a node
// ("system:node:NAME", "system:nodes") or a plain user in a test.
func (c *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	return c.clientConfig(c.Config.Host, user, groups...)
}

func (c *ControlPlane) clientConfig(host, user string, groups ...string) (*rest.Config, error) {
	kp, err := c.ca.issue(certRequest{commonName: user, organizations: groups})
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host: host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.ca.certPEM,
			CertData: kp.certPEM,
			KeyData:  kp.keyPEM,
		},
		// Tests create objects in bursts; the client-side default of 5 QPS
		// would make them wait for no reason.
		QPS:   100,
		Burst: 200,
	}, nil
}

// LogFiles maps component names to their log files.
func (c *ControlPlane) LogFiles() map[string]string {
	logs := make(map[string]string, len(c.processes))
	for _, p := range c.processes {
		logs[p.name] = p.logPath
	}
	return logs
}

// Stop stops kube-apiserver and etcd and, when StartControlPlane created
// the directory, removes it. It is safe to call more than once.
func (c *ControlPlane) Stop() error {
	errs := []error{c.stopProcesses()}
	if c.removeDir {
		errs = append(errs, os.RemoveAll(c.Dir))
		c.removeDir = false
	}
	return errors.Join(errs...)
}

func (c *ControlPlane) stopProcesses() error {
	var errs []error
	for i := len(c.processes) - 1; i >= 0; i-- {
		errs = append(errs, c.processes[i].stop(stopGrace))
	}
	c.processes = nil
	return errors.Join(errs...)
}

// writeKubeconfig writes cfg, with its credentials inline, as a kubeconfig
// file that kubectl and client-go read.
func writeKubeconfig(path string, cfg *rest.Config) error {
	const name = "certmint-e2e"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// Package stack_test runs the driver binary and the controller binary
// together against a real kube-apiserver and etcd (test/stack), and calls
// the driver over its CSI socket the way the kubelet does: what a volume's
// attributes ask for is checked in the certificate the controller issued,
// and bad input is checked in the gRPC status the kubelet would get.
package stack_test

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/certmint/certmint/test/e2e/cluster"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/stack"
)

const (
	workloadNS = "shop"
	workloadSA = "web"
	// caIssuer is a CA ClusterIssuer under the default policy, caIssuerCA
	// a selfSigned ClusterIssuer whose policy allows CA certificates, and
	// caIssuerPodIPs a CA ClusterIssuer that certifies pods' addresses in
	// podNetwork.
	caIssuer       = "shop-ca"
	caIssuerCA     = "shop-ca-for-cas"
	caIssuerPodIPs = "shop-ca-for-pod-ips"
	podNetwork     = "10.244.0.0/16"
)

var (
	// env is the shared stack; nil when the tests run with -short.
	env *stack.Stack
	// root is the root of caIssuer.
	root *x509.Certificate
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The stack applies manifests with controller-runtime's client, which
	// would otherwise complain that nobody set its logger.
	crlog.SetLogger(logr.Discard())
	if testing.Short() {
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 {
		// Failing, not skipping: a run that skips everything would
		// report ok.
		fmt.Fprintln(os.Stderr, "FAIL: these tests need root (the driver mounts tmpfs and bind mounts); run them as root, or with -short to skip them")
		os.Exit(1)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "certmint-stack-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, err = stack.Start(ctx, stack.Options{Dir: filepath.Join(dir, "stack"), LogDir: logDir,
		DriverFlags: []string{"--gc-interval=1s", "-v=2"}})
	if err == nil {
		err = setup(ctx)
	}
	if env != nil {
		defer env.Stop()
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "setting up the stack:", err)
	} else {
		code = m.Run()
	}
	if code != 0 && env != nil {
		for _, name := range []string{"controller.log", "driver.log", "driver-restarted.log"} {
			fmt.Fprintf(os.Stderr, "--- %s:\n%s\n", name, cluster.LogTail(filepath.Join(logDir, name), 60))
		}
	}
	return code
}

func setup(ctx context.Context) error {
	if _, err := env.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := env.Admin.CoreV1().ServiceAccounts(workloadNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: workloadSA}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	var err error
	if root, err = deploy.CAClusterIssuer(ctx, env.CP.Config, caIssuer); err != nil {
		return err
	}
	if _, err = deploy.CAClusterIssuerWithPolicy(ctx, env.CP.Config, caIssuerPodIPs, map[string]any{
		"podIPs": map[string]any{"cidrs": []any{podNetwork}},
	}); err != nil {
		return err
	}
	return deploy.SelfSignedClusterIssuer(ctx, env.CP.Config, caIssuerCA, map[string]any{
		"allowCA": true,
	})
}

func requireEnv(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip("needs kube-apiserver, etcd and root; runs without -short")
	}
}

var podSeq atomic.Int64

// newVolume creates a pod of workloadSA on the driver's node.
func newVolume(t *testing.T, name string) stack.Volume {
	t.Helper()
	v, err := env.NewVolume(t.Context(), workloadNS, workloadSA, fmt.Sprintf("%s-%d", name, podSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

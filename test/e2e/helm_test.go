package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

// TestCertmintHelm installs certmint with the chart in deploy/charts/certmint
// and a real helm, after linting the chart, and checks that pods on
// different nodes get certificates and authenticate each other with them.
func TestCertmintHelm(t *testing.T) {
	if len(testCluster.Nodes) < 2 {
		t.Fatalf("cluster has %d nodes; the test needs two", len(testCluster.Nodes))
	}
	f := framework.New(t, testCluster)
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(root, "deploy", "charts", "certmint")
	if out, err := runHelm(t, "lint", "--strict", chart); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	start := time.Now()
	if err := deploy.Images(t.Context(), testCluster); err != nil {
		t.Fatal(err)
	}
	nodes := testCluster.NodesDir
	out, err := runHelm(t, "install", "certmint", chart, "--namespace", deploy.Namespace, "--create-namespace",
		"--set-string", "driver.image.tag="+deploy.Tag,
		"--set-string", "controller.image.tag="+deploy.Tag,
		// The harness's per-node kubelet dirs, as in the kustomize overlay.
		"--set-string", "driver.kubeletHostDir="+nodes,
		"--set-string", "driver.kubeletDir="+deploy.KubeletDir(nodes, "$(NODE_NAME)"),
		// Pod IP SANs, as the kustomize overlay adds deploy/podips.
		"--set", "driver.podIPs=true")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		uninstall(t, f, func(ctx context.Context) *exec.Cmd {
			return helmCommand(ctx, t, "uninstall", "certmint", "--namespace", deploy.Namespace)
		})
	})
	waitCertmintRunning(t, f)
	t.Logf("certmint installed with helm and running in %s", time.Since(start).Round(100*time.Millisecond))

	if _, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, caIssuer); err != nil {
		t.Fatal(err)
	}
	server, _ := startMTLSPair(t, f)
	t.Run("a client pod on node 2 and a server pod on node 1 verify each other over mTLS", func(t *testing.T) {
		checkMTLS(t, f.WithT(t), server)
	})
	t.Run("the driver cannot read Secrets and the controller may approve and sign only for certmint signers", func(t *testing.T) {
		checkRBAC(t, f.WithT(t))
	})
	// The pods go before the driver does, or their volumes could not be
	// torn down.
	deletePods(t, f, "server", "client")
}

var helmOnce struct {
	sync.Once
	dir string
	err error
}

// helmDir returns the directory of the pinned helm, which hack/helm.sh builds
// once per version.
func helmDir(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		root, err := repo.Root()
		if err != nil {
			helmOnce.err = err
			return
		}
		out, err := exec.Command(filepath.Join(root, "hack", "helm.sh")).Output()
		if err != nil {
			helmOnce.err = err
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		helmOnce.dir = lines[len(lines)-1]
	})
	if helmOnce.err != nil {
		t.Fatalf("building helm with hack/helm.sh: %v", helmOnce.err)
	}
	return helmOnce.dir
}

// helmCommand returns a helm command with the cluster's admin kubeconfig.
func helmCommand(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(helmDir(t), "helm"), append([]string{"--kubeconfig=" + testCluster.Kubeconfig}, args...)...)
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := helmCommand(ctx, t, args...).CombinedOutput()
	return string(out), err
}

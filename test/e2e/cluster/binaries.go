package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/certmint/certmint/test/e2e/internal/repo"
)

// KubeBinEnv names the environment variable that points at a directory with
// prebuilt Kubernetes binaries, skipping hack/kube-binaries.sh.
const KubeBinEnv = "CERTMINT_KUBE_BIN"

var binaries struct {
	sync.Mutex
	dir string
}

// Binaries returns the directory holding the pinned Kubernetes binaries:
// $CERTMINT_KUBE_BIN when set, else what hack/kube-binaries.sh builds (or
// finds cached). Parallel callers, in this process or others, share one build.
func Binaries(ctx context.Context) (string, error) {
	if dir := os.Getenv(KubeBinEnv); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
			return "", fmt.Errorf("%s=%s holds no kube-apiserver: %w", KubeBinEnv, dir, err)
		}
		return dir, nil
	}
	binaries.Lock()
	defer binaries.Unlock()
	if binaries.dir != "" {
		return binaries.dir, nil
	}
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "kube-binaries.sh"))
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building Kubernetes binaries with hack/kube-binaries.sh: %w\n%s", err, stderr.String())
	}
	dir := lastLine(stdout.String())
	if dir == "" {
		return "", errors.New("hack/kube-binaries.sh printed no directory")
	}
	binaries.dir = dir
	return dir, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

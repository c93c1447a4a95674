// Package image turns a Go main package into a container image without a
// container engine or registry: one static binary in one layer, written as a
// docker-archive tarball that `ctr images import` reads. The project's own
// images (driver, controller, test apps, pause) are all built this way, and
// cluster.(*Cluster).LoadImage puts them into each node's containerd.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/certmint/certmint/test/e2e/internal/repo"
)

// Build compiles the main package pkgPath (an import path such as
// "github.com/certmint/certmint/cmd/csi-driver", or one relative to the
// repository root such as "./cmd/csi-driver") as a static binary and writes an
// image named imageName (e.g. "certmint/csi-driver:e2e") whose entrypoint is
// that binary, installed as /<last element of pkgPath>. It returns the path of
// the tarball, under the repository's _output/images.
//
// Pods use such images with imagePullPolicy Never (or IfNotPresent), since
// nothing can be pulled.
func Build(ctx context.Context, pkgPath, imageName string) (string, error) {
	tag, err := name.NewTag(imageName)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w", imageName, err)
	}
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	outDir := filepath.Join(root, "_output", "images")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", outDir, err)
	}
	// Parallel test packages may build the same image; each works in its
	// own temporary directory and renames the finished tarball into place.
	work, err := os.MkdirTemp(outDir, ".build-")
	if err != nil {
		return "", fmt.Errorf("creating build directory: %w", err)
	}
	defer os.RemoveAll(work)

	binName := path.Base(pkgPath)
	binPath := filepath.Join(work, binName)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", binPath, pkgPath)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkgPath, err, out)
	}

	img, err := fromBinary(binPath, binName)
	if err != nil {
		return "", fmt.Errorf("assembling image %s: %w", imageName, err)
	}
	tmpTar := filepath.Join(work, "image.tar")
	if err := tarball.WriteToFile(tmpTar, tag, img); err != nil {
		return "", fmt.Errorf("writing image %s: %w", imageName, err)
	}
	tarPath := filepath.Join(outDir, fileName(imageName)+".tar")
	if err := os.Rename(tmpTar, tarPath); err != nil {
		return "", fmt.Errorf("moving image into place: %w", err)
	}
	return tarPath, nil
}

// fromBinary builds a one-layer image holding the binary at /binName and an
// empty /tmp, which Go programs use for temporary files.
func fromBinary(binPath, binName string) (v1.Image, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, fmt.Errorf("reading binary: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		hdr  tar.Header
		body []byte
	}{
		{hdr: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
		{hdr: tar.Header{Name: binName, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, body: bin},
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, fmt.Errorf("writing layer entry %s: %w", e.hdr.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("writing layer entry %s: %w", e.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer: %w", err)
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("creating layer: %w", err)
	}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS:           "linux",
		Architecture: runtime.GOARCH,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{"/" + binName},
			Env:        []string{"PATH=/"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("setting image config: %w", err)
	}
	return mutate.AppendLayers(base, layer)
}

// fileName turns an image name into something safe as a file name.
func fileName(imageName string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(imageName)
}

// Package image turns a Go main package, or any static binary, into a
// container image without a container engine or registry: the binary in one
// layer, written as a docker-archive tarball that `ctr images import` reads.
// The project's own images (driver, controller, test apps, pause) are built
// this way from their packages, and third-party servers the tests run (an
// Ingress controller) from their binaries; cluster.(*Cluster).LoadImage puts
// them into each node's containerd. The binaries are compiled and the images
// assembled as `make images` does (internal/images), for this machine's
// platform only. It knows nothing of clusters.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/certmint/certmint/internal/images"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

// layoutVersion is part of every tarball's cache key. Bump it when the image
// images.NewImage makes changes for the same binary (another file, another
// config), so that no tarball of the old layout is reused.
const layoutVersion = "1"

// Build compiles the main package pkgPath (an import path such as
// "github.com/certmint/certmint/cmd/csi-driver", or one relative to the
// repository root such as "./cmd/csi-driver") as a static binary and makes
// it an image named imageName with FromBinary, installed as /<last element
// of pkgPath>. It returns the path of the tarball.
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
	outDir, err := outputDir(root)
	if err != nil {
		return "", err
	}
	// Parallel test packages may build the same package; each compiles in
	// its own temporary directory.
	work, err := os.MkdirTemp(outDir, ".build-")
	if err != nil {
		return "", fmt.Errorf("creating build directory: %w", err)
	}
	defer os.RemoveAll(work)

	if err := images.Compile(ctx, images.CompileOptions{
		Packages: []string{pkgPath},
		Platform: platform(),
		OutDir:   work,
		Dir:      root,
	}); err != nil {
		return "", err
	}
	binPath := filepath.Join(work, path.Base(pkgPath))
	return writeImage(ctx, outDir, binPath, tag)
}

// FromBinary writes an image named imageName (e.g. "certmint/traefik:e2e")
// whose entrypoint is the static binary at binPath, installed as /<base name
// of binPath> next to an empty /tmp, and returns the path of the tarball,
// under the repository's _output/images.
//
// Tarballs are cached by the binary's content and the image name: when a
// tarball for both exists it is returned as it is, so a large binary that
// has not changed costs one read to hash it. Writing another binary under
// the same image name removes the tarball of the previous one. The binary
// must not change while FromBinary runs.
func FromBinary(ctx context.Context, binPath, imageName string) (string, error) {
	tag, err := name.NewTag(imageName)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w", imageName, err)
	}
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	outDir, err := outputDir(root)
	if err != nil {
		return "", err
	}
	return writeImage(ctx, outDir, binPath, tag)
}

func outputDir(root string) (string, error) {
	dir := filepath.Join(root, "_output", "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	return dir, nil
}

// writeImage is FromBinary writing to outDir.
func writeImage(ctx context.Context, outDir, binPath string, tag name.Tag) (string, error) {
	imageName := tag.String()
	binName := filepath.Base(binPath)
	key, err := cacheKey(binPath, binName, imageName)
	if err != nil {
		return "", err
	}
	prefix := fileName(imageName)
	tarPath := filepath.Join(outDir, prefix+"-"+key+".tar")
	// Only a complete tarball has this name (it is renamed into place), so
	// one that exists is one to reuse.
	if _, err := os.Stat(tarPath); err == nil {
		return tarPath, nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}

	img, err := images.NewImage(images.ImageOptions{Binary: binPath, Platform: platform()})
	if err != nil {
		return "", fmt.Errorf("assembling image %s: %w", imageName, err)
	}
	// Parallel writers of the same image each write their own temporary
	// file and rename it into place; both hold the same bytes.
	tmp, err := os.CreateTemp(outDir, ".image-*.tar")
	if err != nil {
		return "", fmt.Errorf("writing image %s: %w", imageName, err)
	}
	defer os.Remove(tmp.Name())
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("writing image %s: %w", imageName, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing image %s: %w", imageName, err)
	}
	if err := os.Rename(tmp.Name(), tarPath); err != nil {
		return "", fmt.Errorf("moving image into place: %w", err)
	}
	if err := removeStale(outDir, prefix, tarPath); err != nil {
		return "", err
	}
	return tarPath, nil
}

// cacheKey identifies the image writeImage makes: the layout, the image name
// and the binary's name and content.
func cacheKey(binPath, binName, imageName string) (string, error) {
	f, err := os.Open(binPath)
	if err != nil {
		return "", fmt.Errorf("reading binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	// NUL cannot occur in an image or file name, so the fields cannot run
	// into each other.
	h.Write([]byte(layoutVersion + "\x00" + imageName + "\x00" + binName + "\x00"))
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading binary: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// removeStale removes the tarballs of other binaries for the image whose
// file names start with prefix, keeping keep.
func removeStale(outDir, prefix, keep string) error {
	stale := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `-[0-9a-f]{16}\.tar$`)
	entries, err := os.ReadDir(outDir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", outDir, err)
	}
	for _, e := range entries {
		p := filepath.Join(outDir, e.Name())
		if p == keep || !stale.MatchString(e.Name()) {
			continue
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("removing stale image %s: %w", p, err)
		}
	}
	return nil
}

// platform is the nodes' platform: the harness's cluster runs on this
// machine.
func platform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// fileName turns an image name into something safe as a file name.
func fileName(imageName string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(imageName)
}

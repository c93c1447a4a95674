// Package image turns a Go main package, or any static binary, into a
// container image without a container engine or registry: the binary in one
// layer, written as a docker-archive tarball that `ctr images import` reads.
// The project's own images (driver, controller, test apps, pause) are built
// this way from their packages, and third-party servers the tests run (an
// Ingress controller) from their binaries; cluster.(*Cluster).LoadImage puts
// them into each node's containerd. It knows nothing of clusters.
package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/certmint/certmint/test/e2e/internal/repo"
)

// layoutVersion is part of every tarball's cache key. Bump it when the image
// fromBinary makes changes for the same binary (another file, another
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

	binPath := filepath.Join(work, path.Base(pkgPath))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", binPath, pkgPath)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkgPath, err, out)
	}
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

	img, err := imageOf(binPath, binName)
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

// imageOf is a one-layer image holding the binary at /binName and an empty
// /tmp, which Go programs use for temporary files. The layer is streamed
// from the binary whenever it is read, and compressed once.
func imageOf(binPath, binName string) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		f, err := os.Open(binPath)
		if err != nil {
			return nil, fmt.Errorf("reading binary: %w", err)
		}
		r, w := io.Pipe()
		go func() {
			defer f.Close()
			// A reader that stops early closes r, which ends this write.
			w.CloseWithError(writeLayer(w, f, binName))
		}()
		return r, nil
	}, tarball.WithCompressedCaching)
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

// writeLayer writes the layer's tar stream: /tmp and bin as /binName.
func writeLayer(w io.Writer, bin *os.File, binName string) error {
	fi, err := bin.Stat()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}); err != nil {
		return fmt.Errorf("writing layer entry tmp/: %w", err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: binName, Typeflag: tar.TypeReg, Mode: 0o755, Size: fi.Size()}); err != nil {
		return fmt.Errorf("writing layer entry %s: %w", binName, err)
	}
	if _, err := io.Copy(tw, bin); err != nil {
		return fmt.Errorf("writing layer entry %s: %w", binName, err)
	}
	return tw.Close()
}

// fileName turns an image name into something safe as a file name.
func fileName(imageName string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(imageName)
}

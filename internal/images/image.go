package images

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageOptions describe the single-platform image NewImage makes around one
// static binary.
type ImageOptions struct {
	// Binary is the path of the binary, installed as /<its base name> and
	// made the entrypoint. It is read whenever the image's layer is, so it
	// must stay in place and unchanged until the image is written. Required.
	Binary string
	// Platform is the binary's; its OS and Architecture are required.
	Platform v1.Platform
	// User is who the entrypoint runs as ("uid:gid"); empty is root.
	User string
	// Created is the image's creation time; zero leaves the zero time,
	// which registries and runtimes show as unknown.
	Created time.Time
	// Labels are the image config's labels; nil sets none.
	Labels map[string]string
}

// NewImage makes an image of one layer holding the binary and an empty /tmp,
// which Go programs use for temporary files and a scratch image lacks. The
// layer depends on the binary alone (its files are dated at the Unix epoch),
// so images of the same binary share it; it is compressed once and kept in
// memory.
func NewImage(opts ImageOptions) (v1.Image, error) {
	var problems []string
	if opts.Binary == "" {
		problems = append(problems, "no binary")
	}
	if opts.Platform.OS == "" || opts.Platform.Architecture == "" {
		problems = append(problems, fmt.Sprintf("platform %q needs an OS and an architecture", opts.Platform.String()))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("making an image: %s", strings.Join(problems, "; "))
	}
	binName := filepath.Base(opts.Binary)

	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		f, err := os.Open(opts.Binary)
		if err != nil {
			return nil, fmt.Errorf("reading binary: %w", err)
		}
		r, w := io.Pipe()
		go func() {
			// Closing a file only read loses nothing.
			defer func() { _ = f.Close() }()
			// A reader that stops early closes r, which ends this write.
			w.CloseWithError(writeLayer(w, f, binName))
		}()
		return r, nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("creating layer of %s: %w", opts.Binary, err)
	}
	created := v1.Time{Time: opts.Created}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS:           opts.Platform.OS,
		Architecture: opts.Platform.Architecture,
		Created:      created,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{"/" + binName},
			Env:        []string{"PATH=/"},
			User:       opts.User,
			Labels:     opts.Labels,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("setting image config: %w", err)
	}
	base = mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{Created: created}})
	if err != nil {
		return nil, fmt.Errorf("adding layer of %s: %w", opts.Binary, err)
	}
	return img, nil
}

// writeLayer writes the layer's tar stream: /tmp and bin as /binName.
func writeLayer(w io.Writer, bin *os.File, binName string) error {
	fi, err := bin.Stat()
	if err != nil {
		return fmt.Errorf("reading binary: %w", err)
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

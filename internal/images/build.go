package images

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Keys of the OCI annotations (and labels) Build sets, from the image-spec's
// annotations.md.
const (
	annotationCreated  = "org.opencontainers.image.created"
	annotationSource   = "org.opencontainers.image.source"
	annotationVersion  = "org.opencontainers.image.version"
	annotationRevision = "org.opencontainers.image.revision"
)

// BuildOptions say which images Build makes, for which platforms, and what
// the images record of their origin.
type BuildOptions struct {
	// Images to build. Required.
	Images []Image
	// Platforms each image is built for. Required.
	Platforms []v1.Platform
	// WorkDir receives the binaries, one directory per platform. The
	// indexes Build returns read them until they are written or pushed.
	// Required.
	WorkDir string
	// Source is the URL of the source repository
	// (org.opencontainers.image.source); empty records none.
	Source string
	// Revision is the commit the images are built from
	// (org.opencontainers.image.revision); empty records none.
	Revision string
	// Version is the images' version, their tag
	// (org.opencontainers.image.version); empty records none.
	Version string
	// Created is the images' creation time; zero is the Unix epoch. Never
	// the time of the build, which would make every build's digests
	// differ: the commit's time is the usual choice.
	Created time.Time
	// Dir is the directory go build runs in, inside the module; empty is
	// the current directory.
	Dir string
}

// Built is one image, built for every platform.
type Built struct {
	Image Image
	// Index holds one manifest per platform, in BuildOptions.Platforms'
	// order, each with its platform in its descriptor.
	Index v1.ImageIndex
}

// Build compiles every image's package for every platform and returns an
// OCI image index per image, in the order of opts.Images. What opts say of
// the images' origin is in each image's config labels and in the index's
// annotations, with the same keys.
func Build(ctx context.Context, opts BuildOptions) ([]Built, error) {
	var problems []string
	if len(opts.Images) == 0 {
		problems = append(problems, "no images")
	}
	if len(opts.Platforms) == 0 {
		problems = append(problems, "no platforms")
	}
	if opts.WorkDir == "" {
		problems = append(problems, "no work directory")
	}
	for _, img := range opts.Images {
		if path.Base(img.Package) != img.Name {
			problems = append(problems, fmt.Sprintf("image %s is built from %s, whose binary is not named %s", img.Name, img.Package, img.Name))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("building images: %s", strings.Join(problems, "; "))
	}

	pkgs := make([]string, 0, len(opts.Images))
	for _, img := range opts.Images {
		pkgs = append(pkgs, img.Package)
	}
	binDirs := make([]string, len(opts.Platforms))
	for i, p := range opts.Platforms {
		binDirs[i] = filepath.Join(opts.WorkDir, p.OS+"_"+p.Architecture)
		if err := Compile(ctx, CompileOptions{Packages: pkgs, Platform: p, OutDir: binDirs[i], Dir: opts.Dir}); err != nil {
			return nil, err
		}
	}

	created := opts.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()
	labels := map[string]string{annotationCreated: created.Format(time.RFC3339)}
	for k, v := range map[string]string{
		annotationSource:   opts.Source,
		annotationRevision: opts.Revision,
		annotationVersion:  opts.Version,
	} {
		if v != "" {
			labels[k] = v
		}
	}

	built := make([]Built, 0, len(opts.Images))
	for _, img := range opts.Images {
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		for i, p := range opts.Platforms {
			image, err := NewImage(ImageOptions{
				Binary:   filepath.Join(binDirs[i], img.Name),
				Platform: p,
				User:     img.User,
				Created:  created,
				Labels:   labels,
			})
			if err != nil {
				return nil, fmt.Errorf("image %s for %s: %w", img.Name, p.String(), err)
			}
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
				Add:        image,
				Descriptor: v1.Descriptor{Platform: &p},
			})
		}
		// The index's own annotations are what registries show of a
		// multi-platform image, which has no config of its own.
		annotated, ok := mutate.Annotations(idx, labels).(v1.ImageIndex)
		if !ok {
			return nil, fmt.Errorf("annotating the index of %s: not an index", img.Name)
		}
		built = append(built, Built{Image: img, Index: annotated})
	}
	return built, nil
}

package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// annotationRefName names an index's entry in an image layout's index.json:
// the tag, which `skopeo copy oci:<dir>:<tag>` and the like look up.
const annotationRefName = "org.opencontainers.image.ref.name"

// WriteLayout writes idx as the OCI image layout dir, holding only idx,
// tagged tag. A layout already at dir is replaced whole, and an interrupted
// write leaves the old one.
func WriteLayout(dir, tag string, idx v1.ImageIndex) error {
	if tag == "" {
		return fmt.Errorf("writing layout %s: no tag", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+"-")
	if err != nil {
		return fmt.Errorf("writing layout %s: %w", dir, err)
	}
	// After the rename there is nothing to remove; before it, a partial
	// layout is litter whichever error comes first.
	defer func() { _ = os.RemoveAll(tmp) }()
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("writing layout %s: %w", dir, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotationRefName: tag})); err != nil {
		return fmt.Errorf("writing layout %s: %w", dir, err)
	}
	// MkdirTemp made the directory private; a layout is for anyone to read.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("writing layout %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the old layout %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("moving layout %s into place: %w", dir, err)
	}
	return nil
}

// PushOptions say where Push pushes to.
type PushOptions struct {
	// Registry is a registry host and an optional path, such as
	// "registry.example.com/certmint"; each image goes to
	// Repository(Registry, image). Required.
	Registry string
	// Tag is the tag each image is pushed under. Required.
	Tag string
	// Keychain finds credentials for the registry; nil is
	// authn.DefaultKeychain, which reads the Docker config
	// ($DOCKER_CONFIG/config.json, ~/.docker/config.json) and its
	// credential helpers, and else pushes anonymously.
	Keychain authn.Keychain
}

// Push pushes each built image's index, with its manifests and blobs, and
// returns the digests pushed, in built's order.
func Push(ctx context.Context, built []Built, opts PushOptions) ([]name.Digest, error) {
	if opts.Registry == "" || opts.Tag == "" {
		return nil, errors.New("pushing images: a registry and a tag are required")
	}
	keychain := opts.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	digests := make([]name.Digest, 0, len(built))
	for _, b := range built {
		repo := Repository(opts.Registry, b.Image)
		tag, err := name.NewTag(repo + ":" + opts.Tag)
		if err != nil {
			return nil, fmt.Errorf("image name %s:%s: %w", repo, opts.Tag, err)
		}
		if err := remote.WriteIndex(tag, b.Index, remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain)); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", tag, err)
		}
		h, err := b.Index.Digest()
		if err != nil {
			return nil, fmt.Errorf("digest of %s: %w", tag, err)
		}
		digests = append(digests, tag.Context().Digest(h.String()))
	}
	return digests, nil
}

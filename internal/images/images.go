// Package images builds certmint's container images from its Go packages
// without a container engine: each image is one static binary at /<name>
// next to an empty /tmp, compiled for each platform and put in an OCI image
// index. Builds are reproducible: the same source, tag and toolchain give the
// same digests. It writes the indexes as OCI image layouts or pushes them to
// a registry, and renders the kustomize base and the Helm chart's values
// pointing at them.
//
// `make images` and `make manifests` run it through hack/images; the
// end-to-end harness (test/e2e/image) builds its single-platform images with
// Compile and NewImage. It knows nothing of clusters or of the tests.
package images

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultRegistry is the repository prefix deploy/ and the chart name their
// images with (certmint/csi-driver, certmint/controller).
const DefaultRegistry = "certmint"

// SourceURL is certmint's source repository, which its images name as their
// source.
const SourceURL = "https://github.com/certmint/certmint"

// Image is one of certmint's images.
type Image struct {
	// Name is the last element of the image's repository, and the name of
	// its binary, its entrypoint: /<Name>.
	Name string
	// Package is the main package built into it: an import path, or a path
	// relative to the directory the build runs in. Its last element must be
	// Name, which go build names the binary after.
	Package string
	// User is who the entrypoint runs as ("uid:gid"); empty is root.
	User string
	// ChartKey is the top-level key of the image's settings in the chart's
	// values: <ChartKey>.image.repository and <ChartKey>.image.tag.
	ChartKey string
}

// Release returns the images certmint ships, those `make images` builds.
func Release() []Image {
	return []Image{
		// The driver mounts volumes into the kubelet's pod directories,
		// which takes root (and a privileged container).
		{Name: "csi-driver", Package: "github.com/certmint/certmint/cmd/csi-driver", ChartKey: "driver"},
		// The controller needs no privilege; deploy/ and the chart run it as
		// this user too, and the image says so for anyone who does not.
		{Name: "controller", Package: "github.com/certmint/certmint/cmd/controller", User: "65532:65532", ChartKey: "controller"},
	}
}

// ReleasePlatforms returns the platforms `make images` builds for.
func ReleasePlatforms() []v1.Platform {
	return []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
	}
}

// Repository is the repository of img under registry, a registry host and
// an optional path ("registry.example.com/certmint"); an empty registry is
// DefaultRegistry.
func Repository(registry string, img Image) string {
	if registry == "" {
		registry = DefaultRegistry
	}
	return registry + "/" + img.Name
}

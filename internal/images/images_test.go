package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// workRoot holds the binaries of the builds the tests share; TestMain
// removes it.
var workRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "certmint-images-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The release images, built once per run: cross-compiling both binaries for
// two platforms is most of what these tests cost.
var release struct {
	once  sync.Once
	built []Built
	err   error
}

// releaseOrigin is what the release images of the tests record of their
// origin.
var releaseOrigin = BuildOptions{
	Source:   SourceURL,
	Revision: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
	Version:  "v0.1.0-test",
	Created:  time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
}

// releaseAnnotations are the annotations releaseOrigin gives.
var releaseAnnotations = map[string]string{
	annotationSource:   SourceURL,
	annotationRevision: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
	annotationVersion:  "v0.1.0-test",
	annotationCreated:  "2025-01-02T03:04:05Z",
}

func buildRelease(t *testing.T) []Built {
	t.Helper()
	if testing.Short() {
		t.Skip("compiles certmint's binaries for two platforms")
	}
	release.once.Do(func() {
		opts := releaseOrigin
		opts.Images = Release()
		opts.Platforms = ReleasePlatforms()
		opts.WorkDir = filepath.Join(workRoot, "release")
		// Not the test's context: the build outlives the first test.
		release.built, release.err = Build(context.Background(), opts)
	})
	if release.err != nil {
		t.Fatal(release.err)
	}
	return release.built
}

// hello is an image of the small testdata package, cheap to build.
var hello = Image{Name: "hello", Package: "./testdata/hello", User: "1000:1000"}

// wantImage is what an image holds and runs, written out here rather than
// taken from the Image it was built from, which is what is under test.
type wantImage struct {
	// binary is the file in the layer, run as /<binary>.
	binary string
	// user the binary runs as; empty is root.
	user string
}

var wantHello = wantImage{binary: "hello", user: "1000:1000"}

func buildHello(t *testing.T, opts BuildOptions) v1.ImageIndex {
	t.Helper()
	opts.Images = []Image{hello}
	opts.Platforms = ReleasePlatforms()
	opts.WorkDir = t.TempDir()
	built, err := Build(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 {
		t.Fatalf("Build returned %d images, want 1", len(built))
	}
	return built[0].Index
}

func TestReleaseImagesPushedToARegistryHoldTheirBinaryForEachPlatform(t *testing.T) {
	built := buildRelease(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	reg := strings.TrimPrefix(srv.URL, "http://") + "/certmint"
	tag := releaseOrigin.Version

	digests, err := Push(t.Context(), built, PushOptions{Registry: reg, Tag: tag})
	if err != nil {
		t.Fatal(err)
	}
	// The driver mounts, which takes root; the controller need not and
	// does not run as root.
	want := map[string]wantImage{
		"csi-driver": {binary: "csi-driver"},
		"controller": {binary: "controller", user: "65532:65532"},
	}
	if len(digests) != len(want) {
		t.Fatalf("Push returned %d digests, want one per image: %v", len(digests), digests)
	}
	for i, repo := range []string{"csi-driver", "controller"} {
		t.Run(repo, func(t *testing.T) {
			ref, err := name.NewTag(reg + "/" + repo + ":" + tag)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := remote.Index(ref, remote.WithContext(t.Context()))
			if err != nil {
				t.Fatalf("pulling %s: %v", ref, err)
			}
			h, err := idx.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if want := digests[i].DigestStr(); h.String() != want {
				t.Errorf("%s is %s, want the digest Push returned, %s", ref, h, want)
			}
			checkIndex(t, idx, want[repo], releaseAnnotations)
		})
	}
}

// checkIndex checks an image index as `make images` must make it: one
// image per release platform, each holding the binary compiled for it, and
// the index and each image's config saying where they come from.
func checkIndex(t *testing.T, idx v1.ImageIndex, want wantImage, annotations map[string]string) {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIImageIndex {
		t.Errorf("index has media type %s, want %s", m.MediaType, types.OCIImageIndex)
	}
	if !maps.Equal(m.Annotations, annotations) {
		t.Errorf("index annotations = %v, want %v", m.Annotations, annotations)
	}
	var platforms []string
	for _, desc := range m.Manifests {
		if desc.Platform == nil {
			t.Errorf("manifest %s has no platform", desc.Digest)
			continue
		}
		platforms = append(platforms, desc.Platform.String())
		image, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatalf("image for %s: %v", desc.Platform, err)
		}
		checkImage(t, image, want, *desc.Platform, annotations)
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Errorf("index has platforms %v, want %v", platforms, want)
	}
}

// elfMachines are the ELF machines of the release platforms' binaries.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func checkImage(t *testing.T, image v1.Image, want wantImage, platform v1.Platform, annotations map[string]string) {
	t.Helper()
	mt, err := image.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	if mt != types.OCIManifestSchema1 {
		t.Errorf("%s: manifest has media type %s, want %s", platform, mt, types.OCIManifestSchema1)
	}
	cfg, err := image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != platform.OS || cfg.Architecture != platform.Architecture {
		t.Errorf("%s: config is for %s/%s", platform, cfg.OS, cfg.Architecture)
	}
	if entrypoint := []string{"/" + want.binary}; !slices.Equal(cfg.Config.Entrypoint, entrypoint) {
		t.Errorf("%s: entrypoint = %q, want %q", platform, cfg.Config.Entrypoint, entrypoint)
	}
	if cfg.Config.User != want.user {
		t.Errorf("%s: user = %q, want %q", platform, cfg.Config.User, want.user)
	}
	// The labels say what the index's annotations say, for tools that read
	// only an image's config.
	if !maps.Equal(cfg.Config.Labels, annotations) {
		t.Errorf("%s: labels = %v, want %v", platform, cfg.Config.Labels, annotations)
	}
	if got := cfg.Created.UTC().Format(time.RFC3339); got != annotations[annotationCreated] {
		t.Errorf("%s: created %s, want %s", platform, got, annotations[annotationCreated])
	}

	files := layerFiles(t, image)
	tmp, ok := files["tmp/"]
	if !ok || tmp.hdr.Typeflag != tar.TypeDir || tmp.hdr.Mode != 0o1777 {
		t.Errorf("%s: layer has no directory tmp/ of mode 1777: %v", platform, tmp.hdr)
	}
	bin, ok := files[want.binary]
	if !ok {
		t.Fatalf("%s: layer has no %s, only %v", platform, want.binary, slices.Sorted(maps.Keys(files)))
	}
	if len(files) != 2 {
		t.Errorf("%s: layer holds %v, want only tmp/ and %s", platform, slices.Sorted(maps.Keys(files)), want.binary)
	}
	if bin.hdr.Mode != 0o755 {
		t.Errorf("%s: %s has mode %o, want 755", platform, want.binary, bin.hdr.Mode)
	}
	f, err := elf.NewFile(bytes.NewReader(bin.body))
	if err != nil {
		t.Fatalf("%s: %s is no ELF binary: %v", platform, want.binary, err)
	}
	if machine := elfMachines[platform.Architecture]; f.Machine != machine {
		t.Errorf("%s: %s is built for %s, want %s", platform, want.binary, f.Machine, machine)
	}
	// The image has no dynamic loader or C library to run anything else.
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: %s is dynamically linked", platform, want.binary)
		}
	}
}

type layerFile struct {
	hdr  *tar.Header
	body []byte
}

// layerFiles reads the image's only layer.
func layerFiles(t *testing.T, image v1.Image) map[string]layerFile {
	t.Helper()
	layers, err := image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("image has %d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = layerFile{hdr: hdr, body: body}
	}
}

func TestTheSameSourceAndTagBuildTheSameDigest(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a binary for two platforms, three times")
	}
	first := digest(t, buildHello(t, BuildOptions{Version: "v1"}))
	second := digest(t, buildHello(t, BuildOptions{Version: "v1"}))
	if first != second {
		t.Errorf("two builds of the same source gave %s and %s", first, second)
	}
	// The digest covers what the image says of itself.
	if other := digest(t, buildHello(t, BuildOptions{Version: "v2"})); other == first {
		t.Errorf("another version gave the same digest %s", first)
	}
}

func TestImagesAreDatedAtTheTimeGivenOrTheEpochNeverAtTheBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a binary for two platforms, twice")
	}
	for _, tc := range []struct {
		name    string
		created time.Time
		want    time.Time
	}{
		{name: "without a time, the Unix epoch", want: time.Unix(0, 0)},
		{name: "with a time, that time", created: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), want: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx := buildHello(t, BuildOptions{Created: tc.created})
			want := map[string]string{annotationCreated: tc.want.UTC().Format(time.RFC3339)}
			// The same check as for the release images: labels, config and
			// annotations agree, and say nothing the options did not.
			checkIndex(t, idx, wantHello, want)
		})
	}
}

func TestALayoutHoldsTheIndexUnderItsTagAndIsReplacedWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a binary for two platforms")
	}
	idx := buildHello(t, BuildOptions{Version: "v1"})
	dir := filepath.Join(t.TempDir(), "hello")
	// Twice: a second `make images` replaces the first's layout rather than
	// adding to it.
	for range 2 {
		if err := WriteLayout(dir, "v1", idx); err != nil {
			t.Fatal(err)
		}
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("layout's index.json lists %d entries, want 1", len(m.Manifests))
	}
	desc := m.Manifests[0]
	if got := desc.Annotations[annotationRefName]; got != "v1" {
		t.Errorf("layout entry is named %q, want the tag v1", got)
	}
	if want := digest(t, idx); desc.Digest != want {
		t.Errorf("layout holds %s, want the built index %s", desc.Digest, want)
	}
	read, err := top.ImageIndex(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	checkIndex(t, read, wantHello, map[string]string{annotationVersion: "v1", annotationCreated: "1970-01-01T00:00:00Z"})
}

func digest(t *testing.T, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	h, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

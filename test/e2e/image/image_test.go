package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestBuildWritesATaggedImageArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a binary")
	}
	tarPath, err := Build(t.Context(), "./test/e2e/images/pause", "certmint/pause-test:unit")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tarPath)
	if got := tarRepoTags(t, tarPath); !slices.Equal(got, []string{"certmint/pause-test:unit"}) {
		t.Fatalf("archive is tagged %v, want certmint/pause-test:unit", got)
	}
}

func TestFromBinaryInstallsTheBinaryAsTheEntrypoint(t *testing.T) {
	out, bin := t.TempDir(), writeBinary(t, "a static binary")
	tarPath := mustWrite(t, out, bin, "example/server:v1")

	tag, err := name.NewTag("example/server:v1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("reading the archive as example/server:v1: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/server"}; !slices.Equal(cfg.Config.Entrypoint, want) {
		t.Errorf("entrypoint = %q, want %q", cfg.Config.Entrypoint, want)
	}
	layers, err := img.Layers()
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
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = string(body)
		if hdr.Name == "server" && hdr.Mode != 0o755 {
			t.Errorf("server has mode %o, want 755", hdr.Mode)
		}
	}
	if files["server"] != "a static binary" {
		t.Errorf("layer holds server = %q, want the binary's content", files["server"])
	}
	if _, ok := files["tmp/"]; !ok {
		t.Errorf("layer has no tmp/; entries: %v", files)
	}
}

func TestFromBinaryReusesTheTarballOfAnUnchangedBinary(t *testing.T) {
	out, bin := t.TempDir(), writeBinary(t, "version 1")
	first := mustWrite(t, out, bin, "example/server:v1")
	// Marks the tarball, so that a rewrite would show; and touches the
	// binary, which is no change of what it holds.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(first, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(bin, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}

	second := mustWrite(t, out, bin, "example/server:v1")
	if second != first {
		t.Fatalf("second write returned %s, want the first tarball %s", second, first)
	}
	fi, err := os.Stat(second)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(old) {
		t.Errorf("tarball was rewritten (modified %s)", fi.ModTime())
	}
}

func TestFromBinaryReplacesTheTarballOfAChangedBinary(t *testing.T) {
	out, bin := t.TempDir(), writeBinary(t, "version 1")
	first := mustWrite(t, out, bin, "example/server:v1")
	other := mustWrite(t, out, bin, "example/other:v1")
	if err := os.WriteFile(bin, []byte("version 2"), 0o755); err != nil {
		t.Fatal(err)
	}

	second := mustWrite(t, out, bin, "example/server:v1")
	if second == first {
		t.Fatalf("a changed binary reused tarball %s", first)
	}
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Errorf("the tarball of the old binary is still there (stat: %v)", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the tarball of another image went too: %v", err)
	}
	if got := tarballsIn(t, out); len(got) != 2 {
		t.Errorf("output holds %v, want the new tarball and the other image's", got)
	}
}

func TestFromBinaryRefusesAnInvalidImageName(t *testing.T) {
	if _, err := FromBinary(t.Context(), writeBinary(t, "x"), "Not A Name"); err == nil {
		t.Fatal("FromBinary accepted the image name \"Not A Name\"")
	}
}

// writeBinary writes a stand-in binary named server holding content.
func writeBinary(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustWrite(t *testing.T, outDir, bin, imageName string) string {
	t.Helper()
	tag, err := name.NewTag(imageName)
	if err != nil {
		t.Fatal(err)
	}
	p, err := writeImage(t.Context(), outDir, bin, tag)
	if err != nil {
		t.Fatalf("writing %s: %v", imageName, err)
	}
	if filepath.Dir(p) != outDir {
		t.Fatalf("tarball %s is not in %s", p, outDir)
	}
	if got := tarRepoTags(t, p); !slices.Equal(got, []string{imageName}) {
		t.Fatalf("tarball is tagged %v, want %s", got, imageName)
	}
	return p
}

func tarballsIn(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		t.Fatal(err)
	}
	return matches
}

// tarRepoTags reads the tags of a docker-archive's manifest.json.
func tarRepoTags(t *testing.T, tarPath string) []string {
	t.Helper()
	data, err := os.ReadFile(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("archive has no manifest.json: %v", err)
		}
		if hdr.Name != "manifest.json" {
			continue
		}
		var manifest []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
			t.Fatal(err)
		}
		var tags []string
		for _, m := range manifest {
			tags = append(tags, m.RepoTags...)
		}
		return tags
	}
}

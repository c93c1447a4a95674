package image

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"testing"
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
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			t.Fatal("archive has no manifest.json")
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name != "manifest.json" {
			continue
		}
		var manifest []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
			t.Fatal(err)
		}
		if len(manifest) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != "certmint/pause-test:unit" {
			t.Fatalf("manifest = %+v, want one image tagged certmint/pause-test:unit", manifest)
		}
		return
	}
}

package images

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository, two levels above this package, where go test
// runs.
const repoRoot = "../.."

func TestManifestsPointTheKustomizeBaseAndTheChartAtTheImages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs kubectl and helm")
	}
	out := t.TempDir()
	err := RenderManifests(t.Context(), ManifestOptions{
		Images:   Release(),
		Registry: "registry.example.com/certmint",
		Tag:      "v1.2.3",
		Base:     filepath.Join(repoRoot, "deploy"),
		OutDir:   out,
		Kubectl:  kubectl(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"registry.example.com/certmint/controller:v1.2.3",
		"registry.example.com/certmint/csi-driver:v1.2.3",
	}

	t.Run("the rendered base runs the images", func(t *testing.T) {
		rendered, err := os.ReadFile(filepath.Join(out, "certmint.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if got := podImages(t, rendered); !slices.Equal(got, want) {
			t.Errorf("certmint.yaml runs %v, want %v", got, want)
		}
	})

	t.Run("the chart with the values runs the images", func(t *testing.T) {
		cmd := exec.CommandContext(t.Context(), helm(t), "template", "certmint", filepath.Join(repoRoot, "deploy", "charts", "certmint"),
			"--namespace", "certmint", "-f", filepath.Join(out, "values.yaml"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		rendered, err := cmd.Output()
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, stderr.String())
		}
		if got := podImages(t, rendered); !slices.Equal(got, want) {
			t.Errorf("the chart runs %v, want %v", got, want)
		}
	})
}

func TestManifestsWithoutARegistryKeepTheBaseNames(t *testing.T) {
	if testing.Short() {
		t.Skip("runs kubectl")
	}
	out := t.TempDir()
	err := RenderManifests(t.Context(), ManifestOptions{
		Images:  Release(),
		Tag:     "v1.2.3",
		Base:    filepath.Join(repoRoot, "deploy"),
		OutDir:  out,
		Kubectl: kubectl(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := os.ReadFile(filepath.Join(out, "certmint.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"certmint/controller:v1.2.3", "certmint/csi-driver:v1.2.3"}
	if got := podImages(t, rendered); !slices.Equal(got, want) {
		t.Errorf("certmint.yaml runs %v, want %v", got, want)
	}
}

// podImages returns the sorted images of every container of every pod
// template in a multi-document YAML stream.
func podImages(t *testing.T, stream []byte) []string {
	t.Helper()
	type container struct {
		Image string `json:"image"`
	}
	var images []string
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var obj struct {
			Spec struct {
				Template struct {
					Spec struct {
						InitContainers []container `json:"initContainers"`
						Containers     []container `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("decoding %s: %v", doc, err)
		}
		for _, c := range append(obj.Spec.Template.Spec.InitContainers, obj.Spec.Template.Spec.Containers...) {
			images = append(images, c.Image)
		}
	}
	slices.Sort(images)
	return images
}

// kubectl is the pinned kubectl: in $CERTMINT_KUBE_BIN, as `make test` sets
// it, else where hack/kube-binaries.sh builds it (once per version).
func kubectl(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CERTMINT_KUBE_BIN")
	if dir == "" {
		dir = scriptDir(t, "kube-binaries.sh")
	}
	return filepath.Join(dir, "kubectl")
}

// helm is the pinned helm, which hack/helm.sh builds once per version.
func helm(t *testing.T) string {
	t.Helper()
	return filepath.Join(scriptDir(t, "helm.sh"), "helm")
}

// scriptDir runs a hack/ script that prints the directory of the binaries
// it built or found cached.
func scriptDir(t *testing.T, script string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(repoRoot, "hack", script))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/%s: %v\n%s", script, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

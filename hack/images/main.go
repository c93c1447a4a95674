// Command images builds certmint's images and the manifests that install
// them; `make images` and `make manifests` run it from the repository root.
//
//	images build -tag TAG [-registry HOST/PATH] [-o DIR]
//
// builds the driver and controller images for linux/amd64 and linux/arm64,
// each as one OCI image index, and writes them as OCI image layouts
// DIR/csi-driver and DIR/controller (default _output/images), or pushes them
// to HOST/PATH/csi-driver:TAG and HOST/PATH/controller:TAG with the
// credentials of the Docker config. The images record the commit they are
// built from, unless the working tree has changes, and are dated at its
// time, or at SOURCE_DATE_EPOCH when that is set: never at the time of the
// build, so that building the same commit again gives the same digests.
//
//	images manifests -tag TAG -kubectl PATH [-registry HOST/PATH] [-deploy DIR] [-o DIR]
//
// writes a kustomize overlay of DIR (default deploy) using those images,
// renders it with kubectl, and writes Helm values for the chart with the
// same images, into the output directory (default _output/manifests).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/certmint/certmint/internal/images"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: images build|manifests [flags]")
	}
	switch args[0] {
	case "build":
		return build(ctx, args[1:])
	case "manifests":
		return manifests(ctx, args[1:])
	default:
		return fmt.Errorf("unknown command %q; want build or manifests", args[0])
	}
}

func build(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	registry := fs.String("registry", "", "registry and path to push to, e.g. registry.example.com/certmint; empty writes OCI layouts")
	tag := fs.String("tag", "", "the images' tag (required)")
	out := fs.String("o", "_output/images", "directory of the OCI layouts, one per image, when not pushing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	release := images.Release()
	// Refuse a bad name now rather than after minutes of compiling.
	if err := checkNames(release, *registry, *tag); err != nil {
		return err
	}
	revision, commitTime, err := headCommit(ctx)
	if err != nil {
		return err
	}
	created, err := creationTime(os.Getenv("SOURCE_DATE_EPOCH"), commitTime)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "certmint-images-")
	if err != nil {
		return fmt.Errorf("creating a work directory: %w", err)
	}
	// A work directory left behind is only disk space in the temporary
	// directory; the images are what matters.
	defer func() { _ = os.RemoveAll(work) }()

	built, err := images.Build(ctx, images.BuildOptions{
		Images:    release,
		Platforms: images.ReleasePlatforms(),
		WorkDir:   work,
		Source:    images.SourceURL,
		Revision:  revision,
		Version:   *tag,
		Created:   created,
	})
	if err != nil {
		return err
	}
	if *registry != "" {
		digests, err := images.Push(ctx, built, images.PushOptions{Registry: *registry, Tag: *tag})
		if err != nil {
			return err
		}
		for _, d := range digests {
			fmt.Printf("pushed %s\n", d)
		}
		return nil
	}
	for _, b := range built {
		dir := filepath.Join(*out, b.Image.Name)
		if err := images.WriteLayout(dir, *tag, b.Index); err != nil {
			return err
		}
		h, err := b.Index.Digest()
		if err != nil {
			return fmt.Errorf("digest of %s: %w", b.Image.Name, err)
		}
		fmt.Printf("wrote %s:%s to %s (%s)\n", images.Repository("", b.Image), *tag, dir, h)
	}
	return nil
}

func manifests(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("manifests", flag.ContinueOnError)
	registry := fs.String("registry", "", "registry and path of the images, e.g. registry.example.com/certmint; empty keeps deploy/'s names")
	tag := fs.String("tag", "", "the images' tag (required)")
	kubectl := fs.String("kubectl", "", "kubectl to render the kustomize overlay with (required)")
	base := fs.String("deploy", "deploy", "the kustomize base")
	out := fs.String("o", "_output/manifests", "output directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	release := images.Release()
	if err := checkNames(release, *registry, *tag); err != nil {
		return err
	}
	if err := images.RenderManifests(ctx, images.ManifestOptions{
		Images:   release,
		Registry: *registry,
		Tag:      *tag,
		Base:     *base,
		OutDir:   *out,
		Kubectl:  *kubectl,
	}); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", filepath.Join(*out, "certmint.yaml"), filepath.Join(*out, "values.yaml"))
	return nil
}

func checkNames(imgs []images.Image, registry, tag string) error {
	if tag == "" {
		return errors.New("-tag is required")
	}
	for _, img := range imgs {
		ref := images.Repository(registry, img) + ":" + tag
		if _, err := name.NewTag(ref); err != nil {
			return fmt.Errorf("image name %s: %w", ref, err)
		}
	}
	return nil
}

// headCommit returns the commit checked out in the current directory and
// its commit time. The revision is empty when the working tree has changes,
// since no commit describes what is built then; both are zero outside a git
// checkout, or without git.
func headCommit(ctx context.Context) (string, time.Time, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return "", time.Time{}, nil
	}
	// Only in a work tree may git's errors below be taken as errors.
	if err := exec.CommandContext(ctx, "git", "rev-parse", "--is-inside-work-tree").Run(); err != nil {
		return "", time.Time{}, nil
	}
	head, err := gitOutput(ctx, "log", "-1", "--format=%H %ct")
	if err != nil {
		return "", time.Time{}, err
	}
	rev, sec, ok := strings.Cut(head, " ")
	if !ok {
		return "", time.Time{}, fmt.Errorf("git log printed %q, not a commit and its time", head)
	}
	secs, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("commit time %q: %w", sec, err)
	}
	changes, err := gitOutput(ctx, "status", "--porcelain")
	if err != nil {
		return "", time.Time{}, err
	}
	if changes != "" {
		rev = ""
	}
	return rev, time.Unix(secs, 0), nil
}

func gitOutput(ctx context.Context, args ...string) (string, error) {
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// creationTime is the images' creation time: SOURCE_DATE_EPOCH
// (reproducible-builds.org) when it is set, else the commit's time.
func creationTime(sourceDateEpoch string, commitTime time.Time) (time.Time, error) {
	if sourceDateEpoch == "" {
		return commitTime, nil
	}
	sec, err := strconv.ParseInt(sourceDateEpoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds: %w", sourceDateEpoch, err)
	}
	return time.Unix(sec, 0), nil
}

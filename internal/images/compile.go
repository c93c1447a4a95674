package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CompileOptions say what Compile builds, for which platform, and where to.
type CompileOptions struct {
	// Packages are the main packages to build: import paths, or paths
	// relative to Dir. Required.
	Packages []string
	// Platform is the GOOS (OS) and GOARCH (Architecture) to build for; both
	// are required. Variants are refused: no image here needs one, and
	// GOARM and the like would be needed to honour them.
	Platform v1.Platform
	// OutDir receives one binary per package, named after the package's
	// last path element. Required.
	OutDir string
	// Dir is the directory go build runs in, inside the module; empty is
	// the current directory.
	Dir string
}

// Compile builds static binaries the way every certmint image holds them:
// without cgo, since the images have no C library; with -trimpath and
// without symbol tables (-s -w), so that the same source and toolchain give
// the same bytes wherever they are built. One go build builds all packages,
// so they share the compilation of their dependencies.
func Compile(ctx context.Context, opts CompileOptions) error {
	var problems []string
	if len(opts.Packages) == 0 {
		problems = append(problems, "no packages")
	}
	if opts.Platform.OS == "" || opts.Platform.Architecture == "" {
		problems = append(problems, fmt.Sprintf("platform %q needs an OS and an architecture", opts.Platform.String()))
	}
	if opts.Platform.Variant != "" {
		problems = append(problems, fmt.Sprintf("platform %q has a variant, which is not supported", opts.Platform.String()))
	}
	if opts.OutDir == "" {
		problems = append(problems, "no output directory")
	}
	if len(problems) > 0 {
		return fmt.Errorf("compiling: %s", strings.Join(problems, "; "))
	}

	// A trailing separator makes go build write into the directory even
	// for a single package, whose binary would otherwise be named OutDir.
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Clean(opts.OutDir) + string(filepath.Separator)}, opts.Packages...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = opts.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+opts.Platform.OS, "GOARCH="+opts.Platform.Architecture)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("compiling %s for %s: %w\n%s", strings.Join(opts.Packages, " "), opts.Platform.String(), err, out)
	}
	return nil
}

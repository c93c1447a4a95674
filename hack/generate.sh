#!/usr/bin/env bash
# Regenerates the deepcopy functions of the API types (next to them, in
# pkg/apis), the CustomResourceDefinitions (deploy/crds), and the
# PrometheusRule of deploy/monitoring (hack/generate-monitoring.sh).
#
# Usage: hack/generate.sh [TREE]
# TREE defaults to this checkout; hack/verify-generated.sh passes a scratch
# copy so it can compare without touching the working tree.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
tree="$(cd "${1:-$here/..}" && pwd)"

# Built from hack/tools/go.mod, which pins controller-tools; the Go build
# cache makes every run after the first one quick.
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
(cd "$here/tools" && go build -o "$bin/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen)

cd "$tree"
"$bin/controller-gen" object paths=./pkg/apis/...
rm -f deploy/crds/certmint.io_*.yaml
"$bin/controller-gen" crd:crdVersions=v1 paths=./pkg/apis/... output:crd:artifacts:config=deploy/crds
"$here/generate-monitoring.sh" "$tree"

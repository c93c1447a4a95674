#!/usr/bin/env bash
# Fails when the generated deepcopy code, CRDs or PrometheusRule differ
# from what hack/generate.sh makes from their sources. It regenerates into a
# scratch copy instead of asking git, so uncommitted work is judged too.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/deploy"
cp "$root/go.mod" "$root/go.sum" "$scratch/"
cp -r "$root/pkg" "$scratch/pkg"
cp -r "$root/deploy/crds" "$scratch/deploy/crds" 2>/dev/null || mkdir -p "$scratch/deploy/crds"
cp -r "$root/deploy/monitoring" "$scratch/deploy/monitoring"

"$root/hack/generate.sh" "$scratch"

fail=0
for path in pkg/apis deploy/crds deploy/monitoring; do
	if ! diff -r "$root/$path" "$scratch/$path"; then
		fail=1
	fi
done
if ((fail)); then
	echo "generated files are stale: run 'make generate'" >&2
fi
exit "$fail"

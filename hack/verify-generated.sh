#!/usr/bin/env bash
# Fails when the generated deepcopy code or CRDs differ from what
# hack/generate.sh makes from the current API types. It regenerates into a
# scratch copy instead of asking git, so uncommitted work is judged too.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/deploy"
cp "$root/go.mod" "$root/go.sum" "$scratch/"
cp -r "$root/pkg" "$scratch/pkg"
cp -r "$root/deploy/crds" "$scratch/deploy/crds" 2>/dev/null || mkdir -p "$scratch/deploy/crds"

"$root/hack/generate.sh" "$scratch"

fail=0
for path in pkg/apis deploy/crds; do
	if ! diff -r "$root/$path" "$scratch/$path"; then
		fail=1
	fi
done
if ((fail)); then
	echo "generated files are stale: run 'make generate'" >&2
fi
exit "$fail"

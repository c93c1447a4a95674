#!/usr/bin/env bash
# Builds the pinned helm from the Go module proxy, once per version, and
# prints the directory holding it.
set -euo pipefail

version=v4.3.1
cache="${CERTMINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certmint}"
out="$cache/helm/$version"

mkdir -p "$out"
# Parallel callers wait for one build.
exec 9>"$out/.lock"
flock 9
if [[ ! -x "$out/helm" ]]; then
	echo "building helm $version (cached in $out)" >&2
	GOBIN="$out" CGO_ENABLED=0 go install "helm.sh/helm/v4/cmd/helm@$version"
fi
echo "$out"

#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries from hack/kube/go.mod into a cache
# directory keyed by version and prints that directory. A second run with the
# binaries present does nothing, so callers may run it unconditionally.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(grep -oE "^\s*(require )?k8s.io/kubernetes v[0-9][^ ]*" "$here/kube/go.mod" | awk "{print \$NF}")"
cache="${CERTMINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certmint}"
out="$cache/kube/$version"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

# Without these the binaries call themselves v0.0.0-master, which kubectl and
# the kubelet report and compare.
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"

mkdir -p "$out"
# Parallel callers (make targets, test packages) wait for one build.
exec 9>"$out/.lock"
flock 9

for c in "${components[@]}"; do
	if [[ ! -x "$out/$c" ]]; then
		echo "building $c $version (cached in $out)" >&2
		(cd "$here/kube" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c")
		mv "$out/$c.tmp" "$out/$c"
	fi
done
echo "$out"

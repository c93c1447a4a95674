#!/usr/bin/env bash
# Runs the linters `make verify` enforces, from the repository root:
# golangci-lint with .golangci.yml, and logkeycheck (hack/tools/logkeycheck),
# which wants every logr key to be a constant from pkg/logkeys. Both are built
# from hack/tools/go.mod into a cache directory, once per version. Fails if
# either reports anything.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/hack/tools"
cache="${CERTMINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certmint}"
# A linter can only read code of a Go release no newer than the one it was
# built with, so the toolchain is part of every cache key.
gover="$(go env GOVERSION)"

# The version comes from hack/tools/go.mod, so bumping it there is enough.
glversion="$(cd "$tools" && go list -m -f '{{.Version}}' github.com/golangci/golangci-lint/v2)"
# logkeycheck lives in this repository: key it by its sources and go.sum.
lkversion="$(cd "$tools" && cat go.sum logkeycheck/*.go | sha256sum | cut -c1-16)"

# build NAME KEY PACKAGE: builds PACKAGE of hack/tools into
# $cache/NAME/KEY/NAME unless it is there, and prints that path.
build() {
	local name="$1" key="$2" pkg="$3"
	local out="$cache/$name/$key-$gover"
	mkdir -p "$out"
	# Parallel callers wait for one build.
	exec 9>"$out/.lock"
	flock 9
	if [[ ! -x "$out/$name" ]]; then
		echo "building $name $key (cached in $out)" >&2
		# Through a temporary name, so an interrupted build leaves no binary
		# that a later run would trust.
		(cd "$tools" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" "$pkg")
		mv "$out/$name.tmp" "$out/$name"
	fi
	exec 9>&-
	echo "$out/$name"
}

# The checker's own test (analysistest on hack/tools/logkeycheck/testdata) is
# run here because no other target tests the hack/tools module.
(cd "$tools" && go test ./logkeycheck/) >&2

golangci_lint="$(build golangci-lint "$glversion" github.com/golangci/golangci-lint/v2/cmd/golangci-lint)"
logkeycheck="$(build logkeycheck "$lkversion" github.com/certmint/certmint/hack/tools/logkeycheck)"

cd "$root"
fail=0
# Run both even when the first fails, so one run shows every finding.
"$golangci_lint" run --config .golangci.yml ./... || fail=1
# logkeycheck skips _test.go files itself; -test=false spares loading the
# test variants of every package only to skip them.
if ! "$logkeycheck" -test=false ./...; then
	echo "log keys must be constants from pkg/logkeys (hack/tools/logkeycheck)" >&2
	fail=1
fi
exit "$fail"

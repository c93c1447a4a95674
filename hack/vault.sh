#!/usr/bin/env bash
# Builds the pinned HashiCorp Vault from hack/vault/go.mod into a cache
# directory keyed by version and prints that directory. A second run with the
# binary present does nothing, so callers may run it unconditionally.
#
# Vault 1.15+ is BSL-licensed: this binary is for the tests' dev servers only
# and never goes into the project's images.
#
# `hack/vault.sh tidy` runs `go mod tidy` on hack/vault instead (see below).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(grep -oE "^\s*(require )?github.com/hashicorp/vault v[0-9][^ ]*" "$here/vault/go.mod" | awk "{print \$NF}")"
cache="${CERTMINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certmint}"
out="$cache/vault/$version"

# No published vault/sdk matches the 1.20 branch (Vault's release go.mod points
# at its in-tree copy, which a dependency cannot use), so the build module is
# hack/vault's go.mod and go.sum next to a patched copy of sdk v0.19.0 in ./sdk.
# It is assembled outside the source tree so that a clean clone, a read-only
# checkout or a concurrent edit of hack/vault never sees a half-made ./sdk.
prepare() {
	local dir="$1" sdk
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$here/vault/go.mod" "$here/vault/go.sum" "$dir/"
	sdk="$(cd "$dir" && go mod download -json github.com/hashicorp/vault/sdk@v0.19.0 | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
	[[ -d "$sdk" ]] || { echo "could not download github.com/hashicorp/vault/sdk@v0.19.0" >&2; return 1; }
	cp -R "$sdk" "$dir/sdk"
	# The module cache is read-only.
	chmod -R u+w "$dir/sdk"
	# patch(1) is not on a fresh Debian, git is. Inside a work tree, git apply
	# silently skips paths outside the current directory; the ceiling stops it
	# from finding one (say, a CERTMINT_CACHE under the checkout).
	(cd "$dir/sdk" && GIT_CEILING_DIRECTORIES="$dir" git apply "$here/vault/sdk-v0.19.0.patch")
}

if [[ "${1:-}" == tidy ]]; then
	# go mod tidy cannot run in hack/vault itself, whose ./sdk does not exist.
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	prepare "$tmp"
	(cd "$tmp" && go mod tidy)
	cp "$tmp/go.mod" "$tmp/go.sum" "$here/vault/"
	exit 0
fi

mkdir -p "$out"
# Parallel callers (make targets, test packages) wait for one build.
exec 9>"$out/.lock"
flock 9

if [[ ! -x "$out/vault" ]]; then
	echo "building vault $version (cached in $out)" >&2
	prepare "$out/src"
	# -mod=readonly (the default) makes a go.sum that is not commit-ready fail
	# here rather than on a clean clone.
	(cd "$out/src" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -ldflags "-s -w" -o "$out/vault.tmp" github.com/hashicorp/vault)
	mv "$out/vault.tmp" "$out/vault"
	rm -rf "$out/src"
fi
echo "$out"

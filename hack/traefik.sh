#!/usr/bin/env bash
# Builds the pinned Traefik from hack/traefik/go.mod into a cache directory
# keyed by version and prints that directory. A second run with the binary
# present does nothing, so callers may run it unconditionally.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(grep -oE "^\s*(require )?github.com/traefik/traefik/v3 v[0-9][^ ]*" "$here/traefik/go.mod" | awk "{print \$NF}")"
cache="${CERTMINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certmint}"
out="$cache/traefik/$version"

# Without these `traefik version` reports "dev". The codename is the one
# Traefik's release workflow sets for v3.6; the build date is left out so the
# binary depends on the version alone.
vpkg=github.com/traefik/traefik/v3/pkg/version
ldflags="-s -w -X $vpkg.Version=$version -X $vpkg.Codename=ramequin"

mkdir -p "$out"
# Parallel callers (make targets, test packages) wait for one build.
exec 9>"$out/.lock"
flock 9

if [[ ! -x "$out/traefik" ]]; then
	echo "building traefik $version (cached in $out)" >&2
	(cd "$here/traefik" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/traefik.tmp" github.com/traefik/traefik/v3/cmd/traefik)
	mv "$out/traefik.tmp" "$out/traefik"
fi
echo "$out"

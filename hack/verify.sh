#!/usr/bin/env bash
# Checks that the tree is as `make generate`, gofmt and go mod tidy would leave it.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
mapfile -t gofiles < <(git ls-files --cached --others --exclude-standard '*.go' | while read -r f; do [[ -f "$f" ]] && echo "$f"; done)
unformatted="$(gofmt -l "${gofiles[@]}")"
if [[ -n "$unformatted" ]]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	fail=1
fi

go vet ./... || fail=1

# golangci-lint and the log-key check, pinned in hack/tools.
hack/lint.sh || fail=1

for mod in . hack/kube hack/tools hack/traefik; do
	[[ -f "$mod/go.mod" ]] || continue
	if ! (cd "$mod" && go mod tidy -diff >/dev/null); then
		echo "go.mod or go.sum in $mod is not tidy: run 'go mod tidy' there" >&2
		fail=1
	fi
done

if [[ -x hack/verify-generated.sh ]]; then
	hack/verify-generated.sh || fail=1
fi

exit "$fail"

# certmint — `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go
OUTPUT ?= _output
# Test timeout for the whole suite; CI gives a run 90 minutes in all.
TEST_TIMEOUT ?= 45m

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build both binaries into _output/bin.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(OUTPUT)/bin/ ./cmd/...

.PHONY: generate
generate: ## Regenerate deepcopy code and CRDs.
	hack/generate.sh

.PHONY: verify
verify: ## Fail on unformatted code, vet findings, stale generated files or an untidy go.mod.
	hack/verify.sh

.PHONY: test
test: deps kube-binaries ## Run unit, integration and end-to-end tests (needs root).
	CERTMINT_KUBE_BIN="$$(hack/kube-binaries.sh)" $(GO) test -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-unit
test-unit: ## Run only the tests that need no cluster.
	$(GO) test -short ./pkg/... ./cmd/...

##@ Local cluster

.PHONY: deps
deps: ## Install the Debian packages the cluster and tests need (apt-get).
	hack/deps.sh

.PHONY: kube-binaries
kube-binaries: ## Build the pinned Kubernetes binaries (cached by version).
	hack/kube-binaries.sh >/dev/null

.PHONY: demo
demo: deps kube-binaries ## Start a local two-node cluster and show it working.
	hack/demo.sh


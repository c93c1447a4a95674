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
build: ## Build the driver, the controller and the kubectl plugin (kubectl-certmint) into _output/bin.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(OUTPUT)/bin/ ./cmd/...

.PHONY: generate
generate: ## Regenerate deepcopy code, CRDs and the PrometheusRule of deploy/monitoring.
	hack/generate.sh

.PHONY: verify
verify: ## Fail on unformatted code, vet findings, stale generated files or an untidy go.mod.
	hack/verify.sh

.PHONY: test
test: deps kube-binaries traefik vault ## Run unit, integration and end-to-end tests (needs root).
	@# Only one full cluster runs per machine; say at once if a demo holds it.
	$(GO) run ./test/e2e/cmd/cluster check
	CERTMINT_KUBE_BIN="$$(hack/kube-binaries.sh)" CERTMINT_TRAEFIK_BIN="$$(hack/traefik.sh)" CERTMINT_VAULT_BIN="$$(hack/vault.sh)" $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: bench
bench: deps kube-binaries vault ## Measure certmint on a real control plane and kubelet (about 6 minutes); see docs/benchmarks.md.
	CERTMINT_KUBE_BIN="$$(hack/kube-binaries.sh)" CERTMINT_VAULT_BIN="$$(hack/vault.sh)" $(GO) run ./test/bench -o $(OUTPUT)/bench/results.md

.PHONY: test-unit
test-unit: ## Run only the tests that need no cluster.
	$(GO) test -short ./pkg/... ./cmd/... ./internal/kubectlcertmint/...

##@ Local cluster

.PHONY: deps
deps: ## Install the Debian packages the cluster and tests need (apt-get).
	hack/deps.sh

.PHONY: kube-binaries
kube-binaries: ## Build the pinned Kubernetes binaries (cached by version).
	hack/kube-binaries.sh >/dev/null

.PHONY: traefik
traefik: ## Build the pinned Traefik the end-to-end tests run as their Ingress controller (cached by version).
	hack/traefik.sh >/dev/null

.PHONY: vault
vault: ## Build the pinned HashiCorp Vault the tests run as a dev server (cached by version; BSL-licensed, never in images).
	hack/vault.sh >/dev/null

.PHONY: cluster-up
cluster-up: deps kube-binaries ## Start a local two-node cluster in the background (KUBECONFIG=_output/cluster/kubeconfig).
	$(GO) run ./test/e2e/cmd/cluster up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove everything it, or a crashed run, left.
	$(GO) run ./test/e2e/cmd/cluster down

.PHONY: demo
demo: deps kube-binaries traefik ## Start a local cluster, install certmint, show pods talking mTLS and an Ingress serving HTTPS with a certmint Certificate.
	hack/demo.sh

.PHONY: demo-down
demo-down: ## Stop the demo's cluster and remove everything it left.
	$(GO) run ./test/e2e/cmd/cluster down

##@ Deployment

.PHONY: helm
helm: ## Build the pinned helm (cached by version) and print its directory.
	hack/helm.sh

.PHONY: helm-lint
helm-lint: ## Lint the Helm chart in deploy/charts/certmint.
	"$$(hack/helm.sh)/helm" lint --strict deploy/charts/certmint

.PHONY: deploy-render
deploy-render: kube-binaries ## Print the manifests of the kustomize base in deploy/.
	"$$(hack/kube-binaries.sh)/kubectl" kustomize deploy/

# Where `make images` pushes and `make manifests` points at, e.g.
# registry.example.com/certmint; empty writes OCI layouts and keeps deploy/'s
# image names (certmint/csi-driver, certmint/controller).
REGISTRY ?=
# The images' tag; by default the commit as git describe names it.
TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: images
images: ## Build the driver and controller images for linux/amd64 and linux/arm64 as OCI layouts in _output/images, or push them with REGISTRY=host/path (and TAG=...).
	$(GO) run ./hack/images build -registry "$(REGISTRY)" -tag "$(TAG)" -o $(OUTPUT)/images

.PHONY: manifests
manifests: kube-binaries ## Render deploy/ and Helm values for the images in REGISTRY tagged TAG into _output/manifests.
	$(GO) run ./hack/images manifests -registry "$(REGISTRY)" -tag "$(TAG)" -kubectl "$$(hack/kube-binaries.sh)/kubectl" -o $(OUTPUT)/manifests


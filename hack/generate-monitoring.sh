#!/usr/bin/env bash
# Wraps the alerts, deploy/monitoring/certmint.rules.yaml, into the
# PrometheusRule of the kustomize directory beside it: kustomize cannot
# embed a file in an object. (The Helm chart reads the file itself, through
# a symbolic link in its files/.) hack/generate.sh runs this; `make verify`
# fails when the PrometheusRule is stale.
#
# Usage: hack/generate-monitoring.sh [TREE]
set -euo pipefail

dir="$(cd "${1:-$(dirname "$0")/..}" && pwd)/deploy/monitoring"
{
	echo "# Generated from certmint.rules.yaml by \`make generate\`; edit that file."
	cat <<-'YAML'
	apiVersion: monitoring.coreos.com/v1
	kind: PrometheusRule
	metadata:
	  name: certmint
	  namespace: certmint
	  labels:
	    app.kubernetes.io/name: certmint
	spec:
	YAML
	# Indented under spec:, blank lines left blank.
	sed -e 's/^\(.\)/  \1/' "$dir/certmint.rules.yaml"
} >"$dir/prometheusrule.yaml"

#!/usr/bin/env bash
# Installs the Debian packages the local cluster and the tests use, when missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
	etcd-server                 # etcd for kube-apiserver
	containerd                  # container runtime, one instance per node
	runc                        # crun cannot handle the hybrid cgroup layout here
	containernetworking-plugins # bridge + host-local for pod networking
	iproute2 iptables           # network namespace, veth and the service rule
	util-linux                  # mount, flock, nsenter
	openssl                     # inspecting certificates in tests and the demo
	openjdk-17-jre-headless     # keytool, to open the JKS keystores in the tests
	pebble                      # ACME test server and pebble-challtestsrv, for the ACME issuer tests
	bind9                       # named, the authoritative DNS server the DNS-01 (RFC 2136) tests update
	prometheus                  # prometheus, scraping the driver and controller in the e2e tests; promtool, testing the shipped alerts
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}" >&2
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# make demo: a local two-node cluster with certmint installed from deploy/, a
# CA ClusterIssuer, and a server and a client pod on different nodes talking
# mutual TLS with certmint certificates. Leaves the cluster running;
# make demo-down removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

kubeconfig="$PWD/_output/cluster/kubeconfig"
kubectl="$(hack/kube-binaries.sh)/kubectl"

go run ./test/e2e/cmd/cluster up
go run ./test/e2e/cmd/demo --kubeconfig="$kubeconfig"

cat <<MSG

What happened:
  - certmint was installed with kubectl apply -k (deploy/ plus an overlay for
    this cluster's kubelet directories: _output/cluster/deploy).
  - ClusterIssuer demo-ca signs with a CA the demo generated.
  - Pod demo/server runs on one node, demo/client on the other. Each got a
    key generated on its own node, a certificate for its SPIFFE ID, and the
    CA bundle, in a certmint volume at /tls. The client calls the server
    every 5 seconds; each side verifies the other's certificate and identity.
  - Pod demo/native-client does the same with no certmint volume: a
    podCertificate projection has the kubelet make its key and ask certmint
    for the certificate, and a clusterTrustBundle projection gives it the
    issuer's CA bundle (ClusterTrustBundle clusterissuers.certmint.io:demo-ca:bundle).
  - Traefik runs as the Ingress controller. Ingress demo/shop carries the
    annotation certmint.io/cluster-issuer: demo-ca, so certmint keeps a
    Certificate for its TLS entry and the Secret shop-tls, which Traefik
    serves. Pod demo/browser calls https://shop.demo.example.test through
    Traefik every 5 seconds, verifying the chain against the CA and the name.

Look around:
  export KUBECONFIG=$kubeconfig
  alias kubectl=$kubectl
  kubectl get csr,clusterissuers,issuers -A   # the driver deletes each CSR once
                                              # it has its certificate
  kubectl -n demo get podcertificaterequests  # the kubelet's, signed by certmint
  kubectl -n demo logs -f native-client
  kubectl -n demo describe certificate shop-tls  # the Ingress's, with its Events
  kubectl -n demo logs -f browser
  kubectl -n demo logs -f client
  kubectl -n demo logs server
  kubectl -n demo exec server -- /testapp files --dir=/tls
  kubectl -n certmint get pods -o wide
  kubectl -n certmint logs ds/certmint-driver
  kubectl -n certmint logs deploy/certmint-controller

The kubectl plugin (docs/kubectl-plugin.md) answers the same questions:
  go build -o _output/bin/kubectl-certmint ./cmd/kubectl-certmint
  export PATH=\$PWD/_output/bin:\$PATH
  kubectl certmint status -A
  kubectl certmint inspect pod server -n demo   # from the driver on its node

Remove it all: make demo-down
MSG

// Package cluster runs real Kubernetes on this machine for tests: a control
// plane alone for integration tests, or a full multi-node cluster for
// end-to-end tests and `make cluster-up`.
//
// # Control plane
//
// StartControlPlane (and ControlPlaneForTest) starts etcd and kube-apiserver
// on loopback with random free ports in a directory of their own, so any
// number can run at once, one per test package. The apiserver runs the
// authorizers and admission the project's security model relies on: Node and
// RBAC, NodeRestriction, and ServiceAccount tokens it issues and signs itself,
// whose pod-bound form carries the node name. One CA per run signs every
// certificate; UserConfig mints a client identity (a node, a user) from it.
//
// # Full cluster
//
// Start adds kube-controller-manager, kube-scheduler and, per node, a
// containerd and a kubelet, each with its own directories, socket, cgroup
// root, node IP and pod bridge. Everything runs inside a network namespace the
// harness creates (via nsenter, which joins only the network namespace: the
// kubelets, containerd and the CSI driver must share the host's mounts). That
// choice keeps the host untouched and makes every server local:
//
//   - Bridges, routes and iptables rules live and die with the namespace, so
//     nothing of the host's network changes beyond one veth pair and one
//     route, and a crashed run is undone by deleting the namespace.
//   - Both nodes' bridges are routed by the same namespace, so pods on
//     different nodes reach each other by IP without an overlay, and nothing
//     masquerades: a server sees its client pod's address.
//   - The apiserver listens inside the namespace; the host reaches it, the
//     kubelets and the pods over the veth pair (10.231.0.0/24, pods in
//     10.244.0.0/16), so tests and kubectl run on the host.
//   - There is no kube-proxy. Pods reach the API server as in-cluster clients
//     (KUBERNETES_SERVICE_HOST is the `kubernetes` Service IP) through one
//     DNAT rule from that IP to the apiserver, which is all the driver
//     DaemonSet and controller Deployment need. Other Services have no
//     backend; tests address pods directly.
//
// kube-apiserver reaches each kubelet at its InternalIP with a client
// certificate that RBAC grants system:kubelet-api-admin, and verifies the
// kubelet's serving certificate against the run's CA, so kubectl logs, exec
// and port-forward work on every node. Each kubelet authenticates as
// system:node:<name>, the identity the Node authorizer and NodeRestriction
// act on.
//
// Nothing can be pulled: images are built from Go packages with package image
// and loaded with LoadImage. The sandbox image is PauseImage, built from
// test/e2e/images/pause at start.
//
// # One at a time, and clean
//
// A full cluster uses fixed names (the namespace, cgroup roots), so one runs
// per machine: Start waits for a machine-wide lock. Holding it, Start first
// removes whatever a crashed run left (processes in the namespace or the node
// cgroups, mounts under run directories, the namespace, cgroups, CNI caches,
// run directories), and Stop does the same at the end. Each run gets a new
// directory. Component processes die with the process that started them
// (SIGKILL on parent death), so a killed test binary leaves only containers
// and mounts, which the next run removes. Start and Stop need root.
package cluster

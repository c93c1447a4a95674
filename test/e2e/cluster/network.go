package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The full cluster's addresses. They are private ranges that stay inside the
// cluster's network namespace, except for the transit link, which the host
// side uses to reach the apiserver, kubelets and pods.
const (
	netnsName = "certmint-e2e"
	hostLink  = "certmint0" // host end of the veth pair
	nsLink    = "uplink"    // namespace end

	transitPrefix = "10.231.0." // a /24 shared by the veth ends and the node IPs
	hostSideIP    = transitPrefix + "1"
	apiserverIP   = transitPrefix + "2"
	podCIDR       = "10.244.0.0/16" // node N gets 10.244.N.0/24
)

func netnsPath() string { return filepath.Join("/run/netns", netnsName) }

// inNetns is the command prefix that runs a program inside the cluster's
// network namespace. nsenter joins only the network namespace, unlike
// `ip netns exec`, which also makes a private mount namespace: kubelet,
// containerd and the CSI driver must share the host's mounts.
func inNetns() []string { return []string{"nsenter", "--net=" + netnsPath(), "--"} }

func nodeIP(i int) string         { return fmt.Sprintf("%s%d", transitPrefix, 10+i) }
func nodePodCIDR(i int) string    { return fmt.Sprintf("10.244.%d.0/24", i) }
func nodeBridge(i int) string     { return fmt.Sprintf("cmbr%d", i) }
func nodeCNINetwork(i int) string { return fmt.Sprintf("%snode-%d", cgroupPrefix, i) }

// setUpNetwork creates the namespace and its link to the host. Inside, pods
// of all nodes sit on per-node bridges routed by the namespace itself, so
// cross-node pod traffic needs no overlay. There is no kube-proxy: one DNAT
// rule makes the `kubernetes` Service IP reach the apiserver, which is all
// in-cluster clients (the driver, the controller) need.
func setUpNetwork(ctx context.Context, nodes int) error {
	ns := inNetns()
	steps := [][]string{
		{"ip", "netns", "add", netnsName},
		{"ip", "link", "add", hostLink, "type", "veth", "peer", "name", nsLink, "netns", netnsName},
		{"ip", "addr", "add", hostSideIP + "/24", "dev", hostLink},
		{"ip", "link", "set", hostLink, "up"},
		// Lets the host (tests, kubectl port checks) reach pods directly.
		{"ip", "route", "add", podCIDR, "via", apiserverIP, "dev", hostLink},
		append(ns, "ip", "link", "set", "lo", "up"),
		append(ns, "ip", "addr", "add", apiserverIP+"/24", "dev", nsLink),
	}
	for i := 1; i <= nodes; i++ {
		steps = append(steps, append(ns, "ip", "addr", "add", nodeIP(i)+"/24", "dev", nsLink))
	}
	steps = append(steps,
		append(ns, "ip", "link", "set", nsLink, "up"),
		// Locally originated connections to a Service IP need a route
		// before the OUTPUT hook can rewrite them.
		append(ns, "ip", "route", "add", serviceCIDR, "dev", nsLink),
		append(ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"),
	)
	for _, chain := range []string{"PREROUTING", "OUTPUT"} {
		steps = append(steps, append(ns, "iptables", "-w", "-t", "nat", "-A", chain,
			"-d", kubernetesServiceIP+"/32", "-p", "tcp", "--dport", "443",
			"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", apiserverIP, nsAPIServerPort)))
	}
	for _, step := range steps {
		if err := run(ctx, step...); err != nil {
			return fmt.Errorf("setting up cluster network: %w", err)
		}
	}
	return nil
}

// tearDownNetwork removes the namespace (with its bridges, rules and the
// veth pair) if it exists.
func tearDownNetwork(ctx context.Context) error {
	var errs []error
	if _, err := os.Stat("/sys/class/net/" + hostLink); err == nil {
		errs = append(errs, run(ctx, "ip", "link", "delete", hostLink))
	}
	if _, err := os.Stat(netnsPath()); err == nil {
		errs = append(errs, run(ctx, "ip", "netns", "delete", netnsName))
	}
	return errors.Join(errs...)
}

// run runs a short command and reports its output on failure.
func run(ctx context.Context, argv ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

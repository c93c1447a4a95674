package controller_test

import (
	"context"
	"net"
	"slices"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// The pod networks of the two nodes, as kube-controller-manager's node IPAM
// would assign them, within the cluster's pod network.
const (
	podNetwork    = "10.244.0.0/16"
	nodeAPodCIDR  = "10.244.1.0/24"
	nodeBPodCIDR  = "10.244.2.0/24"
	otherNodesPod = "10.244.2.7"
)

// givePodCIDR sets the node's spec.podCIDRs, as node IPAM does once; the
// API server refuses to change them after that, so a run after the first
// finds them set.
func givePodCIDR(t *testing.T, name, cidr string) {
	t.Helper()
	var node corev1.Node
	if err := env.admin.Get(t.Context(), types.NamespacedName{Name: name}, &node); err != nil {
		t.Fatal(err)
	}
	if len(node.Spec.PodCIDRs) > 0 {
		if !slices.Equal(node.Spec.PodCIDRs, []string{cidr}) {
			t.Fatalf("node %s has podCIDRs %v, want %s", name, node.Spec.PodCIDRs, cidr)
		}
		return
	}
	node.Spec.PodCIDR, node.Spec.PodCIDRs = cidr, []string{cidr}
	if err := env.admin.Update(t.Context(), &node); err != nil {
		t.Fatal(err)
	}
}

// writePodIPs writes ips into pod's status as its node, which may write
// any address there: the API server checks only that each is one.
func writePodIPs(t *testing.T, pod *corev1.Pod, ips ...string) {
	t.Helper()
	node := nodeClient(t, pod.Spec.NodeName)
	live, err := node.CoreV1().Pods(pod.Namespace).Get(t.Context(), pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	live.Status.PodIP, live.Status.PodIPs = ips[0], nil
	for _, ip := range ips {
		live.Status.PodIPs = append(live.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if _, err := node.CoreV1().Pods(pod.Namespace).UpdateStatus(t.Context(), live, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("node %s writing %v into the status of pod %s: %v", pod.Spec.NodeName, ips, pod.Name, err)
	}
}

func podIPsIssuer(t *testing.T, withinNodePodCIDRs bool) string {
	t.Helper()
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("pod-ips")},
		Spec: v1alpha1.IssuerSpec{SelfSigned: &v1alpha1.SelfSignedIssuer{}, Policy: &v1alpha1.Policy{
			PodIPs: &v1alpha1.PodIPPolicy{CIDRs: []string{podNetwork}, WithinNodePodCIDRs: withinNodePodCIDRs},
		}},
	}
	if err := env.admin.Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	return request.IssuerRef{Kind: request.KindClusterIssuer, Name: iss.Name}.SignerName()
}

// TestACompromisedNodeGetsNoAddressBeyondTheIssuersBounds attacks the pod
// address rule as the holder of node A would: with the node's credentials
// it writes whatever address it likes into its own pod's status, and with
// its driver's token it asks for a certificate naming that address.
func TestACompromisedNodeGetsNoAddressBeyondTheIssuersBounds(t *testing.T) {
	e := requireEnv(t)
	startController(t, "pod-ips")
	givePodCIDR(t, nodeA, nodeAPodCIDR)
	givePodCIDR(t, nodeB, nodeBPodCIDR)
	ns := uniqueName("pod-ips")
	pod, err := e.createPod(t.Context(), ns, "web", nodeA, "web")
	if err != nil {
		t.Fatal(err)
	}
	hostNetwork, err := e.createPod(t.Context(), ns, "host", nodeA, "web", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	if err != nil {
		t.Fatal(err)
	}
	network, nodeBounded := podIPsIssuer(t, false), podIPsIssuer(t, true)
	ask := func(t *testing.T, signer string, p *corev1.Pod, ip string) *certificatesv1.CertificateSigningRequest {
		t.Helper()
		return createCSR(t, env.driverA, newCSR(t, csrSpec{signer: signer, pod: p, node: nodeA,
			dnsNames: []string{p.Name + "." + ns + ".svc"}, ips: []net.IP{net.ParseIP(ip)}}))
	}

	t.Run("the node's pod gets the address its node gave it", func(t *testing.T) {
		writePodIPs(t, pod, "10.244.1.5")
		for _, signer := range []string{network, nodeBounded} {
			csr := waitForCSR(t, ask(t, signer, pod, "10.244.1.5").Name, settled)
			if !issued(csr) {
				t.Fatalf("%s: conditions %+v, want the certificate", signer, csr.Status.Conditions)
			}
			chain, err := pki.ParseCertificates(csr.Status.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			if got := chain[0].IPAddresses; len(got) != 1 || !got[0].Equal(net.ParseIP("10.244.1.5")) {
				t.Errorf("%s: certificate names %v, want 10.244.1.5", signer, got)
			}
		}
	})

	t.Run("an address outside the pod network is denied, whatever the node writes", func(t *testing.T) {
		writePodIPs(t, pod, "8.8.8.8")
		wantDenied(t, ask(t, network, pod, "8.8.8.8"), policy.ReasonIPAddressForbidden, "is outside the pod network")
	})

	t.Run("an address of another node's pods is denied where the issuer bounds addresses by the node's podCIDRs", func(t *testing.T) {
		writePodIPs(t, pod, otherNodesPod)
		wantDenied(t, ask(t, nodeBounded, pod, otherNodesPod), policy.ReasonIPAddressForbidden,
			"is outside the podCIDRs of its node "+nodeA+" ("+nodeAPodCIDR+")")
		// The limit docs/policy.md states: bounded by the pod network
		// alone, the node gets it.
		if csr := waitForCSR(t, ask(t, network, pod, otherNodesPod).Name, settled); !issued(csr) {
			t.Errorf("conditions %+v; the pod network alone does not bound the node to its own pods", csr.Status.Conditions)
		}
	})

	t.Run("a host-network pod, whose addresses are its node's, gets none", func(t *testing.T) {
		writePodIPs(t, hostNetwork, "10.244.1.9")
		wantDenied(t, ask(t, network, hostNetwork, "10.244.1.9"), policy.ReasonIPAddressForbidden, "uses its node's network")
	})

	t.Run("another pod's address is denied to a request for a pod of the node", func(t *testing.T) {
		writePodIPs(t, pod, "10.244.1.5")
		other, err := e.createPod(t.Context(), ns, "other", nodeA, "web")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.admin.Delete(context.Background(), other) })
		writePodIPs(t, other, "10.244.1.6")
		wantDenied(t, ask(t, network, pod, "10.244.1.6"), policy.ReasonPodIPMismatch, "10.244.1.6 is not an address of pod "+ns+"/web")
	})
}

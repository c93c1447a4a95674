package policy

import (
	"net"
	"slices"
	"strings"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// ReasonPodIPMismatch is the reason of a denial for an IP address SAN that
// is not an address of the pod the request is for.
const ReasonPodIPMismatch = "PodIPMismatch"

// checkPodIPs allows the IP address SANs ips when each is an address of the
// binding's pod as the API server has its status, and the issuer's policy
// pol certifies pod addresses within bounds the address lies in: the
// policy's CIDRs and, if it says so, the podCIDRs of the pod's node. No
// policy certifies any other address.
//
// A pod's node writes the pod's status, so the pod's own addresses are what
// its node says they are: the bounds, not the status, are what keeps a
// compromised node from having any address it likes certified.
//
// A request that names no address but asks for its pod's addresses
// (request.AnnotationPodIPs), as a volume's first request does, is checked
// too: it is refused when the addresses could never be certified, so that
// the pod's author hears of it when the volume is published.
func checkPodIPs(ips []net.IP, pol *v1alpha1.PodIPPolicy, b Binding, iss request.IssuerRef) (Decision, bool) {
	listed := joinIPs(ips)
	switch {
	case pol == nil && len(ips) == 0:
		return deny(ReasonIPAddressForbidden, "the volume asks for its pod's addresses as IP SANs (${POD_IP} or ${POD_IPS} in ip-sans), which %s does not certify (policy.podIPs); remove them or use an issuer that certifies them", iss).in(PartIPAddresses), false
	case pol == nil:
		return deny(ReasonIPAddressForbidden, "IP address SANs (%s) are not allowed: %s certifies no pod addresses (policy.podIPs), and no policy certifies other addresses; use DNS names", listed, iss).in(PartIPAddresses), false
	case b.Pod == nil:
		return deny(ReasonIPAddressForbidden, "IP address SANs (%s) are allowed only as a pod's own addresses, and the request is for %s, no pod", listed, b).in(PartIPAddresses), false
	case b.Pod.Spec.HostNetwork:
		return deny(ReasonIPAddressForbidden, "pod %s/%s uses its node's network, so its addresses are the node's, shared with every host-network pod there: they are not certified", b.Pod.Namespace, b.Pod.Name).in(PartIPAddresses), false
	}
	var nodeRanges []*net.IPNet
	if pol.WithinNodePodCIDRs {
		if nodeRanges = parseCIDRs(b.NodePodCIDRs); len(nodeRanges) == 0 {
			return deny(ReasonIPAddressForbidden, "node %s of pod %s/%s has no spec.podCIDRs, and %s certifies only addresses within them (policy.podIPs.withinNodePodCIDRs)",
				b.Pod.Spec.NodeName, b.Pod.Namespace, b.Pod.Name, iss).in(PartIPAddresses), false
		}
	}
	own := podAddresses(b)
	ranges := parseCIDRs(pol.CIDRs)
	for _, ip := range ips {
		switch {
		case len(own) == 0:
			return deny(ReasonPodIPMismatch, "%s is not an address of pod %s/%s, which has none yet", ip, b.Pod.Namespace, b.Pod.Name).in(PartIPAddresses), false
		case !slices.ContainsFunc(own, ip.Equal):
			return deny(ReasonPodIPMismatch, "%s is not an address of pod %s/%s, whose addresses are %s: a certificate names only its own pod's addresses",
				ip, b.Pod.Namespace, b.Pod.Name, joinIPs(own)).in(PartIPAddresses), false
		case !containedIn(ranges, ip):
			return deny(ReasonIPAddressForbidden, "%s, an address of pod %s/%s, is outside the pod network %s certifies (policy.podIPs.cidrs: %s)",
				ip, b.Pod.Namespace, b.Pod.Name, iss, strings.Join(pol.CIDRs, ", ")).in(PartIPAddresses), false
		case nodeRanges != nil && !containedIn(nodeRanges, ip):
			return deny(ReasonIPAddressForbidden, "%s, an address of pod %s/%s, is outside the podCIDRs of its node %s (%s), and %s certifies only addresses within them (policy.podIPs.withinNodePodCIDRs)",
				ip, b.Pod.Namespace, b.Pod.Name, b.Pod.Spec.NodeName, strings.Join(b.NodePodCIDRs, ", "), iss).in(PartIPAddresses), false
		}
	}
	return Decision{}, true
}

// podAddresses are the addresses of the binding's pod, from its status.
func podAddresses(b Binding) []net.IP {
	var out []net.IP
	for _, a := range b.Pod.Status.PodIPs {
		if ip := net.ParseIP(a.IP); ip != nil {
			out = append(out, ip)
		}
	}
	return out
}

// parseCIDRs parses cidrs, leaving out what is no CIDR and /0, which would
// bound nothing; the API server refuses both in a policy already.
func parseCIDRs(cidrs []string) []*net.IPNet {
	var out []*net.IPNet
	for _, c := range cidrs {
		if _, n, err := net.ParseCIDR(c); err == nil {
			if ones, _ := n.Mask.Size(); ones > 0 {
				out = append(out, n)
			}
		}
	}
	return out
}

func containedIn(ranges []*net.IPNet, ip net.IP) bool {
	return slices.ContainsFunc(ranges, func(n *net.IPNet) bool { return n.Contains(ip) })
}

func joinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

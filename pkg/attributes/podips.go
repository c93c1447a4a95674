package attributes

import (
	"net"
	"slices"

	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/request"
)

// PodIPs says which of its pod's addresses a volume's certificate names,
// through the ip-sans attribute's ${POD_IP} or ${POD_IPS}.
type PodIPs int

// The choices of PodIPs.
const (
	// NoPodIPs: none of the pod's addresses.
	NoPodIPs PodIPs = iota
	// PrimaryPodIP (${POD_IP}): the pod's primary address, status.podIP.
	PrimaryPodIP
	// AllPodIPs (${POD_IPS}): every address of status.podIPs, one per IP
	// family in a dual-stack cluster.
	AllPodIPs
)

// Annotation is the value of request.AnnotationPodIPs for p; empty for
// NoPodIPs.
func (p PodIPs) Annotation() string {
	switch p {
	case PrimaryPodIP:
		return request.PodIPsPrimary
	case AllPodIPs:
		return request.PodIPsAll
	}
	return ""
}

// CertificateFor is the certificate the volume asks for while its pod has
// the addresses ips (status.podIPs, the primary first; none while the pod
// has none yet): the parsed certificate with the pod's addresses its
// ip-sans templates stand for added after any literal ones. It is a copy;
// s is not changed.
func (s *Spec) CertificateFor(ips []net.IP) certspec.Spec {
	c := s.Certificate
	var add []net.IP
	switch {
	case len(ips) == 0:
	case s.PodIPs == PrimaryPodIP:
		add = ips[:1]
	case s.PodIPs == AllPodIPs:
		add = ips
	}
	c.IPAddresses = slices.Clone(c.IPAddresses)
	for _, ip := range add {
		// A literal address that is also the pod's is named once.
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			c.IPAddresses = append(c.IPAddresses, ip)
		}
	}
	return c
}

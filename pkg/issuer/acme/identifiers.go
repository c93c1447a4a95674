package acme

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/certmint/certmint/pkg/issuer"
)

// DNSNames returns the DNS names an ACME order for req must name, or an
// error saying which part of req an ACME certificate cannot carry. ACME
// servers certify DNS names they can validate and drop or refuse anything
// else, so a request asking for more is refused here rather than answered
// with a certificate that does not say what was asked.
func DNSNames(req *issuer.Request) ([]string, error) {
	csr := req
	var problems []string
	if len(csr.URIs) > 0 {
		uris := make([]string, len(csr.URIs))
		for i, u := range csr.URIs {
			uris[i] = u.String()
		}
		problems = append(problems, fmt.Sprintf("URI SANs (%s)", strings.Join(uris, ", ")))
	}
	if len(csr.IPAddresses) > 0 {
		problems = append(problems, fmt.Sprintf("IP address SANs (%s)", joinIPs(csr.IPAddresses)))
	}
	if len(csr.EmailAddresses) > 0 {
		problems = append(problems, fmt.Sprintf("email SANs (%s)", strings.Join(csr.EmailAddresses, ", ")))
	}
	if subject := subjectBesidesCN(req.Subject); subject != "" {
		problems = append(problems, fmt.Sprintf("subject fields other than the common name (%s)", subject))
	}

	var names []string
	for _, n := range csr.DNSNames {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if strings.Contains(strings.TrimPrefix(n, "*."), "*") {
			problems = append(problems, fmt.Sprintf("a wildcard other than a whole first label (%s)", n))
			continue
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if cn := csr.Subject.CommonName; cn != "" && !slices.Contains(names, strings.ToLower(strings.TrimSuffix(cn, "."))) {
		problems = append(problems, fmt.Sprintf("a common name that is not one of its DNS names (%q)", cn))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("an ACME certificate carries DNS names only; this request also asks for %s", strings.Join(problems, "; "))
	}
	if len(names) == 0 {
		return nil, errors.New("an ACME certificate needs at least one DNS name; this request has none")
	}
	return names, nil
}

func joinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

// subjectBesidesCN renders the attributes of subject other than the common
// name, or "" when the common name is all it has.
func subjectBesidesCN(subject pkix.Name) string {
	var others pkix.Name
	for _, attr := range subject.Names {
		if !attr.Type.Equal(oidCommonName) {
			others.ExtraNames = append(others.ExtraNames, attr)
		}
	}
	return others.String()
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

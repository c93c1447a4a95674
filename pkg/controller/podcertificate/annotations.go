package podcertificate

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/request"
)

// The keys a podCertificate projection's userAnnotations may set. The
// kubelet copies them into the request's spec.unverifiedUserAnnotations;
// the issuer's policy judges what they ask for as it judges a CSI volume's
// attributes.
const (
	// AnnotationDNSNames lists the certificate's DNS names, comma-separated;
	// templated.
	AnnotationDNSNames = "certmint.io/dns-names"
	// AnnotationURISANs lists its URI SANs, comma-separated; templated.
	// Unset, the certificate carries the pod's SPIFFE ID.
	AnnotationURISANs = "certmint.io/uri-sans"
	// AnnotationRenewBefore is how long before expiry the kubelet is to
	// start replacing the certificate, a Go duration; a third of the
	// lifetime when unset.
	AnnotationRenewBefore = "certmint.io/renew-before"
)

var annotationKeys = []string{AnnotationDNSNames, AnnotationURISANs, AnnotationRenewBefore}

// identity is what a request's annotations ask for, with templates
// expanded and defaults applied.
type identity struct {
	dnsNames []string
	uris     []*url.URL
	// renewBefore is zero for the default.
	renewBefore time.Duration
}

// parseAnnotations reads annotations for pod. Every key must be one of
// annotationKeys, as the API asks of signers: a key certmint does not know
// may be one the user meant for another signer, or a typo, and either way
// the certificate would not be the one asked for. trustDomain names the
// default SPIFFE ID. The error names every problem, each with its key.
func parseAnnotations(annotations map[string]string, pod attributes.Pod, trustDomain string) (identity, error) {
	var id identity
	var problems []string
	fail := func(key, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	for key := range annotations {
		if !slices.Contains(annotationKeys, key) {
			fail(request.Quote(key), "not an annotation certmint knows; use %s", strings.Join(annotationKeys, ", "))
		}
	}
	list := func(key string) []string {
		v, ok := annotations[key]
		if !ok {
			return nil
		}
		expanded, err := attributes.Expand(v, pod)
		if err != nil {
			fail(key, "%v", err)
			return nil
		}
		var out []string
		for item := range strings.SplitSeq(expanded, ",") {
			if item = strings.TrimSpace(item); item == "" {
				fail(key, "empty element in comma-separated list %s", request.Quote(v))
				return nil
			}
			out = append(out, item)
		}
		return out
	}
	for _, name := range list(AnnotationDNSNames) {
		check := validation.IsDNS1123Subdomain
		if strings.HasPrefix(name, "*.") {
			check = validation.IsWildcardDNS1123Subdomain
		}
		if errs := check(name); len(errs) > 0 {
			fail(AnnotationDNSNames, "%s is not a valid DNS name: %s", request.Quote(name), strings.Join(errs, ", "))
			continue
		}
		id.dnsNames = append(id.dnsNames, name)
	}
	if _, ok := annotations[AnnotationURISANs]; ok {
		for _, s := range list(AnnotationURISANs) {
			u, err := url.Parse(s)
			if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") {
				fail(AnnotationURISANs, "%s is not an absolute URI with scheme and host", request.Quote(s))
				continue
			}
			id.uris = append(id.uris, u)
		}
	} else {
		id.uris = []*url.URL{{Scheme: "spiffe", Host: trustDomain, Path: "/ns/" + pod.Namespace + "/sa/" + pod.ServiceAccountName}}
	}
	if v, ok := annotations[AnnotationRenewBefore]; ok {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			fail(AnnotationRenewBefore, "must be a duration such as \"8h\" or \"30m\": %v", err)
		case d <= 0:
			fail(AnnotationRenewBefore, "must be positive, not %s", request.Quote(v))
		default:
			id.renewBefore = d
		}
	}
	if len(problems) > 0 {
		// Sorted so the message is the same for the same annotations.
		slices.Sort(problems)
		return identity{}, fmt.Errorf("spec.unverifiedUserAnnotations (the projection's userAnnotations): %s", strings.Join(problems, "; "))
	}
	return id, nil
}

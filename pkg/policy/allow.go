package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

// Allowed is what Allow judges: a request for a subject of a binding,
// addressed to an issuer.
type Allowed struct {
	// Issuer is the issuer the request is addressed to, and Policy its
	// policy block; nil means the defaults.
	Issuer request.IssuerRef
	Policy *v1alpha1.Policy
	// ClusterDomain and TrustDomain fill ${CLUSTER_DOMAIN} and
	// ${TRUST_DOMAIN}.
	ClusterDomain string
	TrustDomain   string
	// Binding is who the request is for, as its source established it.
	Binding Binding
	// Request is what the certificate is to say; its Duration is the
	// lifetime asked for, zero for the default.
	Request *issuer.Request
	// AsksForPodIPs: the requester will ask for the pod's addresses as IP
	// SANs once the pod has them, whether or not Request names any yet.
	AsksForPodIPs bool
}

// Allow applies the issuer's policy to what a request asks for, for whom
// it binding established: a namespaced Issuer serves its own namespace
// only, and the certificate (subject, names, lifetime, usages, CA flag,
// key) must be within the policy for that binding. On approval the
// Decision's Duration is the lifetime to issue.
func Allow(in Allowed) Decision {
	req, pol, b := in.Request, in.Policy, in.Binding
	if pol == nil {
		pol = &v1alpha1.Policy{}
	}
	if in.Issuer.Kind == request.KindIssuer && in.Issuer.Namespace != b.Namespace {
		return deny(ReasonWrongNamespace, "%s issues only for namespace %s; %s should use an Issuer in its own namespace or a ClusterIssuer", in.Issuer, in.Issuer.Namespace, b).in(PartIssuer)
	}

	if req.IsCA && !pol.AllowCA {
		return deny(ReasonCANotAllowed, "the request asks for a CA certificate, which %s does not allow (policy.allowCA)", in.Issuer).in(PartIsCA)
	}
	allowedUsages := AllowedUsages
	if pol.AllowCA {
		allowedUsages = slices.Concat(AllowedUsages, CAUsages)
	}
	for _, u := range req.Usages {
		if slices.Contains(CAUsages, u) && !pol.AllowCA {
			return deny(ReasonCANotAllowed, "usage %q is for CA certificates, which %s does not allow (policy.allowCA)", u, in.Issuer).in(PartUsages)
		}
		if !slices.Contains(allowedUsages, u) {
			return deny(ReasonUsageNotAllowed, "usage %q is not allowed; allowed usages are %s", u, joinUsages(allowedUsages)).in(PartUsages)
		}
	}

	if d, ok := checkKey(req.PublicKey, pol); !ok {
		return d
	}

	maxDuration, duration := MaxDuration(pol), req.Duration
	if duration == 0 {
		duration = min(DefaultDuration, maxDuration)
	}
	if duration > maxDuration {
		return deny(ReasonDurationTooLong, "the requested duration %s is longer than %s allows (%s); ask for %s or less", duration, in.Issuer, maxDuration, maxDuration).in(PartDuration)
	}

	if len(req.IPAddresses) > 0 || in.AsksForPodIPs {
		if d, ok := checkPodIPs(req.IPAddresses, pol.PodIPs, b, in.Issuer); !ok {
			return d
		}
	}
	if len(req.EmailAddresses) > 0 {
		return deny(ReasonEmailForbidden, "email address SANs (%s) are not allowed", request.QuoteAll(req.EmailAddresses)).in(PartEmailAddresses)
	}
	if d, ok := checkSubject(req.Subject); !ok {
		return d
	}
	if req.Subject.CommonName == "" && len(req.DNSNames) == 0 && len(req.URIs) == 0 && len(req.IPAddresses) == 0 {
		return deny(ReasonNoIdentity, "the request names no identity: set a common name, DNS names, URIs or IP addresses").in(PartIdentity)
	}

	values := b.templateValues(in.ClusterDomain, in.TrustDomain)
	dnsRaw := orDefault(pol.AllowedDNSNames, DefaultDNSNames)
	dnsPatterns := expandDNS(dnsRaw, values)
	uriPatterns := expand(orDefault(pol.AllowedURIs, DefaultURIs), values)
	dnsAllowed := func(n string) bool {
		n = strings.ToLower(n)
		if isLocalhost(n) {
			// Resolves to the verifier itself wherever it is checked, so
			// only a policy that names it outright grants it.
			return slices.Contains(dnsRaw, n)
		}
		return matchAny(dnsPatterns, n, dnsLabelChar)
	}
	for _, n := range req.DNSNames {
		if !isDNSName(n) {
			return deny(ReasonNameNotAllowed, "DNS name %s is not a valid DNS name (RFC 1123, optionally with a leading *.)", request.Quote(n)).in(PartDNSNames)
		}
		if !dnsAllowed(n) {
			return deny(ReasonNameNotAllowed, "DNS name %s is not allowed for %s; allowed: %s", request.Quote(n), b, listOrNone(dnsPatterns)).in(PartDNSNames)
		}
	}
	for _, u := range req.URIs {
		// Matched as the certificate will spell it. A query, fragment,
		// user info or %-escape passes only where the pattern has it
		// literally, since '*' never matches '?', '#', '@' or '%'.
		if !matchAny(uriPatterns, u.String(), uriWildcardChar) {
			return deny(ReasonNameNotAllowed, "URI %s is not allowed for %s; allowed: %s", request.Quote(u.String()), b, listOrNone(uriPatterns)).in(PartURIs)
		}
	}
	if cn := req.Subject.CommonName; cn != "" &&
		(!isDNSName(cn) || !dnsAllowed(cn)) &&
		!matchAny(uriPatterns, cn, uriWildcardChar) {
		return deny(ReasonNameNotAllowed, "common name %s is not allowed for %s; it must be an allowed DNS name or URI", request.Quote(cn), b).in(PartCommonName)
	}
	return Decision{Allowed: true, Reason: ReasonApproved, Message: b.String(), Duration: duration}
}

var (
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// checkSubject guards the subject attributes the name checks cannot see.
// The certificate copies the request's subject verbatim, but
// req.Subject.CommonName is only the last CN: with several, the others would
// be issued unchecked. An emailAddress attribute is an email identity by the
// back door, which the SAN rules forbid. Every value is bounded as X.509
// bounds it, so no request makes a certificate (or a message quoting it)
// of any size it likes.
func checkSubject(subject pkix.Name) (Decision, bool) {
	if n := len(subject.Names); n > request.MaxSubjectAttributes {
		return deny(ReasonSubjectNotAllowed, "the subject has %d attributes; at most %d are allowed", n, request.MaxSubjectAttributes).in(PartSubject), false
	}
	commonNames := 0
	for _, atv := range subject.Names {
		value, ok := atv.Value.(string)
		if !ok {
			return deny(ReasonSubjectNotAllowed, "the subject attribute %s is not a string", atv.Type).in(PartSubject), false
		}
		if err := request.CheckSubjectValue(atv.Type, value); err != nil {
			return deny(ReasonSubjectNotAllowed, "the subject's %v", err).in(PartSubject), false
		}
		switch {
		case atv.Type.Equal(oidCommonName):
			commonNames++
		case atv.Type.Equal(oidEmailAddress):
			return deny(ReasonEmailForbidden, "the subject has an emailAddress attribute (%s), which is not allowed", request.Quote(value)).in(PartSubject), false
		}
	}
	if commonNames > 1 {
		return deny(ReasonSubjectNotAllowed, "the subject has %d common names; a certificate may have one (put further names in DNS names)", commonNames).in(PartSubject), false
	}
	return Decision{}, true
}

// MaxDuration is the longest lifetime pol allows.
func MaxDuration(pol *v1alpha1.Policy) time.Duration {
	if pol != nil && pol.MaxDuration != nil {
		return pol.MaxDuration.Duration
	}
	return DefaultMaxDuration
}

func checkKey(pub crypto.PublicKey, pol *v1alpha1.Policy) (Decision, bool) {
	var alg v1alpha1.KeyAlgorithm
	var size int
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		alg, size = v1alpha1.KeyAlgorithmECDSA, k.Curve.Params().BitSize
	case *rsa.PublicKey:
		alg, size = v1alpha1.KeyAlgorithmRSA, k.N.BitLen()
	case ed25519.PublicKey:
		alg = v1alpha1.KeyAlgorithmEd25519
	default:
		return deny(ReasonKeyTypeNotAllowed, "the request's public key (%T) is of an unsupported type", pub).in(PartKey), false
	}
	allowed := pol.AllowedKeyTypes
	if len(allowed) == 0 {
		allowed = DefaultKeyTypes
	}
	var names []string
	for _, kt := range allowed {
		minSize := 0
		switch {
		case kt.MinSize != nil:
			minSize = int(*kt.MinSize)
		case kt.Algorithm == v1alpha1.KeyAlgorithmECDSA:
			minSize = 256
		case kt.Algorithm == v1alpha1.KeyAlgorithmRSA:
			minSize = 2048
		}
		if kt.Algorithm == alg && size >= minSize {
			return Decision{}, true
		}
		if minSize > 0 {
			names = append(names, fmt.Sprintf("%s (%d bits or more)", kt.Algorithm, minSize))
		} else {
			names = append(names, string(kt.Algorithm))
		}
	}
	got := string(alg)
	if size > 0 {
		got = fmt.Sprintf("%s %d", alg, size)
	}
	return deny(ReasonKeyTypeNotAllowed, "key %s is not allowed; allowed: %s", got, strings.Join(names, ", ")).in(PartKey), false
}

// orDefault returns set unless it is nil; an empty non-nil list is a policy
// that allows nothing.
func orDefault(set, def []string) []string {
	if set == nil {
		return def
	}
	return set
}

// templates are the templates patterns may use.
var templates = []string{TemplatePodName, TemplatePodNamespace, TemplateServiceAccountName, TemplateClusterDomain, TemplateTrustDomain}

// expand fills in the templates of patterns, leaving out every pattern that
// uses a template whose value is empty: an empty value would leave a name
// with an empty label or an empty path segment, which names nothing the
// policy author meant.
func expand(patterns []string, values map[string]string) []string {
	pairs := make([]string, 0, 2*len(templates))
	for _, t := range templates {
		pairs = append(pairs, t, values[t])
	}
	replacer := strings.NewReplacer(pairs...)
	out := make([]string, 0, len(patterns))
	for _, p := range patterns {
		if slices.ContainsFunc(templates, func(t string) bool { return strings.Contains(p, t) && values[t] == "" }) {
			continue
		}
		out = append(out, replacer.Replace(p))
	}
	return out
}

// singleLabelTemplates are the templates whose values the pod's author
// chooses. Each may fill exactly one DNS label: a pod named
// "api.prod.svc" must not get that name through ${POD_NAME}.
var singleLabelTemplates = []string{TemplatePodName, TemplateServiceAccountName}

// expandDNS expands DNS patterns, leaving out every pattern in which a
// pod-chosen value would span more than one label.
func expandDNS(patterns []string, values map[string]string) []string {
	kept := slices.DeleteFunc(slices.Clone(patterns), func(p string) bool {
		return slices.ContainsFunc(singleLabelTemplates, func(t string) bool {
			return strings.Contains(p, t) && strings.Contains(values[t], ".")
		})
	})
	return expand(kept, values)
}

// isLocalhost reports whether the lower-case DNS name name is localhost or a
// name under it (RFC 6761).
func isLocalhost(name string) bool {
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// isDNSName reports whether name is a DNS name a certificate may carry: an
// RFC 1123 subdomain, or one with a leading "*." label. Anything else (NUL
// bytes, ports, slashes) could read differently to different verifiers.
func isDNSName(name string) bool {
	name = strings.ToLower(name)
	if strings.HasPrefix(name, "*.") {
		return len(validation.IsWildcardDNS1123Subdomain(name)) == 0
	}
	return len(validation.IsDNS1123Subdomain(name)) == 0
}

// dnsLabelChar is what '*' may match in a DNS pattern: anything within one
// label. The name was validated before, so that is [a-z0-9-] (and '*').
func dnsLabelChar(c byte) bool { return c != '.' }

// uriWildcardChar is what '*' may match in a URI pattern: RFC 3986
// unreserved characters. So it stays within one path segment, never decodes
// to another character (no '%'), and never reaches into a query, fragment
// or user info.
func uriWildcardChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func matchAny(patterns []string, s string, wildcardChar func(byte) bool) bool {
	for _, p := range patterns {
		if glob(p, s, wildcardChar) {
			return true
		}
	}
	return false
}

// glob reports whether s matches pattern, where '*' matches one or more
// characters for which wildcardChar holds, but never exactly "." or ".."
// (a path segment that means "this" or "the parent" to whoever resolves
// it). Template values never contain '*', so after expansion every '*' is
// the policy author's.
func glob(pattern, s string, wildcardChar func(byte) bool) bool {
	for len(pattern) > 0 {
		if pattern[0] != '*' {
			if len(s) == 0 || s[0] != pattern[0] {
				return false
			}
			pattern, s = pattern[1:], s[1:]
			continue
		}
		pattern = pattern[1:]
		for i := 1; i <= len(s) && wildcardChar(s[i-1]); i++ {
			if m := s[:i]; m == "." || m == ".." {
				continue
			}
			if glob(pattern, s[i:], wildcardChar) {
				return true
			}
		}
		return false
	}
	return len(s) == 0
}

func joinUsages(us []certificatesv1.KeyUsage) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = string(u)
	}
	return strings.Join(s, ", ")
}

func listOrNone(patterns []string) string {
	if len(patterns) == 0 {
		return "none (the issuer's policy allows no names of this kind)"
	}
	return strings.Join(patterns, ", ")
}

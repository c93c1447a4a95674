package attributes

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certmint/certmint/pkg/certspec"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/request"
)

// Duration limits. The API server refuses a CSR expirationSeconds below ten
// minutes; a shorter certificate could not be renewed in time anyway.
const (
	DefaultDuration = 24 * time.Hour
	MinDuration     = 10 * time.Minute
)

// Spec is what a volume asks for, fully validated and with templates
// expanded and defaults applied: which certificate, and how the volume lays
// it out.
type Spec struct {
	Pod Pod
	// Certificate is what to ask for, but for the pod's addresses, which
	// PodIPs says to add once they are known: see CertificateFor.
	Certificate certspec.Spec
	PodIPs      PodIPs
	Volume      Layout
}

// Layout is how a volume holds its certificate: which files, in which
// encodings, owned by which group.
type Layout struct {
	// KeyEncoding is the PEM encoding of the private key file.
	KeyEncoding keystore.Encoding
	Files       Files
	// FSGroup is the group the files belong to; nil leaves the choice to
	// the pod's fsGroup, if any.
	FSGroup *int64
	// PKCS12 and JKS are nil unless the keystore is enabled.
	PKCS12 *Keystore
	JKS    *Keystore
}

// Files names the files written into the volume.
type Files struct {
	Certificate string
	PrivateKey  string
	CA          string
}

// Keystore is an optional PKCS#12 or JKS file.
type Keystore struct {
	Filename string
	Password string
}

// MarshalLog keeps keystore passwords out of structured logs.
func (k Keystore) MarshalLog() any {
	return map[string]string{"filename": k.Filename, "password": "[redacted]"}
}

// Parse validates attrs, the volume context of a NodePublishVolume call, and
// returns the Spec it describes. Keys outside Prefix are ignored except the
// kubelet's pod keys, which must be present. The error, if any, is an *Error
// listing every invalid attribute.
func Parse(attrs map[string]string) (*Spec, error) {
	p := &parser{attrs: attrs}
	spec := p.parse()
	if len(p.errs) > 0 {
		return nil, &Error{Fields: p.errs}
	}
	return spec, nil
}

type parser struct {
	attrs map[string]string
	pod   Pod
	errs  []*FieldError
}

func (p *parser) fail(key, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Key: key, Message: fmt.Sprintf(format, args...)})
}

// get returns the value of key, reporting whether it is set. A key set to ""
// is an error rather than "use the default", so an empty template result or
// a stray empty line is not taken as intent.
func (p *parser) get(key string) (string, bool) {
	v, ok := p.attrs[key]
	if !ok {
		return "", false
	}
	if strings.TrimSpace(v) == "" {
		p.fail(key, "must not be empty; remove it to use the default")
		return "", false
	}
	return v, true
}

// expanded is get with ${...} variables replaced.
func (p *parser) expanded(key string) (string, bool) {
	v, ok := p.get(key)
	if !ok {
		return "", false
	}
	out, err := Expand(v, p.pod)
	if err != nil {
		p.fail(key, "%v", err)
		return "", false
	}
	return out, true
}

// list splits a comma-separated attribute, optionally expanding variables.
func (p *parser) list(key string, expand bool) []string {
	get := p.get
	if expand {
		get = p.expanded
	}
	v, ok := get(key)
	if !ok {
		return nil
	}
	var out []string
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			p.fail(key, "empty element in comma-separated list %s", request.Quote(v))
			return nil
		}
		out = append(out, item)
	}
	return out
}

func (p *parser) boolean(key string) bool {
	v, ok := p.get(key)
	if !ok {
		return false
	}
	switch v {
	case "true":
		return true
	case "false":
		return false
	}
	p.fail(key, "must be \"true\" or \"false\", not %s", request.Quote(v))
	return false
}

func (p *parser) duration(key string) (time.Duration, bool) {
	v, ok := p.get(key)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.fail(key, "must be a duration such as \"24h\" or \"90m\": %v", err)
		return 0, false
	}
	return d, true
}

func (p *parser) parse() *Spec {
	for k := range p.attrs {
		switch {
		case known[k], strings.HasPrefix(k, kubeletPrefix):
		case strings.HasPrefix(k, Prefix):
			p.fail(k, "unknown attribute%s; see the list of %s attributes in the documentation", suggest(k), Prefix)
		default:
			// A volume's attributes come from the pod spec alone, so any
			// other key is a mistake: a typo in the prefix, or another
			// driver's attribute, silently ignored, would give a
			// certificate other than the one asked for.
			p.fail(k, "not a certmint attribute: certmint volumes take only %s attributes%s", Prefix, suggest(k))
		}
	}
	spec := &Spec{}
	c, v := &spec.Certificate, &spec.Volume
	p.parsePod(spec)
	p.parseIssuer(c)
	p.parseSubject(c)
	spec.PodIPs = p.parseSANs(c)
	p.parseKey(c, v)
	p.parseLifetime(c)
	p.parseUsages(c)
	p.parseFiles(v)
	if c.CommonName() == "" && len(c.DNSNames) == 0 && len(c.IPAddresses) == 0 &&
		len(c.URIs) == 0 && len(p.errs) == 0 {
		if spec.PodIPs != NoPodIPs {
			// The first certificate is issued before the pod has an
			// address, and a certificate must name something.
			p.fail(IPSANs, "the pod has no address yet when its volume is published, so the certificate needs another identity as well: set common-name, literal-subject, dns-names, uri-sans or spiffe-id")
		} else {
			p.fail(CommonName, "the certificate names no identity: set common-name, literal-subject, dns-names, ip-sans, uri-sans or spiffe-id")
		}
	}
	// Sorted so the error message is stable from one attempt to the next.
	slices.SortStableFunc(p.errs, func(a, b *FieldError) int { return strings.Compare(a.Key, b.Key) })
	return spec
}

func (p *parser) parsePod(spec *Spec) {
	for key, dst := range map[string]*string{
		PodNameKey:            &p.pod.Name,
		PodNamespaceKey:       &p.pod.Namespace,
		PodUIDKey:             &p.pod.UID,
		ServiceAccountNameKey: &p.pod.ServiceAccountName,
	} {
		v, ok := p.attrs[key]
		if !ok || v == "" && key != ServiceAccountNameKey {
			p.fail(key, "missing: the kubelet passes pod information only when the CSIDriver object %q has podInfoOnMount: true", request.DriverName)
			continue
		}
		*dst = v
	}
	// The kubelet passes what the API server stored, but over a socket:
	// check the values as the API does, so that a value no pod can have is
	// refused here and never reaches a request.
	if p.pod.Name != "" && p.pod.Namespace != "" && p.pod.UID != "" {
		if err := request.ValidatePodReference(p.pod.Namespace, p.pod.Name, p.pod.UID); err != nil {
			p.fail(PodNameKey, "the kubelet passed a pod no API server accepts: %v", err)
		}
	}
	if _, ok := p.attrs[ServiceAccountNameKey]; ok {
		if p.pod.ServiceAccountName == "" {
			p.fail(ServiceAccountNameKey, "the pod has no ServiceAccount (a static pod?): certmint issues only to pods with an identity")
		} else if err := request.ValidateServiceAccountName(p.pod.ServiceAccountName); err != nil {
			p.fail(ServiceAccountNameKey, "the kubelet passed %v", err)
		}
	}
	spec.Pod = p.pod
}

func (p *parser) parseIssuer(spec *certspec.Spec) {
	kind := request.KindIssuer
	if v, ok := p.get(IssuerKind); ok {
		k, err := request.ParseIssuerKind(v)
		if err != nil {
			p.fail(IssuerKind, "%v", err)
		}
		kind = k
	}
	name, ok := p.get(IssuerName)
	if !ok {
		if _, set := p.attrs[IssuerName]; !set {
			p.fail(IssuerName, "required: name the Issuer (or, with issuer-kind: ClusterIssuer, the ClusterIssuer) that signs this certificate")
		}
		return
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		p.fail(IssuerName, "%s is not a valid object name: %s", request.Quote(name), strings.Join(errs, ", "))
		return
	}
	spec.Issuer = request.IssuerRef{Kind: kind, Name: name}
	if kind == request.KindIssuer {
		spec.Issuer.Namespace = p.pod.Namespace
	}
}

// subjectFields are the subject attributes literal-subject replaces; it
// cannot be combined with any of them.
var subjectFields = []string{CommonName, Organizations, OrganizationalUnits, Countries, Provinces,
	Localities, StreetAddresses, PostalCodes, SerialNumber}

func (p *parser) parseSubject(spec *certspec.Spec) {
	if literal, ok := p.expanded(LiteralSubject); ok {
		for _, k := range subjectFields {
			if _, set := p.attrs[k]; set {
				p.fail(LiteralSubject, "cannot be combined with %s: put that part of the subject into the literal subject", k)
				return
			}
		}
		seq, err := ParseLiteralSubject(literal)
		if errors.Is(err, errSeveralCommonNames) {
			p.fail(LiteralSubject, "has %v", err)
			return
		}
		if err != nil {
			p.fail(LiteralSubject, "not an RFC 4514 distinguished name: %v", err)
			return
		}
		raw, err := asn1.Marshal(seq)
		if err != nil {
			p.fail(LiteralSubject, "cannot be encoded: %v", err)
			return
		}
		count := 0
		for _, rdn := range seq {
			for _, atv := range rdn {
				count++
				if err := request.CheckSubjectValue(atv.Type, fmt.Sprint(atv.Value)); err != nil {
					p.fail(LiteralSubject, "%v", err)
				}
			}
		}
		if count > request.MaxSubjectAttributes {
			p.fail(LiteralSubject, "has %d attributes; at most %d are allowed", count, request.MaxSubjectAttributes)
		}
		spec.LiteralSubject = literal
		spec.RawSubject = raw
		spec.Subject.CommonName = commonNameOf(seq)
		return
	}
	s := &spec.Subject
	s.CommonName, _ = p.expanded(CommonName)
	if len(s.CommonName) > 64 {
		p.fail(CommonName, "is %d characters long; X.509 allows at most 64 (put long names in dns-names)", len(s.CommonName))
	}
	s.Organization = p.list(Organizations, true)
	s.OrganizationalUnit = p.list(OrganizationalUnits, true)
	s.Country = p.list(Countries, false)
	s.Province = p.list(Provinces, false)
	s.Locality = p.list(Localities, false)
	s.StreetAddress = p.list(StreetAddresses, false)
	s.PostalCode = p.list(PostalCodes, false)
	s.SerialNumber, _ = p.expanded(SerialNumber)
	for _, c := range s.Country {
		if len(c) != 2 || strings.ToUpper(c) != c {
			p.fail(Countries, "%s is not a two-letter upper-case ISO 3166 country code", request.Quote(c))
		}
	}
	count := 0
	for _, f := range []struct {
		key    string
		oid    asn1.ObjectIdentifier
		values []string
	}{
		{Organizations, oidOrganization, s.Organization},
		{OrganizationalUnits, oidOrganizationalUnit, s.OrganizationalUnit},
		{Provinces, oidProvince, s.Province},
		{Localities, oidLocality, s.Locality},
		{StreetAddresses, oidStreetAddress, s.StreetAddress},
		{PostalCodes, oidPostalCode, s.PostalCode},
		{SerialNumber, oidSerialNumber, nonEmpty(s.SerialNumber)},
	} {
		count += len(f.values)
		for _, v := range f.values {
			if err := request.CheckSubjectValue(f.oid, v); err != nil {
				p.fail(f.key, "%v", err)
			}
		}
	}
	if count += len(s.Country) + len(nonEmpty(s.CommonName)); count > request.MaxSubjectAttributes {
		p.fail(Organizations, "the subject has %d attributes; at most %d are allowed", count, request.MaxSubjectAttributes)
	}
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// parseSANs parses the SAN attributes into spec and returns which of the
// pod's addresses ip-sans asks for besides.
func (p *parser) parseSANs(spec *certspec.Spec) PodIPs {
	podIPs := p.parseIPSANs(spec)
	for _, name := range p.list(DNSNames, true) {
		check := validation.IsDNS1123Subdomain
		if strings.HasPrefix(name, "*.") {
			check = validation.IsWildcardDNS1123Subdomain
		}
		if errs := check(name); len(errs) > 0 {
			p.fail(DNSNames, "%s is not a valid DNS name: %s", request.Quote(name), strings.Join(errs, ", "))
			continue
		}
		spec.DNSNames = append(spec.DNSNames, name)
	}
	for _, s := range p.list(URISANs, true) {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") {
			p.fail(URISANs, "%s is not an absolute URI with scheme and host", request.Quote(s))
			continue
		}
		spec.URIs = append(spec.URIs, u)
	}
	if s, ok := p.expanded(SPIFFEID); ok {
		u, err := parseSPIFFEID(s)
		if err != nil {
			p.fail(SPIFFEID, "%s is not a SPIFFE ID: %v", request.Quote(s), err)
			return podIPs
		}
		for _, existing := range spec.URIs {
			if existing.String() == u.String() {
				p.fail(SPIFFEID, "%s is also listed in %s; name it once", request.Quote(s), URISANs)
				return podIPs
			}
		}
		spec.URIs = append(spec.URIs, u)
	}
	return podIPs
}

// parseIPSANs parses ip-sans: literal addresses into spec, and which of
// the pod's addresses its templates ask for. A template is a whole element:
// it stands for addresses, not for text inside one.
func (p *parser) parseIPSANs(spec *certspec.Spec) PodIPs {
	podIPs := NoPodIPs
	for _, s := range p.list(IPSANs, false) {
		var want PodIPs
		switch s {
		case "${" + VarPodIP + "}":
			want = PrimaryPodIP
		case "${" + VarPodIPs + "}":
			want = AllPodIPs
		}
		switch {
		case want != NoPodIPs && podIPs != NoPodIPs:
			p.fail(IPSANs, "names the pod's addresses twice: use ${%s} for the primary address or ${%s} for all of them, once", VarPodIP, VarPodIPs)
		case want != NoPodIPs:
			podIPs = want
		case strings.Contains(s, "${"):
			p.fail(IPSANs, "%s is neither an IP address nor a template of this attribute: ip-sans takes ${%s} or ${%s}, each as a whole element", request.Quote(s), VarPodIP, VarPodIPs)
		default:
			ip := net.ParseIP(s)
			if ip == nil {
				p.fail(IPSANs, "%s is not an IP address", request.Quote(s))
				continue
			}
			spec.IPAddresses = append(spec.IPAddresses, ip)
		}
	}
	return podIPs
}

// parseSPIFFEID checks s against the SPIFFE ID rules: spiffe scheme, a trust
// domain and nothing but a path after it.
func parseSPIFFEID(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme != "spiffe":
		return nil, fmt.Errorf("scheme must be spiffe")
	case u.Host == "":
		return nil, fmt.Errorf("trust domain is missing (spiffe://<trust-domain>/<path>)")
	case u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("must not have user info, port, query or fragment")
	case strings.ToLower(u.Host) != u.Host:
		return nil, fmt.Errorf("trust domain must be lower case")
	}
	return u, nil
}

func (p *parser) parseKey(spec *certspec.Spec, layout *Layout) {
	k := &spec.Key
	k.Algorithm = keystore.ECDSA
	if v, ok := p.get(KeyAlgorithm); ok {
		alg, err := keystore.ParseAlgorithm(v)
		if err != nil {
			p.fail(KeyAlgorithm, "%v", err)
			return
		}
		k.Algorithm = alg
	}
	k.Size = keystore.DefaultSize(k.Algorithm)
	if v, ok := p.get(KeySize); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			p.fail(KeySize, "must be a number of bits, not %s", request.Quote(v))
		} else if err := keystore.CheckSize(k.Algorithm, n); err != nil {
			p.fail(KeySize, "%v", err)
		} else {
			k.Size = n
		}
	}
	layout.KeyEncoding = keystore.PKCS8
	if v, ok := p.get(KeyEncoding); ok {
		enc, err := keystore.ParseEncoding(v)
		if err != nil {
			p.fail(KeyEncoding, "%v", err)
		} else if err := keystore.CheckEncoding(k.Algorithm, enc); err != nil {
			p.fail(KeyEncoding, "%v", err)
		} else {
			layout.KeyEncoding = enc
		}
	}
	k.Reuse = p.boolean(ReusePrivateKey)
}

func (p *parser) parseLifetime(spec *certspec.Spec) {
	spec.Duration = DefaultDuration
	if d, ok := p.duration(Duration); ok {
		switch {
		case d < MinDuration:
			p.fail(Duration, "%s is too short; the minimum is %s", d, MinDuration)
		case d.Seconds() > math.MaxInt32:
			p.fail(Duration, "%s is too long", d)
		default:
			spec.Duration = d
		}
	}
	if d, ok := p.duration(RenewBefore); ok {
		if d <= 0 || d >= spec.Duration {
			p.fail(RenewBefore, "%s must be positive and shorter than the duration (%s)", d, spec.Duration)
		} else {
			spec.RenewBefore = d
		}
	}
	spec.IsCA = p.boolean(IsCA)
}

// knownUsages are the key usages a CSR may carry.
var knownUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageSigning, certificatesv1.UsageDigitalSignature, certificatesv1.UsageContentCommitment,
	certificatesv1.UsageKeyEncipherment, certificatesv1.UsageKeyAgreement, certificatesv1.UsageDataEncipherment,
	certificatesv1.UsageCertSign, certificatesv1.UsageCRLSign, certificatesv1.UsageEncipherOnly,
	certificatesv1.UsageDecipherOnly, certificatesv1.UsageAny, certificatesv1.UsageServerAuth,
	certificatesv1.UsageClientAuth, certificatesv1.UsageCodeSigning, certificatesv1.UsageEmailProtection,
	certificatesv1.UsageSMIME, certificatesv1.UsageIPsecEndSystem, certificatesv1.UsageIPsecTunnel,
	certificatesv1.UsageIPsecUser, certificatesv1.UsageTimestamping, certificatesv1.UsageOCSPSigning,
	certificatesv1.UsageMicrosoftSGC, certificatesv1.UsageNetscapeSGC,
}

func (p *parser) parseUsages(spec *certspec.Spec) {
	if _, set := p.attrs[KeyUsages]; !set {
		spec.Usages = DefaultUsages(spec.Key.Algorithm, spec.IsCA)
		return
	}
	for _, u := range p.list(KeyUsages, false) {
		usage := certificatesv1.KeyUsage(strings.ToLower(u))
		if !slices.Contains(knownUsages, usage) {
			p.fail(KeyUsages, "unknown key usage %s (examples: \"digital signature\", \"key encipherment\", \"server auth\", \"client auth\")", request.Quote(u))
			continue
		}
		if slices.Contains(spec.Usages, usage) {
			p.fail(KeyUsages, "key usage %s is listed twice", request.Quote(u))
			continue
		}
		spec.Usages = append(spec.Usages, usage)
	}
}

// DefaultUsages are the usages of a certificate whose volume names none:
// enough for TLS servers and clients. Key encipherment only applies to RSA
// key exchange; a CA certificate also needs cert sign.
func DefaultUsages(alg keystore.Algorithm, isCA bool) []certificatesv1.KeyUsage {
	usages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature}
	if alg == keystore.RSA {
		usages = append(usages, certificatesv1.UsageKeyEncipherment)
	}
	if isCA {
		usages = append(usages, certificatesv1.UsageCertSign)
	}
	return append(usages, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth)
}

func (p *parser) parseFiles(spec *Layout) {
	used := map[string]string{}
	file := func(key, def string) string {
		name, ok := p.get(key)
		if !ok {
			name = def
		} else if err := checkFilename(name); err != nil {
			p.fail(key, "%v", err)
			return ""
		}
		if other, dup := used[name]; dup {
			p.fail(key, "file name %s is also used by %s", request.Quote(name), other)
			return ""
		}
		used[name] = key
		return name
	}
	spec.Files.Certificate = file(CertificateFile, DefaultCertificateFile)
	spec.Files.PrivateKey = file(PrivateKeyFile, DefaultPrivateKeyFile)
	spec.Files.CA = file(CAFile, DefaultCAFile)

	keystoreFile := func(enableKey, nameKey, passwordKey, def string) *Keystore {
		if !p.boolean(enableKey) {
			for _, k := range []string{nameKey, passwordKey} {
				if _, set := p.attrs[k]; set {
					p.fail(k, "has no effect unless %s is \"true\"", enableKey)
				}
			}
			return nil
		}
		ks := &Keystore{Filename: file(nameKey, def)}
		if pw, ok := p.attrs[passwordKey]; ok && pw != "" {
			ks.Password = pw
		} else {
			p.fail(passwordKey, "required when %s is \"true\"", enableKey)
		}
		return ks
	}
	spec.PKCS12 = keystoreFile(PKCS12Enable, PKCS12Filename, PKCS12Password, DefaultPKCS12Filename)
	spec.JKS = keystoreFile(JKSEnable, JKSFilename, JKSPassword, DefaultJKSFilename)

	if v, ok := p.get(FSGroup); ok {
		gid, err := strconv.ParseInt(v, 10, 64)
		if err != nil || gid < 0 || gid > math.MaxInt32 {
			p.fail(FSGroup, "must be a group ID from 0 to %d, not %s", math.MaxInt32, request.Quote(v))
		} else {
			spec.FSGroup = &gid
		}
	}
}

// checkFilename accepts a plain file name: the files all live in the volume's
// top directory, and names starting with ".." are the atomic writer's own.
func checkFilename(name string) error {
	switch {
	case name != filepath.Base(name) || strings.ContainsRune(name, '/'):
		return fmt.Errorf("%s must be a file name without a directory", request.Quote(name))
	case name == "." || strings.HasPrefix(name, ".."):
		return fmt.Errorf("%s is reserved: file names must not start with \"..\"", request.Quote(name))
	case len(name) > 255:
		return fmt.Errorf("file name is longer than 255 characters")
	}
	return nil
}

package attributes

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"maps"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/request"
)

// base is the smallest valid volume: the kubelet's pod keys and an issuer.
func base() map[string]string {
	return map[string]string{
		PodNameKey:            "web-0",
		PodNamespaceKey:       "shop",
		PodUIDKey:             "0b6c4a1e-8f1e-4c59-a7d0-6d1f8f3c0d11",
		ServiceAccountNameKey: "web",
		EphemeralKey:          "true",
		IssuerName:            "ca",
		CommonName:            "web",
	}
}

// unset as a value in with removes the key.
const unset = "\x00unset"

func with(kv ...string) map[string]string {
	attrs := base()
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == unset {
			delete(attrs, kv[i])
			continue
		}
		attrs[kv[i]] = kv[i+1]
	}
	return attrs
}

func without(keys ...string) map[string]string {
	attrs := base()
	for _, k := range keys {
		delete(attrs, k)
	}
	return attrs
}

func TestParseAcceptsValidAttributes(t *testing.T) {
	gid := int64(2000)
	cases := []struct {
		name  string
		attrs map[string]string
		check func(t *testing.T, s *Spec)
	}{
		{"defaults give an ECDSA P-256 TLS certificate for a day from the pod's namespaced Issuer", base(), func(t *testing.T, s *Spec) {
			want := request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}
			eq(t, s.Certificate.Issuer, want)
			eq(t, s.Certificate.Key, certspec.Key{Algorithm: keystore.ECDSA, Size: 256})
			eq(t, s.Volume.KeyEncoding, keystore.PKCS8)
			eq(t, s.Certificate.Duration, 24*time.Hour)
			eq(t, s.Certificate.RenewBefore, time.Duration(0))
			eq(t, s.Certificate.Usages, []certificatesv1.KeyUsage{"digital signature", "server auth", "client auth"})
			eq(t, s.Volume.Files, Files{Certificate: "tls.crt", PrivateKey: "tls.key", CA: "ca.crt"})
			eq(t, s.Pod, Pod{Name: "web-0", Namespace: "shop", UID: "0b6c4a1e-8f1e-4c59-a7d0-6d1f8f3c0d11", ServiceAccountName: "web"})
			if s.Volume.FSGroup != nil || s.Volume.PKCS12 != nil || s.Volume.JKS != nil || s.Certificate.IsCA {
				t.Errorf("optional features on by default: %+v", s)
			}
		}},
		{"issuer-kind ClusterIssuer names a cluster-scoped issuer", with(IssuerKind, "ClusterIssuer"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Issuer, request.IssuerRef{Kind: request.KindClusterIssuer, Name: "ca"})
			eq(t, s.Certificate.Issuer.SignerName(), "clusterissuers.certmint.io/ca")
		}},
		{"issuer-kind Issuer is the default spelled out", with(IssuerKind, "Issuer"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Issuer.SignerName(), "issuers.certmint.io/shop.ca")
		}},
		{"subject fields fill the subject", with(
			Organizations, "Example Corp, Other", OrganizationalUnits, "${POD_NAMESPACE}", Countries, "DE,FR",
			Provinces, "Berlin", Localities, "Berlin", StreetAddresses, "Main St 1", PostalCodes, "10115",
			SerialNumber, "${POD_UID}"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Subject, pkix.Name{CommonName: "web", Organization: []string{"Example Corp", "Other"},
				OrganizationalUnit: []string{"shop"}, Country: []string{"DE", "FR"}, Province: []string{"Berlin"},
				Locality: []string{"Berlin"}, StreetAddress: []string{"Main St 1"}, PostalCode: []string{"10115"},
				SerialNumber: "0b6c4a1e-8f1e-4c59-a7d0-6d1f8f3c0d11"})
		}},
		{"literal-subject is kept verbatim and gives the common name", with(CommonName, unset, LiteralSubject, `CN=${POD_NAME},O=Example\, Inc.,C=DE`), checkLiteralSubject},
		{"SANs are parsed and templated", with(DNSNames, "${POD_NAME}.${POD_NAMESPACE}.svc, *.example.com", IPSANs, "10.0.0.1,::1",
			URISANs, "https://example.com/${SERVICE_ACCOUNT_NAME}", SPIFFEID, "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.DNSNames, []string{"web-0.shop.svc", "*.example.com"})
			eq(t, s.Certificate.IPAddresses, []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("::1")})
			if len(s.Certificate.URIs) != 2 || s.Certificate.URIs[0].String() != "https://example.com/web" || s.Certificate.URIs[1].String() != "spiffe://cluster.local/ns/shop/sa/web" {
				t.Errorf("URIs = %v", s.Certificate.URIs)
			}
		}},
		{"${POD_IP} in ip-sans asks for the pod's primary address, known only later", with(IPSANs, "${POD_IP}"), func(t *testing.T, s *Spec) {
			eq(t, s.PodIPs, PrimaryPodIP)
			eq(t, len(s.Certificate.IPAddresses), 0)
			eq(t, len(s.CertificateFor(nil).IPAddresses), 0)
			eq(t, s.CertificateFor(podAddresses).IPAddresses, podAddresses[:1])
		}},
		{"${POD_IPS} in ip-sans asks for every address of the pod", with(IPSANs, " ${POD_IPS} "), func(t *testing.T, s *Spec) {
			eq(t, s.PodIPs, AllPodIPs)
			eq(t, s.CertificateFor(podAddresses).IPAddresses, podAddresses)
		}},
		{"a literal address stays beside the pod's, and one that is the pod's is named once", with(IPSANs, "10.244.1.5,${POD_IPS},10.0.0.1"), func(t *testing.T, s *Spec) {
			literal := []net.IP{net.ParseIP("10.244.1.5"), net.ParseIP("10.0.0.1")}
			eq(t, s.Certificate.IPAddresses, literal)
			eq(t, s.CertificateFor(podAddresses).IPAddresses, append(literal, podAddresses[1]))
			eq(t, s.Certificate.IPAddresses, literal)
		}},
		{"a SPIFFE ID alone is an identity", with(CommonName, unset, SPIFFEID, "spiffe://td/x"), func(t *testing.T, s *Spec) {
			eq(t, len(s.Certificate.URIs), 1)
		}},
		{"duration and renew-before are parsed", with(Duration, "1h", RenewBefore, "20m"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Duration, time.Hour)
			eq(t, s.Certificate.RenewBefore, 20*time.Minute)
		}},
		{"an RSA key gets key encipherment by default", with(KeyAlgorithm, "RSA"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Key, certspec.Key{Algorithm: keystore.RSA, Size: 2048})
			eq(t, s.Volume.KeyEncoding, keystore.PKCS8)
			eq(t, s.Certificate.Usages, []certificatesv1.KeyUsage{"digital signature", "key encipherment", "server auth", "client auth"})
		}},
		{"RSA keys may use PKCS1 and any size from 2048 to 8192", with(KeyAlgorithm, "RSA", KeySize, "4096", KeyEncoding, "PKCS1"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Key, certspec.Key{Algorithm: keystore.RSA, Size: 4096})
			eq(t, s.Volume.KeyEncoding, keystore.PKCS1)
		}},
		{"ECDSA P-384 is chosen by key-size", with(KeySize, "384"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Key.Size, 384)
		}},
		{"Ed25519 has no size", with(KeyAlgorithm, "Ed25519", ReusePrivateKey, "true"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Key, certspec.Key{Algorithm: keystore.Ed25519, Reuse: true})
			eq(t, s.Volume.KeyEncoding, keystore.PKCS8)
		}},
		{"a CA certificate gets cert sign by default", with(IsCA, "true"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.IsCA, true)
			eq(t, s.Certificate.Usages, []certificatesv1.KeyUsage{"digital signature", "cert sign", "server auth", "client auth"})
		}},
		{"key-usages replace the defaults", with(KeyUsages, "digital signature, Client Auth"), func(t *testing.T, s *Spec) {
			eq(t, s.Certificate.Usages, []certificatesv1.KeyUsage{"digital signature", "client auth"})
		}},
		{"file names, fs-group and keystores are set", with(CertificateFile, "cert.pem", PrivateKeyFile, "key.pem", CAFile, "root.pem",
			FSGroup, "2000", PKCS12Enable, "true", PKCS12Password, "changeit", JKSEnable, "true", JKSFilename, "app.jks", JKSPassword, "secret1"), func(t *testing.T, s *Spec) {
			eq(t, s.Volume.Files, Files{Certificate: "cert.pem", PrivateKey: "key.pem", CA: "root.pem"})
			eq(t, s.Volume.FSGroup, &gid)
			eq(t, s.Volume.PKCS12, &Keystore{Filename: "keystore.p12", Password: "changeit"})
			eq(t, s.Volume.JKS, &Keystore{Filename: "app.jks", Password: "secret1"})
		}},
		{"keys the kubelet adds are accepted, even ones it may add later", with("csi.storage.k8s.io/future", "y"), nil},
		{"a subject at X.509's bounds is accepted", with(Organizations, strings.Repeat("o", 64), Localities, strings.Repeat("l", 128), PostalCodes, strings.Repeat("1", 40)), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse(c.attrs)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.check != nil {
				c.check(t, s)
			}
		})
	}
}

// podAddresses are a dual-stack pod's status.podIPs.
var podAddresses = []net.IP{net.ParseIP("10.244.1.5"), net.ParseIP("fd00:10:244:1::5")}

func checkLiteralSubject(t *testing.T, s *Spec) {
	eq(t, s.Certificate.LiteralSubject, `CN=web-0,O=Example\, Inc.,C=DE`)
	eq(t, s.Certificate.CommonName(), "web-0")
	var seq pkix.RDNSequence
	if _, err := asn1.Unmarshal(s.Certificate.RawSubject, &seq); err != nil {
		t.Fatal(err)
	}
	// DER order is the reverse of the RFC 4514 string order.
	eq(t, seq.String(), `CN=web-0,O=Example\, Inc.,C=DE`)
	eq(t, seq[0][0].Value, any("DE"))
	var name pkix.Name
	name.FillFromRDNSequence(&seq)
	eq(t, name.Organization, []string{"Example, Inc."})
	eq(t, name.Country, []string{"DE"})
}

func TestParseRejectsInvalidAttributesNamingTheField(t *testing.T) {
	cases := []struct {
		name    string
		attrs   map[string]string
		key     string // the attribute the error must name
		message string // a part of the message telling the user what to do
	}{
		{"an unknown key under the prefix is a typo", with(Prefix+"dns-name", "x"), Prefix + "dns-name", `unknown attribute (did you mean "csi.certmint.io/dns-names"?)`},
		{"a typo in the prefix is an error, not ignored", with("csi.certmnt.io/duration", "1h"), "csi.certmnt.io/duration", `not a certmint attribute: certmint volumes take only csi.certmint.io/ attributes (did you mean "csi.certmint.io/duration"?)`},
		{"an attribute without the prefix is an error", with("duration", "1h"), "duration", `did you mean "csi.certmint.io/duration"?`},
		{"another driver's attribute is an error", with("csi.cert-manager.io/uri-sans", "spiffe://td/x"), "csi.cert-manager.io/uri-sans", `did you mean "csi.certmint.io/uri-sans"?`},
		{"a key near no attribute gets no suggestion", with("example.com/other", "x"), "example.com/other", "not a certmint attribute: certmint volumes take only csi.certmint.io/ attributes"},
		{"a pod UID no API server gives", with(PodUIDKey, "-1"), PodNameKey, `pod UID "-1"`},
		{"a pod name no API server accepts", with(PodNameKey, "web/0"), PodNameKey, `pod name "web/0"`},
		{"a pod namespace no API server accepts", with(PodNamespaceKey, "Shop"), PodNameKey, `namespace "Shop"`},
		{"a pod without a ServiceAccount", with(ServiceAccountNameKey, ""), ServiceAccountNameKey, "no ServiceAccount"},
		{"a ServiceAccount name no API server accepts", with(ServiceAccountNameKey, "Web"), ServiceAccountNameKey, `ServiceAccount name "Web"`},
		{"a variable that is empty for the pod", with(ServiceAccountNameKey, "", DNSNames, "${SERVICE_ACCOUNT_NAME}.shop.svc"), DNSNames, "${SERVICE_ACCOUNT_NAME} is empty"},
		{"missing pod name means podInfoOnMount is off", without(PodNameKey), PodNameKey, "podInfoOnMount: true"},
		{"missing pod namespace", without(PodNamespaceKey), PodNamespaceKey, "podInfoOnMount"},
		{"missing pod UID", without(PodUIDKey), PodUIDKey, "podInfoOnMount"},
		{"missing ServiceAccount name", without(ServiceAccountNameKey), ServiceAccountNameKey, "podInfoOnMount"},
		{"issuer-name is required", without(IssuerName), IssuerName, "required"},
		{"issuer-name must be an object name", with(IssuerName, "My_CA"), IssuerName, "not a valid object name"},
		{"issuer-name must not be empty", with(IssuerName, " "), IssuerName, "must not be empty"},
		{"issuer-kind must be Issuer or ClusterIssuer", with(IssuerKind, "clusterissuer"), IssuerKind, `"ClusterIssuer"`},
		{"common-name longer than 64 characters", with(CommonName, strings.Repeat("a", 65)), CommonName, "at most 64"},
		{"common-name with an unknown variable", with(CommonName, "${NODE_NAME}"), CommonName, "unknown variable ${NODE_NAME}"},
		{"common-name with a pod address", with(CommonName, "${POD_IP}"), CommonName, "${POD_IP} may be used only in " + IPSANs},
		{"dns-names with the pod's addresses", with(DNSNames, "${POD_IPS}.example.com"), DNSNames, "${POD_IPS} may be used only in " + IPSANs},
		{"common-name with an unterminated variable", with(CommonName, "${POD_NAME"), CommonName, "unterminated"},
		{"no identity at all", without(CommonName), CommonName, "names no identity"},
		{"literal-subject with common-name", with(LiteralSubject, "CN=x"), LiteralSubject, "cannot be combined with " + CommonName},
		{"literal-subject that is not a DN", with(CommonName, unset, LiteralSubject, "web"), LiteralSubject, "RFC 4514"},
		{"literal-subject with an unknown type", with(CommonName, unset, LiteralSubject, "XX=web"), LiteralSubject, "unknown attribute type"},
		{"literal-subject with hex values", with(CommonName, unset, LiteralSubject, "CN=#0403"), LiteralSubject, "hex-encoded"},
		{"literal-subject with two common names", with(CommonName, unset, LiteralSubject, "CN=${POD_NAME}+CN=admin,O=x"), LiteralSubject, "more than one CN"},
		{"literal-subject with a common name in two RDNs", with(CommonName, unset, LiteralSubject, "CN=web,CN=admin"), LiteralSubject, "more than one CN"},
		{"literal-subject with a bad escape", with(CommonName, unset, LiteralSubject, `CN=a\q`), LiteralSubject, "cannot be escaped"},
		{"organizations with an empty element", with(Organizations, "a,,b"), Organizations, "empty element"},
		{"organizations longer than X.509 allows", with(Organizations, strings.Repeat("o", 70000)), Organizations, "at most 64"},
		{"organizations with more values than a subject may have", with(Organizations, strings.Repeat("o,", 40)+"o"), Organizations, "at most 32"},
		{"organizational-units longer than X.509 allows", with(OrganizationalUnits, strings.Repeat("u", 65)), OrganizationalUnits, "at most 64"},
		{"localities longer than X.509 allows", with(Localities, strings.Repeat("l", 129)), Localities, "at most 128"},
		{"provinces longer than X.509 allows", with(Provinces, strings.Repeat("p", 129)), Provinces, "at most 128"},
		{"street-addresses longer than X.509 allows", with(StreetAddresses, strings.Repeat("s", 129)), StreetAddresses, "at most 128"},
		{"postal-codes longer than X.509 allows", with(PostalCodes, strings.Repeat("1", 41)), PostalCodes, "at most 40"},
		{"serial-number longer than X.509 allows", with(SerialNumber, strings.Repeat("1", 65)), SerialNumber, "at most 64"},
		{"literal-subject with a value longer than X.509 allows", with(CommonName, unset, LiteralSubject, "CN=x,O="+strings.Repeat("o", 65)), LiteralSubject, "at most 64"},
		{"organizational-units with an unknown variable", with(OrganizationalUnits, "${NODE}"), OrganizationalUnits, "unknown variable"},
		{"countries must be ISO codes", with(Countries, "Germany"), Countries, "two-letter"},
		{"provinces must not be empty", with(Provinces, ""), Provinces, "must not be empty"},
		{"localities with an empty element", with(Localities, "a,"), Localities, "empty element"},
		{"street-addresses with an empty element", with(StreetAddresses, ",a"), StreetAddresses, "empty element"},
		{"postal-codes must not be empty", with(PostalCodes, ""), PostalCodes, "must not be empty"},
		{"serial-number with an unknown variable", with(SerialNumber, "${X}"), SerialNumber, "unknown variable"},
		{"dns-names must be DNS names", with(DNSNames, "web_0.example.com"), DNSNames, "not a valid DNS name"},
		{"dns-names wildcard must be a whole label", with(DNSNames, "*a.example.com"), DNSNames, "not a valid DNS name"},
		{"dns-names with an unknown variable", with(DNSNames, "${POD}.svc"), DNSNames, "unknown variable"},
		{"ip-sans must be IP addresses", with(IPSANs, "10.0.0.256"), IPSANs, "not an IP address"},
		{"ip-sans with a pod address template inside an element", with(IPSANs, "10.${POD_IP}"), IPSANs, "ip-sans takes ${POD_IP} or ${POD_IPS}, each as a whole element"},
		{"ip-sans with another template", with(IPSANs, "${POD_NAME}"), IPSANs, "neither an IP address nor a template"},
		{"ip-sans naming the pod's addresses twice", with(IPSANs, "${POD_IP},${POD_IPS}"), IPSANs, "twice"},
		{"ip-sans with the pod's addresses as the only identity", with(CommonName, unset, IPSANs, "${POD_IP}"), IPSANs, "no address yet"},
		{"uri-sans must be absolute", with(URISANs, "/path"), URISANs, "absolute URI"},
		{"spiffe-id must use the spiffe scheme", with(SPIFFEID, "https://td/x"), SPIFFEID, "scheme must be spiffe"},
		{"spiffe-id must have a trust domain", with(SPIFFEID, "spiffe:///x"), SPIFFEID, "trust domain"},
		{"spiffe-id must not have a query", with(SPIFFEID, "spiffe://td/x?y=1"), SPIFFEID, "query"},
		{"spiffe-id repeated in uri-sans", with(SPIFFEID, "spiffe://td/x", URISANs, "spiffe://td/x"), SPIFFEID, "name it once"},
		{"duration must parse", with(Duration, "1d"), Duration, "must be a duration"},
		{"duration below the minimum", with(Duration, "5m"), Duration, "minimum is 10m0s"},
		{"duration beyond what a CSR can carry", with(Duration, "1000000h"), Duration, "too long"},
		{"renew-before must be shorter than the duration", with(Duration, "1h", RenewBefore, "1h"), RenewBefore, "shorter than the duration"},
		{"renew-before must be positive", with(RenewBefore, "-1h"), RenewBefore, "positive"},
		{"renew-before must parse", with(RenewBefore, "soon"), RenewBefore, "must be a duration"},
		{"is-ca must be true or false", with(IsCA, "yes"), IsCA, `"true" or "false"`},
		{"key-usages must be known", with(KeyUsages, "server auth,tls"), KeyUsages, `unknown key usage "tls"`},
		{"key-usages must not repeat", with(KeyUsages, "server auth,server auth"), KeyUsages, "twice"},
		{"key-algorithm must be known", with(KeyAlgorithm, "DSA"), KeyAlgorithm, `"ECDSA", "RSA" or "Ed25519"`},
		{"key-size must be a number", with(KeySize, "big"), KeySize, "number of bits"},
		{"key-size must be a curve size for ECDSA", with(KeySize, "2048"), KeySize, "256, 384 or 521"},
		{"key-size below the RSA minimum", with(KeyAlgorithm, "RSA", KeySize, "1024"), KeySize, "2048 to 8192"},
		{"key-size above the RSA maximum", with(KeyAlgorithm, "RSA", KeySize, "16384"), KeySize, "2048 to 8192"},
		{"key-size for Ed25519", with(KeyAlgorithm, "Ed25519", KeySize, "256"), KeySize, "fixed size"},
		{"key-encoding must be known", with(KeyEncoding, "DER"), KeyEncoding, `"PKCS8" or "PKCS1"`},
		{"key-encoding PKCS1 needs RSA", with(KeyEncoding, "PKCS1"), KeyEncoding, "RSA keys only"},
		{"reuse-private-key must be true or false", with(ReusePrivateKey, "1"), ReusePrivateKey, `"true" or "false"`},
		{"certificate-file must not have a directory", with(CertificateFile, "../tls.crt"), CertificateFile, "without a directory"},
		{"privatekey-file must not start with ..", with(PrivateKeyFile, "..data"), PrivateKeyFile, "reserved"},
		{"ca-file must not clash with another file", with(CAFile, "tls.crt"), CAFile, "also used by " + CertificateFile},
		{"fs-group must be a group ID", with(FSGroup, "wheel"), FSGroup, "group ID"},
		{"fs-group must not be negative", with(FSGroup, "-1"), FSGroup, "group ID"},
		{"pkcs12-enable must be true or false", with(PKCS12Enable, "on"), PKCS12Enable, `"true" or "false"`},
		{"pkcs12-password is required", with(PKCS12Enable, "true"), PKCS12Password, "required when"},
		{"pkcs12-filename without pkcs12-enable", with(PKCS12Filename, "a.p12"), PKCS12Filename, "has no effect unless " + PKCS12Enable},
		{"pkcs12-password without pkcs12-enable", with(PKCS12Password, "x"), PKCS12Password, "has no effect"},
		{"pkcs12-filename must be a file name", with(PKCS12Enable, "true", PKCS12Password, "x", PKCS12Filename, "a/b.p12"), PKCS12Filename, "without a directory"},
		{"jks-enable must be true or false", with(JKSEnable, "True"), JKSEnable, `"true" or "false"`},
		{"jks-password is required", with(JKSEnable, "true"), JKSPassword, "required when"},
		{"jks-filename without jks-enable", with(JKSFilename, "a.jks"), JKSFilename, "has no effect"},
		{"jks-password without jks-enable", with(JKSPassword, "x"), JKSPassword, "has no effect"},
		{"jks-filename must not clash with pkcs12-filename", with(PKCS12Enable, "true", PKCS12Password, "x", JKSEnable, "true", JKSPassword, "x",
			JKSFilename, "keystore.p12"), JKSFilename, "also used by " + PKCS12Filename},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.attrs)
			var aerr *Error
			if !errors.As(err, &aerr) {
				t.Fatalf("Parse(%v) = %v, want *Error", c.attrs, err)
			}
			for _, f := range aerr.Fields {
				if f.Key == c.key && strings.Contains(f.Message, c.message) {
					if !strings.Contains(err.Error(), `volumeAttributes["`+c.key+`"]: `) {
						t.Errorf("error %q does not name %s as a pod spec field", err, c.key)
					}
					return
				}
			}
			t.Errorf("error %q has no problem with %s containing %q", err, c.key, c.message)
		})
	}
}

// Every attribute the documentation lists must be exercised by a rejecting
// case above; this keeps new attributes from arriving untested.
func TestEveryAttributeHasAnErrorCase(t *testing.T) {
	tested := map[string]bool{}
	data, err := os.ReadFile("spec_test.go")
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	start := strings.Index(src, "func TestParseRejectsInvalidAttributesNamingTheField")
	end := start + strings.Index(src[start:], "\n}\n")
	src = src[start:end]
	for k := range known {
		name := strings.TrimPrefix(k, Prefix)
		if strings.Contains(src, `{"`+name) {
			tested[k] = true
		}
	}
	for k := range known {
		if !tested[k] {
			t.Errorf("no rejecting case named after %s", k)
		}
	}
}

func TestParseQuotesHugeValuesInPart(t *testing.T) {
	_, err := Parse(with(DNSNames, strings.Repeat("a", 70000)+"_"))
	if err == nil {
		t.Fatal("a 70,000-character DNS name was accepted")
	}
	if n := len(err.Error()); n > 1000 {
		t.Errorf("the error is %d bytes long; values must be quoted in part", n)
	}
}

func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Parse(with(Duration, "1d", KeyAlgorithm, "DSA", Prefix+"typo", "x"))
	var aerr *Error
	if !errors.As(err, &aerr) || len(aerr.Fields) != 3 {
		t.Fatalf("got %v, want three field errors", err)
	}
}

func TestParseDoesNotModifyItsInput(t *testing.T) {
	attrs := with(DNSNames, "${POD_NAME}")
	before := maps.Clone(attrs)
	if _, err := Parse(attrs); err != nil {
		t.Fatal(err)
	}
	eq(t, attrs, before)
}

func TestRedactedHidesPasswordsAndTokens(t *testing.T) {
	got := Redacted(with(PKCS12Password, "p1", JKSPassword, "p2", ServiceAccountTokensKey, `{"aud":{"token":"t"}}`))
	for _, k := range []string{PKCS12Password, JKSPassword, ServiceAccountTokensKey} {
		if got[k] != "[redacted]" {
			t.Errorf("%s = %q", k, got[k])
		}
	}
	eq(t, got[IssuerName], "ca")
	if _, ok := Stored(with(ServiceAccountTokensKey, "t"))[ServiceAccountTokensKey]; ok {
		t.Error("Stored kept the ServiceAccount tokens")
	}
}

func eq[T any](t *testing.T, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

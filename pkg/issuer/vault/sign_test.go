package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/issuertest"
	"github.com/certmint/certmint/pkg/pki"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testCA is a CA certificate with its key.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issue signs tmpl for pub with parent, or self-signs it when parent is nil.
func issue(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey, parent *testCA, self crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	signerCert, signerKey := tmpl, self
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, pub, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCA(t *testing.T, name string, parent *testCA) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return &testCA{cert: issue(t, tmpl, key.Public(), parent, key), key: key}
}

// approvedRequest is an approved request for web.example.com and a SPIFFE ID, as
// the driver makes it.
func approvedRequest(t *testing.T, key crypto.Signer) *issuer.Request {
	t.Helper()
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/team-a/sa/web")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "web.example.com"},
		DNSNames:    []string{"web.example.com", "web"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.7")},
		URIs:        []*url.URL{spiffe},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return issuertest.Request(csr, issuertest.Options{
		Duration: time.Hour,
		Usages:   []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
	})
}

// leafFor is what a well-configured role issues for req, with tweak
// applied.
func leafFor(t *testing.T, req *issuer.Request, ca *testCA, tweak func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     req.Subject,
		DNSNames:    req.DNSNames,
		IPAddresses: req.IPAddresses,
		URIs:        req.URIs,
		NotBefore:   now.Add(-30 * time.Second),
		NotAfter:    now.Add(req.Duration),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if tweak != nil {
		tweak(tmpl)
	}
	return issue(t, tmpl, req.PublicKey, ca, nil)
}

func pemOf(certs ...*x509.Certificate) string { return string(pki.EncodeCertificates(certs...)) }

func TestParsePathAcceptsSignEndpointsOnly(t *testing.T) {
	for _, c := range []struct {
		name, path string
		want       signPath
		wantErr    bool
	}{
		{name: "a role of a mount signs with the mount's default issuer", path: "pki/sign/web", want: signPath{mount: "pki", issuerRef: "default", role: "web"}},
		{name: "a nested mount is kept whole", path: "teams/a/pki_int/sign/web", want: signPath{mount: "teams/a/pki_int", issuerRef: "default", role: "web"}},
		{name: "an issuer named in the path signs", path: "pki/issuer/2026/sign/web", want: signPath{mount: "pki", issuerRef: "2026", role: "web"}},
		{name: "issue, where Vault makes the key, is refused", path: "pki/issue/web", wantErr: true},
		{name: "a bare mount is refused", path: "pki", wantErr: true},
		{name: "a leading slash is refused", path: "/pki/sign/web", wantErr: true},
		{name: "a sign-verbatim path is refused", path: "pki/sign-verbatim/web", wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parsePath(c.path)
			if (err != nil) != c.wantErr {
				t.Fatalf("parsePath(%q) error = %v, want error %t", c.path, err, c.wantErr)
			}
			if !c.wantErr && got != c.want {
				t.Errorf("parsePath(%q) = %+v, want %+v", c.path, got, c.want)
			}
		})
	}
}

func TestSignDataSendsTheApprovedNamesAndLifetime(t *testing.T) {
	req := approvedRequest(t, newKey(t))
	req.EmailAddresses = []string{"web@example.com"}
	data := signData(req)
	want := map[string]any{
		"csr":                  string(pki.EncodeCertificateRequest(req.CSR)),
		"common_name":          "web.example.com",
		"alt_names":            "web.example.com,web,web@example.com",
		"ip_sans":              []string{"10.0.0.7"},
		"uri_sans":             []string{"spiffe://cluster.local/ns/team-a/sa/web"},
		"ttl":                  "3600s",
		"exclude_cn_from_sans": true,
		"format":               "pem",
	}
	for k, v := range want {
		got, ok := data[k]
		switch w := v.(type) {
		case []string:
			if g, _ := got.([]string); !slices.Equal(g, w) {
				t.Errorf("%s = %v, want %v", k, got, v)
			}
		default:
			if !ok || got != v {
				t.Errorf("%s = %v, want %v", k, got, v)
			}
		}
	}
	if len(data) != len(want) {
		t.Errorf("sign data has %d fields, want %d: %v", len(data), len(want), data)
	}
}

func TestSignDataLeavesOutWhatTheRequestDoesNotAskFor(t *testing.T) {
	req := approvedRequest(t, newKey(t))
	req.Subject = pkix.Name{}
	req.DNSNames, req.IPAddresses, req.URIs = nil, nil, nil
	data := signData(req)
	for _, k := range []string{"common_name", "alt_names", "ip_sans", "uri_sans"} {
		if _, ok := data[k]; ok {
			t.Errorf("%s sent for a request without it: %v", k, data[k])
		}
	}
}

func TestCheckRequestRefusesWhatASignEndpointCannotIssue(t *testing.T) {
	for _, c := range []struct {
		name  string
		tweak func(*issuer.Request)
		want  string
	}{
		{name: "a request without a CSR would need Vault to make the key", tweak: func(r *issuer.Request) { r.CSR = nil }, want: "certificate requests only"},
		{name: "a CA certificate is not a role's to issue", tweak: func(r *issuer.Request) { r.IsCA = true }, want: "leaf certificates only"},
		{name: "a lifetime below a second cannot be sent as a ttl", tweak: func(r *issuer.Request) { r.Duration = time.Millisecond }, want: "shorter than a second"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := approvedRequest(t, newKey(t))
			c.tweak(req)
			err := checkRequest(req)
			if outcome, _ := issuer.Classify(err); outcome != issuer.Fail || !strings.Contains(err.Error(), c.want) {
				t.Errorf("checkRequest = %v (outcome %v), want a permanent error saying %q", err, outcome, c.want)
			}
		})
	}
	if err := checkRequest(approvedRequest(t, newKey(t))); err != nil {
		t.Errorf("checkRequest refused a request a role can sign: %v", err)
	}
}

func TestParseSignedAssemblesTheChainOnceWithoutRoots(t *testing.T) {
	root := newCA(t, "root", nil)
	intermediate := newCA(t, "intermediate", root)
	issuing := newCA(t, "issuing", intermediate)
	req := approvedRequest(t, newKey(t))
	leaf := leafFor(t, req, issuing, nil)

	got, err := parseSigned(&vaultapi.Secret{Data: map[string]any{
		"certificate": pemOf(leaf),
		"issuing_ca":  pemOf(issuing.cert),
		// As Vault gives it when the mount holds the whole chain: the
		// issuing CA again, and the root.
		"ca_chain": []any{pemOf(issuing.cert), pemOf(intermediate.cert), pemOf(root.cert)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []*x509.Certificate{leaf, issuing.cert, intermediate.cert}
	if !slices.EqualFunc(got.chain, want, (*x509.Certificate).Equal) {
		t.Errorf("chain = %v, want leaf, issuing, intermediate", subjects(got.chain))
	}
	if err := checkSigned(req, got, now); err != nil {
		t.Errorf("the assembled chain does not check: %v", err)
	}
}

func TestParseSignedRefusesAnswersWithoutCertificates(t *testing.T) {
	for _, c := range []struct {
		name string
		data map[string]any
	}{
		{name: "no data", data: nil},
		{name: "no issuing CA", data: map[string]any{"certificate": "x"}},
		{name: "not PEM", data: map[string]any{"certificate": "x", "issuing_ca": "y"}},
		{name: "a chain entry that is not a string", data: map[string]any{"certificate": "x", "issuing_ca": "y", "ca_chain": []any{1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := parseSigned(&vaultapi.Secret{Data: c.data}); err == nil {
				t.Error("parseSigned accepted it")
			}
		})
	}
}

func subjects(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

func TestCheckSignedRefusesCertificatesOtherThanTheApprovedOne(t *testing.T) {
	issuing := newCA(t, "issuing", nil)
	orgOID := asn1.ObjectIdentifier{2, 5, 4, 10}
	for _, c := range []struct {
		name string
		// tweak changes what the role issues; request what was asked.
		tweak   func(*x509.Certificate)
		request func(*issuer.Request)
		key     bool
		want    string
	}{
		{name: "the approved certificate passes"},
		{name: "an organization the role adds passes", tweak: func(c *x509.Certificate) { c.Subject.Organization = []string{"Example"} }},
		{name: "a name the role adds fails", tweak: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "admin.example.com") }, want: "DNS names"},
		{name: "a name the role drops fails", tweak: func(c *x509.Certificate) { c.URIs = nil }, want: "URIs"},
		{name: "another common name fails", tweak: func(c *x509.Certificate) { c.Subject.CommonName = "other" }, want: "common name"},
		{name: "a certificate for another key fails", key: true, want: "private key"},
		{name: "a lifetime beyond the approved one fails", tweak: func(c *x509.Certificate) { c.NotAfter = now.Add(48 * time.Hour) }, want: "longer than"},
		{name: "a missing usage fails", tweak: func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }, want: "server auth"},
		{
			name: "a subject field the request asks for and the role leaves out fails",
			request: func(r *issuer.Request) {
				r.Subject.Names = append(r.Subject.Names, pkix.AttributeTypeAndValue{Type: orgOID, Value: "Team A"})
			},
			want: "O=Team A",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := approvedRequest(t, newKey(t))
			issued := req
			if c.key {
				issued = approvedRequest(t, newKey(t))
			}
			leaf := leafFor(t, issued, issuing, c.tweak)
			if c.request != nil {
				c.request(req)
			}
			err := checkSigned(req, signed{chain: []*x509.Certificate{leaf, issuing.cert}}, now)
			if c.want == "" {
				if err != nil {
					t.Fatalf("checkSigned = %v, want nil", err)
				}
				return
			}
			if outcome, _ := issuer.Classify(err); outcome != issuer.Fail || !strings.Contains(err.Error(), c.want) {
				t.Errorf("checkSigned = %v (outcome %v), want a permanent error mentioning %q", err, outcome, c.want)
			}
		})
	}
}

func TestCAChainPublishesTheIssuingCAAndTheRootsAboveIt(t *testing.T) {
	root := newCA(t, "root", nil)
	intermediate := newCA(t, "intermediate", root)
	issuing := newCA(t, "issuing", intermediate)

	ca, bundle, err := caChain(&vaultapi.Secret{Data: map[string]any{
		"certificate": pemOf(issuing.cert),
		"ca_chain":    []any{pemOf(issuing.cert), pemOf(intermediate.cert), pemOf(root.cert)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Equal(issuing.cert) {
		t.Errorf("CA = %s, want the issuing CA", ca.Subject)
	}
	if got, want := string(bundle), pemOf(issuing.cert, root.cert); got != want {
		t.Errorf("bundle holds %v, want issuing and root", subjects(mustParse(t, bundle)))
	}

	// A mount whose chain Vault was not given publishes its issuing CA.
	_, bundle, err = caChain(&vaultapi.Secret{Data: map[string]any{"certificate": pemOf(issuing.cert)}})
	if err != nil {
		t.Fatal(err)
	}
	if string(bundle) != pemOf(issuing.cert) {
		t.Errorf("bundle holds %v, want the issuing CA alone", subjects(mustParse(t, bundle)))
	}
}

func TestCAChainRefusesANonCA(t *testing.T) {
	issuing := newCA(t, "issuing", nil)
	leaf := leafFor(t, approvedRequest(t, newKey(t)), issuing, nil)
	if _, _, err := caChain(&vaultapi.Secret{Data: map[string]any{"certificate": pemOf(leaf)}}); err == nil {
		t.Error("caChain accepted a leaf as the CA")
	}
}

func mustParse(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	certs, err := pki.ParseCertificates(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func TestVaultMessageIsOneLine(t *testing.T) {
	got := vaultMessage(&vaultapi.ResponseError{StatusCode: 400, Errors: []string{"common name admin.example.com not allowed by this role", "1 error occurred:\n\t* second\n\n"}})
	if want := "common name admin.example.com not allowed by this role; 1 error occurred: * second"; got != want {
		t.Errorf("vaultMessage = %q, want %q", got, want)
	}
	if got := vaultMessage(&vaultapi.ResponseError{StatusCode: 502}); got != "HTTP 502" {
		t.Errorf("vaultMessage without errors = %q", got)
	}
}

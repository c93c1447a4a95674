package vault

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/pki"
)

// signData is the body of a request to a role's sign endpoint for req:
// the requester's certificate request, and the names and lifetime policy
// approved. The common name is never added to the SANs: the certificate
// carries the names approved, no more.
func signData(req *issuer.Request) map[string]any {
	data := map[string]any{
		"csr":                  string(pki.EncodeCertificateRequest(req.CSR)),
		"ttl":                  fmt.Sprintf("%ds", int64(req.Duration/time.Second)),
		"exclude_cn_from_sans": true,
		"format":               "pem",
	}
	if cn := req.Subject.CommonName; cn != "" {
		data["common_name"] = cn
	}
	// alt_names is one comma-separated string of DNS names and email
	// addresses, which hold no commas; IPs and URIs go as lists, as a URI
	// may hold a comma.
	if alt := slices.Concat(req.DNSNames, req.EmailAddresses); len(alt) > 0 {
		data["alt_names"] = strings.Join(alt, ",")
	}
	if len(req.IPAddresses) > 0 {
		ips := make([]string, len(req.IPAddresses))
		for i, ip := range req.IPAddresses {
			ips[i] = ip.String()
		}
		data["ip_sans"] = ips
	}
	if len(req.URIs) > 0 {
		uris := make([]string, len(req.URIs))
		for i, u := range req.URIs {
			uris[i] = u.String()
		}
		data["uri_sans"] = uris
	}
	return data
}

// checkRequest refuses up front what a role's sign endpoint cannot issue.
func checkRequest(req *issuer.Request) error {
	switch {
	case req.CSR == nil:
		// Vault signs a certificate request the requester signed, so
		// that the key never leaves where it was made.
		return issuer.Permanentf("a Vault issuer signs certificate requests only, and this request has none")
	case req.IsCA:
		return issuer.Permanentf("a Vault role's sign endpoint issues leaf certificates only; this request asks for a CA")
	case req.Duration < time.Second:
		return issuer.Permanentf("requested duration %s is shorter than a second", req.Duration)
	}
	return nil
}

// signed is what Vault answered a signature with.
type signed struct {
	// chain is the leaf, then the issuing CA and the CAs above it, without
	// roots.
	chain []*x509.Certificate
}

// parseSigned assembles the chain from the certificate, ca_chain and
// issuing_ca of Vault's answer: the leaf, then the issuing CA, then the
// rest of ca_chain in its order, each certificate once, roots left out
// (relying parties hold those in the trust bundle).
func parseSigned(secret *vaultapi.Secret) (signed, error) {
	if secret == nil || secret.Data == nil {
		return signed{}, errors.New("the answer holds no data")
	}
	leafPEM, _ := secret.Data["certificate"].(string)
	issuingPEM, _ := secret.Data["issuing_ca"].(string)
	if leafPEM == "" || issuingPEM == "" {
		return signed{}, errors.New("the answer lacks certificate or issuing_ca")
	}
	pems := []string{leafPEM, issuingPEM}
	if chain, ok := secret.Data["ca_chain"].([]any); ok {
		for _, c := range chain {
			s, ok := c.(string)
			if !ok {
				return signed{}, fmt.Errorf("ca_chain holds a %T, not a PEM certificate", c)
			}
			pems = append(pems, s)
		}
	}
	var out signed
	for i, p := range pems {
		certs, err := pki.ParseCertificates([]byte(p))
		if err != nil {
			return signed{}, fmt.Errorf("parsing Vault's answer: %w", err)
		}
		for _, c := range certs {
			switch {
			case i == 0 && len(out.chain) == 0:
				out.chain = append(out.chain, c)
			case pki.IsSelfSigned(c) || slices.ContainsFunc(out.chain, c.Equal):
			default:
				out.chain = append(out.chain, c)
			}
		}
	}
	return out, nil
}

// pem is the chain as Sign returns it.
func (s signed) pem() []byte { return pki.EncodeCertificates(s.chain...) }

// checkSigned checks that the certificate Vault issued is the one policy
// approved for req, at now: a misconfigured role (one that adds names,
// drops usages, or takes the subject from elsewhere) fails the request
// rather than hand out a certificate nobody approved.
func checkSigned(req *issuer.Request, s signed, now time.Time) error {
	spec := certspec.Spec{
		Subject:        req.Subject,
		DNSNames:       req.DNSNames,
		IPAddresses:    req.IPAddresses,
		URIs:           req.URIs,
		EmailAddresses: req.EmailAddresses,
		Duration:       req.Duration,
		IsCA:           req.IsCA,
		Usages:         req.Usages,
	}
	if err := spec.Verify(req.PublicKey, s.chain, now); err != nil {
		return issuer.Permanentf("Vault issued a certificate other than the one approved (check the role's settings): %w", err)
	}
	if missing := missingAttributes(req.Subject, s.chain[0].Subject); len(missing) > 0 {
		return issuer.Permanentf("Vault issued a certificate whose subject lacks %s, which the request asks for; Vault takes subject fields other than the common name from the role (organization, ou, ...)", strings.Join(missing, ", "))
	}
	return nil
}

// missingAttributes lists the attributes of want that got lacks. Vault
// adds the subject fields its role sets; those the request asked for must
// be there as asked.
func missingAttributes(want, got pkix.Name) []string {
	var missing []string
	for _, a := range want.Names {
		if !slices.ContainsFunc(got.Names, func(b pkix.AttributeTypeAndValue) bool {
			return a.Type.Equal(b.Type) && reflect.DeepEqual(a.Value, b.Value)
		}) {
			missing = append(missing, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{a}}.String())
		}
	}
	return missing
}

// vaultMessage is what Vault said about a failed request, on one line.
func vaultMessage(resp *vaultapi.ResponseError) string {
	msg := strings.Join(resp.Errors, "; ")
	msg = strings.Join(strings.Fields(msg), " ")
	if msg == "" {
		return fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return msg
}

// caChain reads the answer of <mount>/issuer/<ref>/json: the issuing CA,
// and the trust bundle to publish, the issuing CA with the roots above it
// that Vault knows. The issuing CA is in the bundle even when a root is
// known, so relying parties trust the chain whether or not Vault was given
// the whole of it.
func caChain(secret *vaultapi.Secret) (*x509.Certificate, []byte, error) {
	if secret == nil || secret.Data == nil {
		return nil, nil, errors.New("the answer holds no data")
	}
	certPEM, _ := secret.Data["certificate"].(string)
	ca, err := pki.ParseCertificates([]byte(certPEM))
	if err != nil {
		return nil, nil, fmt.Errorf("the issuer's certificate: %w", err)
	}
	bundle := []*x509.Certificate{ca[0]}
	chain, _ := secret.Data["ca_chain"].([]any)
	for _, c := range chain {
		s, _ := c.(string)
		certs, err := pki.ParseCertificates([]byte(s))
		if err != nil {
			return nil, nil, fmt.Errorf("the issuer's ca_chain: %w", err)
		}
		for _, cert := range certs {
			if pki.IsSelfSigned(cert) && !slices.ContainsFunc(bundle, cert.Equal) {
				bundle = append(bundle, cert)
			}
		}
	}
	if !ca[0].IsCA {
		return nil, nil, fmt.Errorf("the issuer's certificate %s is not a CA", ca[0].Subject)
	}
	return ca[0], pki.EncodeCertificates(bundle...), nil
}

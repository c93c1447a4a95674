package acme

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/certmint/certmint/pkg/issuer/issuertest"
)

func TestDNSNames(t *testing.T) {
	spiffe, err := url.Parse("spiffe://cluster.local/ns/app/sa/web")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tmpl    x509.CertificateRequest
		want    []string
		wantErr []string
	}{
		{
			name: "DNS names alone are ordered as they are, lower-cased and without duplicates",
			tmpl: x509.CertificateRequest{DNSNames: []string{"web.example.com", "API.example.com", "web.example.com."}},
			want: []string{"web.example.com", "api.example.com"},
		},
		{
			name: "a common name that is one of the DNS names is allowed",
			tmpl: x509.CertificateRequest{Subject: pkix.Name{CommonName: "Web.example.com"}, DNSNames: []string{"web.example.com"}},
			want: []string{"web.example.com"},
		},
		{
			name:    "a common name that is not one of the DNS names is refused",
			tmpl:    x509.CertificateRequest{Subject: pkix.Name{CommonName: "other.example.com"}, DNSNames: []string{"web.example.com"}},
			wantErr: []string{`a common name that is not one of its DNS names ("other.example.com")`},
		},
		{
			name:    "a URI SAN is refused and named",
			tmpl:    x509.CertificateRequest{DNSNames: []string{"web.example.com"}, URIs: []*url.URL{spiffe}},
			wantErr: []string{"DNS names only", "URI SANs (spiffe://cluster.local/ns/app/sa/web)"},
		},
		{
			name:    "IP and email SANs are refused and named",
			tmpl:    x509.CertificateRequest{DNSNames: []string{"web.example.com"}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}, EmailAddresses: []string{"a@example.com"}},
			wantErr: []string{"IP address SANs (10.0.0.1)", "email SANs (a@example.com)"},
		},
		{
			name:    "subject fields besides the common name are refused",
			tmpl:    x509.CertificateRequest{Subject: pkix.Name{Organization: []string{"Example"}}, DNSNames: []string{"web.example.com"}},
			wantErr: []string{"subject fields other than the common name (O=Example)"},
		},
		{
			name: "a wildcard name is ordered with its domain, for DNS-01",
			tmpl: x509.CertificateRequest{DNSNames: []string{"*.example.com", "example.com"}},
			want: []string{"*.example.com", "example.com"},
		},
		{
			name:    "a wildcard other than a whole first label is refused",
			tmpl:    x509.CertificateRequest{DNSNames: []string{"w*.example.com"}},
			wantErr: []string{"a wildcard other than a whole first label (w*.example.com)"},
		},
		{
			name:    "a request without DNS names is refused",
			tmpl:    x509.CertificateRequest{},
			wantErr: []string{"needs at least one DNS name"},
		},
	}
	key := newKey(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := newCSR(t, &tt.tmpl, key)
			got, err := DNSNames(issuertest.Request(csr, issuertest.Options{}))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("DNSNames = %v, want an error", got)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("DNSNames = %v, want %v", got, tt.want)
			}
		})
	}
}

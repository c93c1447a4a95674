package acme

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/issuertest"
)

// refusingSolver fails the test if an order gets as far as a challenge.
type refusingSolver struct{ t *testing.T }

func (s refusingSolver) Present(context.Context, Challenge) error {
	s.t.Error("a challenge was published")
	return nil
}
func (s refusingSolver) Served(context.Context, string, string) (bool, error) { return false, nil }
func (s refusingSolver) Reachable(context.Context, Challenge) error           { return nil }
func (s refusingSolver) CleanUp(context.Context, Challenge) error             { return nil }

func TestSignRefusesWhatACMECannotCertifyBeforeContactingTheServer(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	b, err := New(Options{Client: c, Secrets: issuer.NewSecrets(c, c), Solver: refusingSolver{t}, ClusterResourceNamespace: "certmint"})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing listens here: reaching the server would fail with a
	// retryable error, not a permanent one.
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec: v1alpha1.IssuerSpec{ACME: &v1alpha1.ACMEIssuer{
			Server: "https://127.0.0.1:1/dir", AccountKeySecretName: "account", TrustBundle: "unused",
			Solvers: []v1alpha1.ACMESolver{{HTTP01: &v1alpha1.ACMEHTTP01Solver{}}},
		}},
	}
	spiffe, err := url.Parse("spiffe://cluster.local/ns/app/sa/web")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tmpl    x509.CertificateRequest
		isCA    bool
		wantErr string
	}{
		{name: "a URI SAN", tmpl: x509.CertificateRequest{DNSNames: []string{"web.example.com"}, URIs: []*url.URL{spiffe}}, wantErr: "URI SANs"},
		{name: "a CA certificate", tmpl: x509.CertificateRequest{DNSNames: []string{"web.example.com"}}, isCA: true, wantErr: "CA certificates"},
	}
	key := newKey(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := newCSR(t, &tt.tmpl, key)
			_, err = b.Sign(context.Background(), iss, issuertest.Request(csr, issuertest.Options{IsCA: tt.isCA}))
			var permanent *issuer.PermanentError
			if !errors.As(err, &permanent) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Sign error = %v, want a permanent error about %s", err, tt.wantErr)
			}
		})
	}
	var secrets corev1.SecretList
	if err := c.List(context.Background(), &secrets); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 0 {
		t.Errorf("refused requests created an account key Secret")
	}
}

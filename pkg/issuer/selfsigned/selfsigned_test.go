package selfsigned

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/ca"
	"github.com/certmint/certmint/pkg/issuer/issuertest"
	"github.com/certmint/certmint/pkg/request"
)

func TestRootSecretNameIsStableValidAndDistinct(t *testing.T) {
	a := RootSecretName(request.IssuerRef{Kind: request.KindIssuer, Namespace: "a", Name: "b.c"})
	b := RootSecretName(request.IssuerRef{Kind: request.KindIssuer, Namespace: "a.b", Name: "c"})
	c := RootSecretName(request.IssuerRef{Kind: request.KindClusterIssuer, Name: "b.c"})
	if a == b || a == c || b == c {
		t.Errorf("names collide: %s %s %s", a, b, c)
	}
	if a != RootSecretName(request.IssuerRef{Kind: request.KindIssuer, Namespace: "a", Name: "b.c"}) {
		t.Error("name is not stable")
	}
	if len(a) > 63 {
		t.Errorf("name %q is longer than 63 characters", a)
	}
}

func TestBackendGeneratesOneRootAndSignsWithIt(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cl := fake.NewClientBuilder().Build()
	b, err := New(Options{Client: cl, Live: cl, Loader: ca.NewLoader(issuer.NewSecrets(cl, cl)), Namespace: "certmint", Clock: clocktesting.NewFakePassiveClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	iss := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "root"}, Spec: v1alpha1.IssuerSpec{SelfSigned: &v1alpha1.SelfSignedIssuer{}}}

	first, err := b.Ready(ctx, iss)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Ready || len(first.TrustBundle) == 0 {
		t.Fatalf("status = %+v, want Ready with a trust bundle", first)
	}
	second, err := b.Ready(ctx, iss)
	if err != nil {
		t.Fatal(err)
	}
	if string(first.TrustBundle) != string(second.TrustBundle) {
		t.Fatal("a second readiness check made a new root")
	}
	var secret corev1.Secret
	if err := cl.Get(ctx, b.SecretRef(iss), &secret); err != nil {
		t.Fatalf("root Secret: %v", err)
	}
	if secret.Type != corev1.SecretTypeTLS || secret.Labels[issuer.LabelIssuerKind] != "ClusterIssuer" {
		t.Errorf("root Secret type %s labels %v", secret.Type, secret.Labels)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"web.default.svc"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := b.Sign(ctx, iss, issuertest.Request(csr, issuertest.Options{Duration: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(chainPEM)
	if block == nil || len(rest) != 0 {
		t.Fatal("want exactly one certificate: the leaf, without the root")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(first.TrustBundle) {
		t.Fatal("trust bundle holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, DNSName: "web.default.svc"}); err != nil {
		t.Fatalf("leaf does not verify against the trust bundle: %v", err)
	}
}

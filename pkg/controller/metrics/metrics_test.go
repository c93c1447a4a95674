package metrics

import (
	"maps"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/certmint/certmint/internal/metricstest"
	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki/pkitest"
)

func TestAnIssuerReportsItsReadinessAndTheExpiryOfTheCAItSignsWith(t *testing.T) {
	const signer = "clusterissuers.certmint.io/metrics-test"
	t.Cleanup(func() { ForgetIssuer(signer) })
	ca, _ := pkitest.CA(t, "metrics test CA")
	ready := `certmint_issuer_ready{signer="` + signer + `"}`
	notAfter := `certmint_issuer_ca_not_after_timestamp_seconds{signer="` + signer + `"}`
	for _, c := range []struct {
		name  string
		ready bool
		ca    bool
		want  map[string]float64
	}{
		{"a Ready issuer with a CA of its own", true, true, map[string]float64{ready: 1, notAfter: float64(ca.NotAfter.Unix())}},
		{"a Ready issuer without one (ACME)", true, false, map[string]float64{ready: 1}},
		{"an issuer that is not Ready signs with no CA", false, true, map[string]float64{ready: 0}},
	} {
		signing := ca
		if !c.ca {
			signing = nil
		}
		ObserveIssuer(signer, c.ready, signing)
		if got := metricstest.Series(t, IssuerReady, IssuerCANotAfter); !maps.Equal(got, c.want) {
			t.Errorf("%s:\n%s\nwant:\n%s", c.name, metricstest.Format(got), metricstest.Format(c.want))
		}
	}
	ForgetIssuer(signer)
	if got := metricstest.Series(t, IssuerReady, IssuerCANotAfter); len(got) != 0 {
		t.Errorf("a deleted issuer still has series:\n%s", metricstest.Format(got))
	}
}

func TestEachIssuedCertificateHasItsSeriesWhileThisReplicaLeads(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	issued := func(ns, name string, ref v1alpha1.IssuerReference, notAfter time.Time, renewal *time.Time) *v1alpha1.Certificate {
		c := &v1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:   v1alpha1.CertificateSpec{SecretName: name + "-tls", IssuerRef: ref},
			Status: v1alpha1.CertificateStatus{NotBefore: &metav1.Time{Time: t0}, NotAfter: &metav1.Time{Time: notAfter}}}
		if renewal != nil {
			c.Status.RenewalTime = &metav1.Time{Time: *renewal}
		}
		return c
	}
	renewAt := t0.Add(60 * 24 * time.Hour)
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		issued("shop", "web", v1alpha1.IssuerReference{Name: "ca"}, t0.Add(90*24*time.Hour), &renewAt),
		issued("shop", "api", v1alpha1.IssuerReference{Name: "mesh", Kind: "ClusterIssuer"}, t0.Add(24*time.Hour), nil),
		// Not issued yet: nothing to report.
		&v1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "new"},
			Spec: v1alpha1.CertificateSpec{SecretName: "new-tls", IssuerRef: v1alpha1.IssuerReference{Name: "ca"}}},
	).Build()
	elected := make(chan struct{})
	c, err := NewCertificates(CertificatesOptions{Reader: reader, Elected: elected})
	if err != nil {
		t.Fatal(err)
	}
	if got := metricstest.Series(t, c); len(got) != 0 {
		t.Errorf("a standby replica reports:\n%s", metricstest.Format(got))
	}
	close(elected)
	want := map[string]float64{
		`certmint_certificate_not_after_timestamp_seconds{issuer="issuers.certmint.io/shop.ca",name="web",namespace="shop"}`:     float64(t0.Add(90 * 24 * time.Hour).Unix()),
		`certmint_certificate_renewal_timestamp_seconds{issuer="issuers.certmint.io/shop.ca",name="web",namespace="shop"}`:       float64(renewAt.Unix()),
		`certmint_certificate_not_after_timestamp_seconds{issuer="clusterissuers.certmint.io/mesh",name="api",namespace="shop"}`: float64(t0.Add(24 * time.Hour).Unix()),
	}
	if got := metricstest.Series(t, c); !maps.Equal(got, want) {
		t.Errorf("series:\n%s\nwant:\n%s", metricstest.Format(got), metricstest.Format(want))
	}

	if err := reader.Delete(t.Context(), &v1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	for k := range want {
		if strings.Contains(k, `name="web"`) {
			delete(want, k)
		}
	}
	if got := metricstest.Series(t, c); !maps.Equal(got, want) {
		t.Errorf("after Certificate web was deleted:\n%s\nwant:\n%s", metricstest.Format(got), metricstest.Format(want))
	}
}

func TestNewCertificatesRequiresAReader(t *testing.T) {
	if _, err := NewCertificates(CertificatesOptions{}); err == nil {
		t.Error("NewCertificates without a Reader succeeded")
	}
}

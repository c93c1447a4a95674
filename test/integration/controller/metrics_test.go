package controller_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/certificate"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

// series returns the value of the series named, labels and all, as the
// exposition format writes it (labels in alphabetical order); false if the
// controller does not report it.
func (p *controllerProcess) series(t *testing.T, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("parsing %q: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

// waitSeries waits until the series reports want, or, with want nil, until
// it is gone.
func (p *controllerProcess) waitSeries(t *testing.T, series string, want *float64) {
	t.Helper()
	var got float64
	var present bool
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		got, present = p.series(t, series)
		if want == nil {
			return !present, nil
		}
		return present && got == *want, nil
	})
	if err == nil {
		return
	}
	switch {
	case want == nil:
		t.Fatalf("%s is still reported (%v)", series, got)
	case !present:
		t.Fatalf("%s is not reported, want %v", series, *want)
	default:
		t.Fatalf("%s = %v, want %v", series, got, *want)
	}
}

func unix(t time.Time) *float64 {
	v := float64(t.Unix())
	return &v
}

// TestExpiryMetrics checks the expiry series of the controller binary on a
// real API server: when a Ready issuer's CA expires, and when each issued
// Certificate expires and is due for renewal, as its status says; a
// Certificate's series go with it, and an issuer's with the issuer.
func TestExpiryMetrics(t *testing.T) {
	e := requireEnv(t)
	ctl := startController(t, "expiry-metrics")
	ctx := t.Context()
	ns := uniqueName("expiry")
	if err := e.ensureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	issuerName, caPEM := certIssuer(t)
	chain, err := pki.ParseCertificates(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	signer := request.IssuerRef{Kind: request.KindClusterIssuer, Name: issuerName}.SignerName()
	issuerLabels := fmt.Sprintf("{signer=%q}", signer)
	ctl.waitSeries(t, "certmint_issuer_ca_not_after_timestamp_seconds"+issuerLabels, unix(chain[0].NotAfter))
	one := 1.0
	ctl.waitSeries(t, "certmint_issuer_ready"+issuerLabels, &one)

	cert := newCert(ns, "web", issuerName, "web."+ns+".example.test")
	if err := env.admin.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	issued := waitCert(t, cert, "to be Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	certLabels := fmt.Sprintf("{issuer=%q,name=%q,namespace=%q}", signer, "web", ns)
	ctl.waitSeries(t, "certmint_certificate_not_after_timestamp_seconds"+certLabels, unix(issued.Status.NotAfter.Time))
	ctl.waitSeries(t, "certmint_certificate_renewal_timestamp_seconds"+certLabels, unix(issued.Status.RenewalTime.Time))

	if err := env.admin.Delete(ctx, cert); err != nil {
		t.Fatal(err)
	}
	ctl.waitSeries(t, "certmint_certificate_not_after_timestamp_seconds"+certLabels, nil)
	ctl.waitSeries(t, "certmint_certificate_renewal_timestamp_seconds"+certLabels, nil)

	if err := env.admin.Delete(ctx, &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: issuerName}}); err != nil {
		t.Fatal(err)
	}
	ctl.waitSeries(t, "certmint_issuer_ca_not_after_timestamp_seconds"+issuerLabels, nil)
	ctl.waitSeries(t, "certmint_issuer_ready"+issuerLabels, nil)
}

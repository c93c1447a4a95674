package main

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/pki/pkitest"
)

// tlsSecretFor builds what the controller writes for name: a leaf for
// name under an intermediate under a root, the leaf's key, the chain
// without the root, and the root as ca.crt.
func tlsSecretFor(t *testing.T, name string) (data map[string][]byte, leaf *x509.Certificate) {
	t.Helper()
	root, rootKey := pkitest.CA(t, "bench root")
	intermediate, intermediateKey := pkitest.Sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "bench intermediate"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, root, rootKey)
	leaf, leafKey := pkitest.Sign(t, &x509.Certificate{
		DNSNames: []string{name}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, intermediate, intermediateKey)
	return map[string][]byte{
		corev1.TLSPrivateKeyKey: keyPEM(t, leafKey),
		corev1.TLSCertKey:       pki.EncodeCertificates(leaf, intermediate),
		"ca.crt":                pki.EncodeCertificates(root),
	}, leaf
}

func keyPEM(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestCheckSecretAcceptsOnlyACertificateForItsKeyAndName(t *testing.T) {
	const name = "web.bench-certificates.example.test"
	good, leaf := tlsSecretFor(t, name)
	other, _ := tlsSecretFor(t, name)
	with := func(key string, value []byte) map[string][]byte {
		d := maps.Clone(good)
		if value == nil {
			delete(d, key)
		} else {
			d[key] = value
		}
		return d
	}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		typ     corev1.SecretType
		data    map[string][]byte
		dnsName string
		now     time.Time
		ready   bool
	}{
		{"a Secret with the key, its chain and the root is ready", corev1.SecretTypeTLS, good, name, now, true},
		{"a Secret with no data yet is not ready", corev1.SecretTypeTLS, nil, name, now, false},
		{"a certificate for another key is not ready", corev1.SecretTypeTLS, with(corev1.TLSPrivateKeyKey, other[corev1.TLSPrivateKeyKey]), name, now, false},
		{"a certificate for another name is not ready", corev1.SecretTypeTLS, good, "db.bench-certificates.example.test", now, false},
		{"a Secret without ca.crt is not ready", corev1.SecretTypeTLS, with("ca.crt", nil), name, now, false},
		{"a chain that does not lead to ca.crt is not ready", corev1.SecretTypeTLS, with("ca.crt", other["ca.crt"]), name, now, false},
		{"an expired certificate is not ready", corev1.SecretTypeTLS, good, name, leaf.NotAfter.Add(time.Minute), false},
		{"an Opaque Secret is not ready", corev1.SecretTypeOpaque, good, name, now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := &corev1.Secret{Type: tc.typ, Data: tc.data}
			err := checkSecret(secret, tc.dnsName, tc.now)
			if tc.ready && err != nil {
				t.Errorf("checkSecret = %v, want ready", err)
			}
			if !tc.ready && err == nil {
				t.Error("checkSecret = ready, want an error")
			}
		})
	}
}

func TestIsIssuedWantsReadyForTheCurrentSpec(t *testing.T) {
	cert := func(generation, observed, revision int64, status metav1.ConditionStatus) *v1alpha1.Certificate {
		c := &v1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Generation: generation}}
		c.Status.Revision = revision
		c.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: status, ObservedGeneration: observed}}
		return c
	}
	for _, tc := range []struct {
		name string
		cert *v1alpha1.Certificate
		want bool
	}{
		{"Ready with a first certificate for this generation is issued", cert(1, 1, 1, metav1.ConditionTrue), true},
		{"Ready for an older generation is not", cert(2, 1, 1, metav1.ConditionTrue), false},
		{"Ready=False is not", cert(1, 1, 1, metav1.ConditionFalse), false},
		{"Ready without a revision is not", cert(1, 1, 0, metav1.ConditionTrue), false},
		{"no conditions is not", &v1alpha1.Certificate{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isIssued(tc.cert); got != tc.want {
				t.Errorf("isIssued = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMetricSumAddsTheSamplesWithTheLabelsAsked(t *testing.T) {
	const metrics = `# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="certificate",result="requeue_after"} 4
controller_runtime_reconcile_total{controller="certificate",result="error"} 1
controller_runtime_reconcile_total{controller="issuer",result="success"} 7
controller_runtime_reconcile_total_other{controller="certificate"} 100
`
	for _, tc := range []struct {
		name string
		want map[string]string
		sum  float64
	}{
		{"every result of one controller", map[string]string{"controller": "certificate"}, 5},
		{"one result of one controller", map[string]string{"controller": "certificate", "result": "error"}, 1},
		{"no labels asked: every sample of the name", nil, 12},
		{"a label no sample has: nothing", map[string]string{"controller": "ingress"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := metricSum([]byte(metrics), "controller_runtime_reconcile_total", tc.want); got != tc.sum {
				t.Errorf("metricSum = %v, want %v", got, tc.sum)
			}
		})
	}
}

func TestRequestStatsCountPerIssuanceByResourceAndVerb(t *testing.T) {
	const before = `apiserver_request_total{code="201",resource="secrets",subresource="",verb="POST"} 10
apiserver_request_total{code="200",resource="leases",subresource="",verb="PUT"} 50
`
	const after = `apiserver_request_total{code="201",resource="secrets",subresource="",verb="POST"} 110
apiserver_request_total{code="200",resource="certificates",subresource="status",verb="PUT"} 150
apiserver_request_total{code="409",resource="certificates",subresource="status",verb="PUT"} 50
apiserver_request_total{code="200",resource="secrets",subresource="",verb="GET"} 100
apiserver_request_total{code="200",resource="secrets",subresource="",verb="WATCH"} 3
apiserver_request_total{code="200",resource="leases",subresource="",verb="PUT"} 52
apiserver_request_duration_seconds_sum{resource="certificates",subresource="status",verb="PUT"} 1
apiserver_request_duration_seconds_count{resource="certificates",subresource="status",verb="PUT"} 200
`
	d := parseRequestStats([]byte(after)).since(parseRequestStats([]byte(before)))
	if got, want := d.perIssuance(100, true), "PUT certificates/status 2.00, POST secrets 1.00"; got != want {
		t.Errorf("writes = %q, want %q (leases, at 0.02 per issuance, left out)", got, want)
	}
	if got, want := d.perIssuance(100, false), "GET secrets 1.00"; got != want {
		t.Errorf("reads = %q, want %q (watches are not reads)", got, want)
	}
	if got := d.conflicts(); got != 50 {
		t.Errorf("conflicts = %v, want 50", got)
	}
	if got := d[requestKey{"certificates", "status", "PUT"}].meanSeconds(); got != 0.005 {
		t.Errorf("mean status write = %v s, want 0.005", got)
	}
	if got := d.perIssuance(100_000, true); got != "none" {
		t.Errorf("writes rarer than one in twenty issuances = %q, want none", got)
	}
}

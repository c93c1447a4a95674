package kubectlcertmint

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

// now is the local clock of every test; the API server's runs 90 seconds
// behind it (serverNow), as a workstation's clock may run ahead.
var (
	now       = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	serverNow = now.Add(-90 * time.Second)
)

// fixedServerClock is an API server whose clock reads t.
type fixedServerClock time.Time

func (c fixedServerClock) Now(context.Context) (time.Time, error) { return time.Time(c), nil }

// fakes are the fake API clients behind a test's Env.
type fakes struct {
	env  *Env
	kube *kubefake.Clientset
	dyn  *dynamicfake.FakeDynamicClient
}

// newFakes serves kube (core and certificates objects) and certmint
// (certmint.io objects).
func newFakes(t *testing.T, kube []runtime.Object, certmint ...runtime.Object) *fakes {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	listKinds := map[schema.GroupVersionResource]string{
		issuersResource: "IssuerList", clusterIssuersResource: "ClusterIssuerList",
		certificatesResource: "CertificateList", ordersResource: "OrderList",
	}
	f := &fakes{
		kube: kubefake.NewClientset(kube...),
		dyn:  dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, listKinds, certmint...),
	}
	f.env = &Env{Kube: f.kube, Dynamic: f.dyn, ServerClock: fixedServerClock(serverNow), Clock: clocktesting.NewFakePassiveClock(now)}
	return f
}

// run runs the plugin with args and returns its exit code and output.
func (f *fakes) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(t.Context(), f.env, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// writes lists the verbs of the writes the fakes saw, as "verb resource/subresource".
func (f *fakes) writes() []string {
	var out []string
	for _, a := range append(f.kube.Actions(), f.dyn.Actions()...) {
		switch a.GetVerb() {
		case "get", "list", "watch", "proxy":
			continue
		}
		w := a.GetVerb() + " " + a.GetResource().Resource
		if a.GetSubresource() != "" {
			w += "/" + a.GetSubresource()
		}
		out = append(out, w)
	}
	return out
}

// testCA is a self-signed CA valid from notBefore to notAfter.
func testCA(t *testing.T, cn string, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(certs ...*x509.Certificate) string {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

func readyCondition(status metav1.ConditionStatus, reason, message string) []metav1.Condition {
	return []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: status, Reason: reason, Message: message, LastTransitionTime: metav1.NewTime(now)}}
}

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

package certificate

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/pki/pkitest"
	"github.com/certmint/certmint/pkg/request"
)

func newCertificate() *v1alpha1.Certificate {
	return &v1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid", Generation: 1},
		Spec: v1alpha1.CertificateSpec{
			SecretName: "web-tls",
			IssuerRef:  v1alpha1.IssuerReference{Name: "ca", Kind: "ClusterIssuer"},
			DNSNames:   []string{"web.example.com"},
		},
	}
}

func TestParseSpecAppliesDefaults(t *testing.T) {
	w, err := parseSpec(newCertificate())
	if err != nil {
		t.Fatal(err)
	}
	c := w.cert
	switch {
	case c.Issuer != (request.IssuerRef{Kind: request.KindClusterIssuer, Name: "ca"}):
		t.Errorf("issuer %v", c.Issuer)
	case c.Key.Algorithm != keystore.ECDSA || c.Key.Size != 256 || w.keyEncoding != keystore.PKCS8 || w.reuseKey:
		t.Errorf("key %+v, encoding %s, reuse %v; want a new ECDSA P-256 key in PKCS#8", c.Key, w.keyEncoding, w.reuseKey)
	case c.Duration != 0:
		t.Errorf("duration %s, want the issuer's default (0)", c.Duration)
	case len(c.Usages) != 3:
		t.Errorf("usages %v, want digital signature, server auth, client auth", c.Usages)
	}
	cert := newCertificate()
	cert.Spec.IssuerRef.Kind = ""
	if w, _ := parseSpec(cert); w.cert.Issuer != (request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}) {
		t.Errorf("without a kind the issuer is %v, want the Issuer in the Certificate's namespace", w.cert.Issuer)
	}
}

func TestParseSpecNamesEveryBadField(t *testing.T) {
	cert := newCertificate()
	cert.Spec.IPAddresses = []string{"10.0.0.300"}
	cert.Spec.URIs = []string{"not a uri"}
	cert.Spec.Usages = []string{"server auth", "sever auth", "server auth"}
	cert.Spec.Duration = &metav1.Duration{Duration: time.Minute}
	cert.Spec.PrivateKey = &v1alpha1.CertificatePrivateKey{Algorithm: v1alpha1.KeyAlgorithmECDSA, Size: 2048, Encoding: "PKCS1"}
	_, err := parseSpec(cert)
	if err == nil {
		t.Fatal("no error")
	}
	for _, field := range []string{"spec.ipAddresses", "spec.uris", "spec.usages: unknown key usage \"sever auth\"", "spec.usages: \"server auth\" is listed twice",
		"spec.duration", "spec.privateKey.size", "spec.privateKey.encoding"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}

func TestRenewalTime(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(90 * time.Hour)
	for _, c := range []struct {
		renewBefore time.Duration
		want        time.Time
	}{
		{0, nb.Add(60 * time.Hour)},
		{time.Hour, na.Add(-time.Hour)},
		// The issuer signed for less than renewBefore: two thirds.
		{100 * time.Hour, nb.Add(60 * time.Hour)},
	} {
		if got := renewalTime(nb, na, c.renewBefore); !got.Equal(c.want) {
			t.Errorf("renewBefore %s: %s, want %s", c.renewBefore, got, c.want)
		}
	}
}

func TestBackoffDoublesUpToTheMaximum(t *testing.T) {
	for n, want := range map[int32]time.Duration{1: BackoffBase, 2: 2 * BackoffBase, 3: 4 * BackoffBase, 20: BackoffMax} {
		if got := backoffAfter(n); got != want {
			t.Errorf("after %d failures: %s, want %s", n, got, want)
		}
	}
}

func TestCheckOwnership(t *testing.T) {
	cert := newCertificate()
	for _, c := range []struct {
		name   string
		secret *corev1.Secret
		ok     bool
	}{
		{"no Secret yet", nil, true},
		{"a TLS Secret nobody said a Certificate may keep, such as a CA key pair", &corev1.Secret{Type: corev1.SecretTypeTLS}, false},
		{"its own, or one annotated for it", &corev1.Secret{Type: corev1.SecretTypeTLS, ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationCertificate: "web"}}}, true},
		{"another Certificate's", &corev1.Secret{Type: corev1.SecretTypeTLS, ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationCertificate: "other"}}}, false},
		{"an issuer's generated root, even annotated", &corev1.Secret{Type: corev1.SecretTypeTLS, ObjectMeta: metav1.ObjectMeta{
			Annotations: map[string]string{AnnotationCertificate: "web"},
			Labels:      issuer.LabelsFor(request.IssuerRef{Kind: request.KindClusterIssuer, Name: "root"}),
		}}, false},
		{"a ServiceAccount token", &corev1.Secret{Type: corev1.SecretTypeServiceAccountToken}, false},
		{"an Opaque Secret", &corev1.Secret{Type: corev1.SecretTypeOpaque}, false},
	} {
		if got := checkOwnership(c.secret, cert) == ""; got != c.ok {
			t.Errorf("%s: may write %v, want %v", c.name, got, c.ok)
		}
	}
}

// issuedSecret is the Secret a pass would write for cert at now, with a
// certificate from ca valid for lifetime.
func issuedSecret(t *testing.T, cert *v1alpha1.Certificate, w *wanted, ca *x509.Certificate, caKey crypto.Signer, now time.Time, lifetime time.Duration) *corev1.Secret {
	t.Helper()
	key, err := keystore.Generate(w.cert.Key.Algorithm, w.cert.Key.Size)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{}, DNSNames: w.cert.DNSNames, NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(lifetime),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	leaf := pkitest.SignFor(t, tmpl, key.Public(), ca, caKey)
	data, err := secretData(w, key, pki.EncodeCertificates(leaf), []*x509.Certificate{leaf}, []*x509.Certificate{ca}, pki.EncodeCertificates(ca), keystorePasswords{}, now)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{Type: corev1.SecretTypeTLS, Data: data}
	s.Labels, s.Annotations = withMetadata(s, cert)
	s.Annotations[AnnotationSpecHash] = mustHash(t, &cert.Spec)
	s.Annotations[AnnotationIssuedAt] = now.UTC().Format(time.RFC3339)
	return s
}

func mustHash(t *testing.T, spec *v1alpha1.CertificateSpec) string {
	t.Helper()
	h, err := specHash(spec)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestReissueReason(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	cert := newCertificate()
	w, err := parseSpec(cert)
	if err != nil {
		t.Fatal(err)
	}
	ca, caKey := pkitest.CA(t, "ca")
	other, _ := pkitest.CA(t, "another ca")
	current := issuedSecret(t, cert, w, ca, caKey, now, 24*time.Hour)
	// Signed for less than renewBefore asks: due at once, were it not for
	// the minimum interval.
	short := issuedSecret(t, cert, w, ca, caKey, now, 10*time.Minute)
	wShort := *w
	wShort.cert.RenewBefore = 12 * time.Minute
	hash := mustHash(t, &cert.Spec)
	askedBefore := current.DeepCopy()
	askedBefore.Annotations[AnnotationReissueBefore] = now.Add(time.Second).UTC().Format(time.RFC3339)
	for _, c := range []struct {
		name          string
		secret        *corev1.Secret
		w             *wanted
		hash          string
		anchors       []*x509.Certificate
		at            time.Time
		reissueBefore time.Time
		want          string
	}{
		{name: "a certificate the issuer's trust bundle leads to serves", secret: current, hash: hash, anchors: []*x509.Certificate{other, ca}, at: now},
		{name: "a certificate the issuer's trust bundle does not lead to", secret: current, hash: hash, anchors: []*x509.Certificate{other}, at: now, want: "not trusted by the issuer's trust bundle"},
		{name: "a certificate signed for less than renewBefore is kept a while", secret: short, w: &wShort, hash: hash, at: now.Add(30 * time.Second)},
		{name: "a certificate signed for less than renewBefore is renewed after the minimum interval", secret: short, w: &wShort, hash: hash, at: now.Add(minReissueInterval), want: "due for renewal"},
		{name: "a current certificate serves", secret: current, hash: hash, at: now},
		{name: "no Secret", hash: hash, at: now, want: "does not exist"},
		{name: "a changed spec", secret: current, hash: "other", at: now, want: "spec changed"},
		{name: "at renewal time", secret: current, hash: hash, at: now.Add(16 * time.Hour), want: "due for renewal"},
		{name: "after expiry", secret: current, hash: hash, at: now.Add(25 * time.Hour), want: "expired"},
		{name: "the issuer asks for it", secret: current, hash: hash, at: now, reissueBefore: now.Add(time.Second), want: "asked for certificates issued before"},
		{name: "the issuer asked before it was issued", secret: current, hash: hash, at: now, reissueBefore: now.Add(-time.Second)},
		{name: "issued once the issuer asked, within the second its time is rounded up to", secret: askedBefore, hash: hash, at: now, reissueBefore: now.Add(time.Second)},
		{name: "the issuer asks again", secret: askedBefore, hash: hash, at: now.Add(time.Hour), reissueBefore: now.Add(time.Hour), want: "asked for certificates issued before"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cw := w
			if c.w != nil {
				cw = c.w
			}
			got := reissueReason(readHeld(c.secret), c.hash, cw, 24*time.Hour, c.anchors, c.reissueBefore, c.at)
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Errorf("reason %q, want %q", got, c.want)
			}
		})
	}
	t.Run("a key of another size", func(t *testing.T) {
		bigger := newCertificate()
		bigger.Spec.PrivateKey = &v1alpha1.CertificatePrivateKey{Size: 384}
		wb, err := parseSpec(bigger)
		if err != nil {
			t.Fatal(err)
		}
		if got := reissueReason(readHeld(current), hash, wb, 24*time.Hour, nil, time.Time{}, now); !strings.Contains(got, "algorithm and size") {
			t.Errorf("reason %q", got)
		}
	})
	t.Run("a longer certificate than approved", func(t *testing.T) {
		if got := reissueReason(readHeld(current), hash, w, time.Hour, nil, time.Time{}, now); !strings.Contains(got, "longer than") {
			t.Errorf("reason %q", got)
		}
	})
}

func TestTheTemplateCannotSetTheControllersOwnMetadata(t *testing.T) {
	cert := newCertificate()
	cert.Spec.SecretTemplate = &v1alpha1.SecretTemplate{
		Labels:      map[string]string{"team": "shop", issuer.LabelIssuerKind: "ClusterIssuer"},
		Annotations: map[string]string{"note": "kept", AnnotationSpecHash: "forged", AnnotationCertificate: "other"},
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationSpecHash: "real"}}}
	labels, annotations := withMetadata(secret, cert)
	if labels["team"] != "shop" || annotations["note"] != "kept" {
		t.Errorf("the template's own keys are missing: %v %v", labels, annotations)
	}
	if _, ok := labels[issuer.LabelIssuerKind]; ok {
		t.Errorf("the template set the issuer label: %v", labels)
	}
	if annotations[AnnotationSpecHash] != "real" || annotations[AnnotationCertificate] != cert.Name {
		t.Errorf("the template changed the controller's annotations: %v", annotations)
	}
}

func TestPasswordsChangeTheKeystoresHashOnly(t *testing.T) {
	key, err := keystore.Generate(keystore.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	a, b := "one", "two"
	h1, err := keystoresHash(key, keystorePasswords{PKCS12: &a})
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := keystoresHash(key, keystorePasswords{PKCS12: &b})
	h3, _ := keystoresHash(key, keystorePasswords{JKS: &a})
	h4, _ := keystoresHash(key, keystorePasswords{PKCS12: &a})
	if h1 == h2 || h1 == h3 || h1 != h4 {
		t.Errorf("hashes %s %s %s %s: want a change of password or keystore to change it, and nothing else", h1, h2, h3, h4)
	}
}

func TestStandInKeysHaveTheSpecsAlgorithmAndSize(t *testing.T) {
	for _, k := range []certspec.Key{
		{Algorithm: keystore.ECDSA, Size: 256}, {Algorithm: keystore.ECDSA, Size: 384}, {Algorithm: keystore.ECDSA, Size: 521},
		{Algorithm: keystore.RSA, Size: 2048}, {Algorithm: keystore.RSA, Size: 8192}, {Algorithm: keystore.Ed25519},
	} {
		alg, size, err := keystore.Describe(standInKey(k))
		if err != nil || alg != k.Algorithm || (alg != keystore.Ed25519 && size != k.Size) {
			t.Errorf("stand-in for %v is %s %d (%v)", k, alg, size, err)
		}
	}
}

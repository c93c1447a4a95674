package controller_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/certificate"
	"github.com/certmint/certmint/pkg/controller/ingress"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/policy"
)

// certIssuer is a CA ClusterIssuer whose policy grants every namespace the
// names under <namespace>.example.test, and its CA.
func certIssuer(t *testing.T) (string, []byte) {
	t.Helper()
	name := uniqueName("cert-ca")
	data := caSecretData(t, nil)
	createTLSSecret(t, certmintNS, name, data)
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: name}, Policy: &v1alpha1.Policy{
			AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.test"},
			MaxDuration:     &metav1.Duration{Duration: 48 * time.Hour},
		}},
	}
	if err := env.admin.Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	return name, data[corev1.TLSCertKey]
}

func newCert(ns, name, issuer string, dnsNames ...string) *v1alpha1.Certificate {
	return &v1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CertificateSpec{
			SecretName: name + "-tls",
			IssuerRef:  v1alpha1.IssuerReference{Name: issuer, Kind: "ClusterIssuer"},
			DNSNames:   dnsNames,
		},
	}
}

// waitCert waits until the Certificate's status satisfies done for its
// current generation and returns it.
func waitCert(t *testing.T, cert *v1alpha1.Certificate, what string, done func(*v1alpha1.Certificate) bool) *v1alpha1.Certificate {
	t.Helper()
	var got v1alpha1.Certificate
	const timeout = 2 * time.Minute
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(cert), &got); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return done(&got), nil
	})
	if err != nil {
		t.Fatalf("waited %s for Certificate %s/%s %s: %v; status %+v", timeout, cert.Namespace, cert.Name, what, err, got.Status)
	}
	return &got
}

func readyIs(status metav1.ConditionStatus, reason string) func(*v1alpha1.Certificate) bool {
	return func(c *v1alpha1.Certificate) bool {
		cond := meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionReady)
		return cond != nil && cond.Status == status && (reason == "" || cond.Reason == reason) && cond.ObservedGeneration == c.Generation
	}
}

func readySecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := env.admin.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatalf("reading Secret %s: %v", name, err)
	}
	return &s
}

// leafOf checks that secret holds a key and a chain for it that verifies
// against ca for dnsName, and returns the leaf.
func leafOf(t *testing.T, secret *corev1.Secret, ca []byte, dnsName string) *x509.Certificate {
	t.Helper()
	if secret.Type != corev1.SecretTypeTLS {
		t.Fatalf("Secret %s is of type %s", secret.Name, secret.Type)
	}
	chain, err := pki.ParseCertificates(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParsePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	if !pki.PublicKeysEqual(chain[0].PublicKey, key.Public()) {
		t.Fatal("tls.crt is not for tls.key")
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, DNSName: dnsName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("the certificate does not verify for %s against the issuer's CA: %v", dnsName, err)
	}
	if string(secret.Data[certificate.KeyCA]) != string(ca) {
		t.Error("ca.crt is not the issuer's trust bundle")
	}
	return chain[0]
}

func certEventReasons(ctx context.Context, cert *v1alpha1.Certificate) ([]string, error) {
	var events corev1.EventList
	if err := env.admin.List(ctx, &events, client.InNamespace(cert.Namespace)); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == "Certificate" && e.InvolvedObject.Name == cert.Name {
			out = append(out, e.Reason)
		}
	}
	return out, nil
}

func waitCertEvent(t *testing.T, cert *v1alpha1.Certificate, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		reasons, err := certEventReasons(ctx, cert)
		return strings.Contains(strings.Join(reasons, " "), reason), err
	})
	if err != nil {
		t.Errorf("no %s Event on Certificate %s: %v", reason, cert.Name, err)
	}
}

// TestCertificates checks the Certificate path on a real API server with
// the real controller: a Secret with a key, a chain and the CA bundle;
// renewal, re-issue when the Secret goes or the spec changes; refusals
// (names the policy does not grant the namespace, a missing issuer, a
// Secret of another type) with a reason naming the field and no Secret
// written, recovered by fixing the spec; keystores; and a broken issuer
// leaving a valid Secret alone.
func TestCertificates(t *testing.T) {
	e := requireEnv(t)
	startController(t, "certificates")
	ctx := t.Context()
	ns := uniqueName("certs")
	if err := e.ensureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	issuerName, ca := certIssuer(t)
	host := "web." + ns + ".example.test"

	t.Run("a Certificate gets a Secret with a key, a chain for its names and the CA bundle", func(t *testing.T) {
		cert := newCert(ns, "web", issuerName, host)
		cert.Spec.Subject = &v1alpha1.X509Subject{Organizations: []string{"Shop"}}
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		got := waitCert(t, cert, "to be Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
		leaf := leafOf(t, readySecret(t, ns, "web-tls"), ca, host)
		if len(leaf.Subject.Organization) != 1 || leaf.Subject.Organization[0] != "Shop" {
			t.Errorf("subject %s, want O=Shop", leaf.Subject)
		}
		st := got.Status
		if st.Revision != 1 || !st.NotAfter.Time.Equal(leaf.NotAfter) || st.RenewalTime == nil || time.Until(leaf.NotAfter) > 25*time.Hour {
			t.Errorf("status %+v for a certificate valid until %s, want revision 1 and the default 24h", st, leaf.NotAfter)
		}
		waitCertEvent(t, cert, certificate.ReasonIssued)
	})

	t.Run("a deleted Secret is issued again", func(t *testing.T) {
		if err := env.admin.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-tls"}}); err != nil {
			t.Fatal(err)
		}
		waitCert(t, newCert(ns, "web", issuerName), "to be issued a second time", func(c *v1alpha1.Certificate) bool { return c.Status.Revision == 2 })
		leafOf(t, readySecret(t, ns, "web-tls"), ca, host)
	})

	t.Run("a spec change is issued again, and a template change only relabels", func(t *testing.T) {
		var cert v1alpha1.Certificate
		if err := env.admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web"}, &cert); err != nil {
			t.Fatal(err)
		}
		cert.Spec.DNSNames = append(cert.Spec.DNSNames, "api."+ns+".example.test")
		cert.Spec.SecretTemplate = &v1alpha1.SecretTemplate{Labels: map[string]string{"team": "shop"}}
		if err := env.admin.Update(ctx, &cert); err != nil {
			t.Fatal(err)
		}
		waitCert(t, &cert, "to be issued for the new name", func(c *v1alpha1.Certificate) bool {
			return c.Status.Revision == 3 && readyIs(metav1.ConditionTrue, "")(c)
		})
		secret := readySecret(t, ns, "web-tls")
		leafOf(t, secret, ca, "api."+ns+".example.test")
		if secret.Labels["team"] != "shop" {
			t.Errorf("labels %v, want the template's", secret.Labels)
		}
	})

	t.Run("a name the policy does not grant the namespace is refused, nothing is written, and fixing the spec recovers", func(t *testing.T) {
		cert := newCert(ns, "greedy", issuerName, "web.other-namespace.example.test")
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		got := waitCert(t, cert, "to be refused", readyIs(metav1.ConditionFalse, policy.ReasonNameNotAllowed))
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "spec.dnsNames") {
			t.Errorf("the message %q does not name the field", c.Message)
		}
		waitCertEvent(t, cert, policy.ReasonNameNotAllowed)
		if err := env.admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "greedy-tls"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a refused Certificate has a Secret (%v)", err)
		}
		got.Spec.DNSNames = []string{"greedy." + ns + ".example.test"}
		if err := env.admin.Update(ctx, got); err != nil {
			t.Fatal(err)
		}
		waitCert(t, got, "to recover", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	})

	t.Run("a default policy grants a Certificate no name", func(t *testing.T) {
		name := uniqueName("default-policy")
		data := caSecretData(t, nil)
		createTLSSecret(t, certmintNS, name, data)
		iss := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: name}}}
		if err := env.admin.Create(ctx, iss); err != nil {
			t.Fatal(err)
		}
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
		// The pod defaults name ${POD_NAME} and the ServiceAccount: a
		// Certificate has neither, so not even its namespace's service
		// names are granted without a policy saying so.
		cert := newCert(ns, "default-policy", name, "web."+ns+".svc")
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to be refused", readyIs(metav1.ConditionFalse, policy.ReasonNameNotAllowed))
	})

	t.Run("a missing issuer is reported and its creation recovers", func(t *testing.T) {
		late := uniqueName("late-ca")
		cert := newCert(ns, "early", late, "early."+ns+".example.test")
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		got := waitCert(t, cert, "to report the missing issuer", readyIs(metav1.ConditionFalse, certificate.ReasonIssuerNotFound))
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "spec.issuerRef") {
			t.Errorf("the message %q does not name the field", c.Message)
		}
		data := caSecretData(t, nil)
		createTLSSecret(t, certmintNS, late, data)
		iss := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: late}, Spec: v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: late},
			Policy: &v1alpha1.Policy{AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.test"}}}}
		if err := env.admin.Create(ctx, iss); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to be issued once the issuer exists", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	})

	t.Run("a duration longer than the policy allows is refused naming the field", func(t *testing.T) {
		cert := newCert(ns, "long", issuerName, "long."+ns+".example.test")
		cert.Spec.Duration = &metav1.Duration{Duration: 72 * time.Hour}
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		got := waitCert(t, cert, "to be refused", readyIs(metav1.ConditionFalse, policy.ReasonDurationTooLong))
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "spec.duration") {
			t.Errorf("the message %q does not name the field", c.Message)
		}
	})

	t.Run("the API server refuses what it can check", func(t *testing.T) {
		for name, tweak := range map[string]func(*v1alpha1.Certificate){
			"no identity":      func(c *v1alpha1.Certificate) { c.Spec.DNSNames = nil },
			"a short duration": func(c *v1alpha1.Certificate) { c.Spec.Duration = &metav1.Duration{Duration: time.Minute} },
			"renewBefore too long": func(c *v1alpha1.Certificate) {
				c.Spec.Duration, c.Spec.RenewBefore = &metav1.Duration{Duration: time.Hour}, &metav1.Duration{Duration: 2 * time.Hour}
			},
			"a bad IP":               func(c *v1alpha1.Certificate) { c.Spec.IPAddresses = []string{"300.1.1.1"} },
			"an upper-case DNS name": func(c *v1alpha1.Certificate) { c.Spec.DNSNames = []string{"Web.example.test"} },
			"PKCS1 for an ECDSA key": func(c *v1alpha1.Certificate) { c.Spec.PrivateKey = &v1alpha1.CertificatePrivateKey{Encoding: "PKCS1"} },
			"an ECDSA key of 2048":   func(c *v1alpha1.Certificate) { c.Spec.PrivateKey = &v1alpha1.CertificatePrivateKey{Size: 2048} },
			"a bad issuer kind":      func(c *v1alpha1.Certificate) { c.Spec.IssuerRef.Kind = "Vault" },
			"a bad Secret name":      func(c *v1alpha1.Certificate) { c.Spec.SecretName = "Not_A_Name" },
			"an Ed25519 key of a size": func(c *v1alpha1.Certificate) {
				c.Spec.PrivateKey = &v1alpha1.CertificatePrivateKey{Algorithm: "Ed25519", Size: 256}
			},
		} {
			cert := newCert(ns, uniqueName("invalid"), issuerName, "x."+ns+".example.test")
			tweak(cert)
			if err := env.admin.Create(ctx, cert); !apierrors.IsInvalid(err) {
				t.Errorf("%s: created (%v), want Invalid", name, err)
			}
		}
	})

	t.Run("a Secret of another type is never written", func(t *testing.T) {
		if err := env.admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "opaque-tls"}, StringData: map[string]string{"keep": "me"}}); err != nil {
			t.Fatal(err)
		}
		cert := newCert(ns, "opaque", issuerName, "opaque."+ns+".example.test")
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to refuse the Secret", readyIs(metav1.ConditionFalse, certificate.ReasonSecretNotUsable))
		if s := readySecret(t, ns, "opaque-tls"); string(s.Data["keep"]) != "me" || len(s.Data) != 1 {
			t.Errorf("the Opaque Secret was changed: %v", s.Data)
		}
	})

	t.Run("a TLS Secret no Certificate keeps is left alone until annotated for one", func(t *testing.T) {
		// Say, an issuer's CA key pair, named by someone who may create
		// Certificates or Ingresses but not touch Secrets.
		theirs := caSecretData(t, nil)
		createTLSSecret(t, ns, "theirs-tls", theirs)
		cert := newCert(ns, "theirs", issuerName, "theirs."+ns+".example.test")
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		got := waitCert(t, cert, "to refuse the Secret", readyIs(metav1.ConditionFalse, certificate.ReasonSecretNotUsable))
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, certificate.AnnotationCertificate) {
			t.Errorf("the message %q does not say how to hand the Secret over", c.Message)
		}
		secret := readySecret(t, ns, "theirs-tls")
		if string(secret.Data[corev1.TLSPrivateKeyKey]) != string(theirs[corev1.TLSPrivateKeyKey]) {
			t.Fatal("the Secret's key was replaced")
		}
		// Its owner hands it over.
		secret.Annotations = map[string]string{certificate.AnnotationCertificate: "theirs"}
		if err := env.admin.Update(ctx, secret); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to take the Secret over", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
		leafOf(t, readySecret(t, ns, "theirs-tls"), ca, "theirs."+ns+".example.test")
	})

	t.Run("a PKCS#12 keystore opens with the password from its Secret", func(t *testing.T) {
		if err := env.admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keystore-password"}, StringData: map[string]string{"password": "changeit"}}); err != nil {
			t.Fatal(err)
		}
		cert := newCert(ns, "java", issuerName, "java."+ns+".example.test")
		cert.Spec.Keystores = &v1alpha1.CertificateKeystores{PKCS12: &v1alpha1.Keystore{PasswordSecretRef: v1alpha1.SecretKeySelector{Name: "keystore-password"}}}
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to be Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
		secret := readySecret(t, ns, "java-tls")
		key, leaf, cas, err := pkcs12.DecodeChain(secret.Data[certificate.KeyPKCS12], "changeit")
		if err != nil {
			t.Fatalf("opening keystore.p12: %v", err)
		}
		if !leaf.Equal(leafOf(t, secret, ca, "java."+ns+".example.test")) || key == nil || len(cas) == 0 {
			t.Errorf("keystore.p12 holds another certificate, no key or no CA")
		}
	})

	t.Run("a broken issuer leaves a valid Secret alone, and the Certificate Ready", func(t *testing.T) {
		cert := newCert(ns, "survivor", issuerName, "survivor."+ns+".example.test")
		if err := env.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to be Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
		before := readySecret(t, ns, "survivor-tls")
		// The issuer's CA Secret goes: the issuer stops being Ready.
		if err := env.admin.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: certmintNS, Name: issuerName}}); err != nil {
			t.Fatal(err)
		}
		iss := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: issuerName}}
		waitReady(t, iss, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)
		// A re-issue is due now: the Secret goes.
		if err := env.admin.Delete(ctx, before); err != nil {
			t.Fatal(err)
		}
		got := waitCert(t, cert, "to wait for the issuer", func(c *v1alpha1.Certificate) bool {
			return meta.IsStatusConditionTrue(c.Status.Conditions, v1alpha1.ConditionIssuing)
		})
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionIssuing); c.Reason != "IssuerNotReady" {
			t.Errorf("Issuing %s: %s", c.Reason, c.Message)
		}
		// Another Certificate whose Secret is valid keeps it.
		web := readySecret(t, ns, "web-tls")
		if err := env.admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web-tls"}, web); err != nil {
			t.Fatal(err)
		}
		if !readyIs(metav1.ConditionTrue, "")(waitCert(t, newCert(ns, "web", issuerName), "to stay Ready", readyIs(metav1.ConditionTrue, ""))) {
			t.Error("a Certificate with a valid Secret is not Ready while its issuer is broken")
		}
	})
}

// TestCertificateRenewal checks that a Certificate is renewed at its
// renewal time with a new key, with no polling: the controller's requeue
// at renewalTime.
func TestCertificateRenewal(t *testing.T) {
	e := requireEnv(t)
	startController(t, "certificate-renewal")
	ctx := t.Context()
	ns := uniqueName("renewal")
	if err := e.ensureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	issuerName, ca := certIssuer(t)
	cert := newCert(ns, "short", issuerName, "short."+ns+".example.test")
	// Renewed a minute after issue: the CA backdates notBefore by five
	// minutes and notAfter is ten minutes after signing.
	cert.Spec.Duration = &metav1.Duration{Duration: 10 * time.Minute}
	cert.Spec.RenewBefore = &metav1.Duration{Duration: 9 * time.Minute}
	if err := env.admin.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	first := waitCert(t, cert, "to be Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	firstLeaf := leafOf(t, readySecret(t, ns, "short-tls"), ca, "short."+ns+".example.test")
	if want := first.Status.NotAfter.Add(-9 * time.Minute); !first.Status.RenewalTime.Time.Equal(want.Truncate(time.Second)) {
		t.Errorf("renewalTime %s, want %s", first.Status.RenewalTime, want)
	}
	second := waitCert(t, cert, "to be renewed", func(c *v1alpha1.Certificate) bool { return c.Status.Revision == 2 })
	secondLeaf := leafOf(t, readySecret(t, ns, "short-tls"), ca, "short."+ns+".example.test")
	switch {
	case secondLeaf.SerialNumber.Cmp(firstLeaf.SerialNumber) == 0:
		t.Error("the renewed certificate is the first one")
	case pki.PublicKeysEqual(secondLeaf.PublicKey, firstLeaf.PublicKey):
		t.Error("the renewal kept the key; rotationPolicy Always (the default) makes a new one")
	case time.Now().Before(first.Status.RenewalTime.Time):
		t.Errorf("renewed before renewalTime %s", first.Status.RenewalTime)
	}
	t.Logf("renewed %s after renewalTime", second.Status.NotBefore.Add(5*time.Minute).Sub(first.Status.RenewalTime.Time).Round(time.Second))
}

// TestCertificateFollowsACARotation checks that a CA rotation re-issues a
// Certificate under the new CA, through the issuer's reissueBefore, and
// that its ca.crt carries both CAs while the old one retires.
func TestCertificateFollowsACARotation(t *testing.T) {
	e := requireEnv(t)
	startController(t, "certificate-rotation")
	ctx := t.Context()
	ns := uniqueName("rotation")
	if err := e.ensureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	issuerName, oldCA := certIssuer(t)
	host := "web." + ns + ".example.test"
	cert := newCert(ns, "web", issuerName, host)
	if err := env.admin.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitCert(t, cert, "to be Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	leafOf(t, readySecret(t, ns, "web-tls"), oldCA, host)

	newData := caSecretData(t, nil)
	var caSecret corev1.Secret
	if err := e.admin.Get(ctx, types.NamespacedName{Namespace: certmintNS, Name: issuerName}, &caSecret); err != nil {
		t.Fatal(err)
	}
	caSecret.Data = newData
	if err := e.admin.Update(ctx, &caSecret); err != nil {
		t.Fatal(err)
	}
	got := waitCert(t, cert, "to be re-issued under the new CA", func(c *v1alpha1.Certificate) bool {
		return c.Status.Revision >= 2 && readyIs(metav1.ConditionTrue, "")(c)
	})
	if got.Status.Revision != 2 {
		t.Errorf("revision %d after one rotation, want 2: the certificate was re-issued more than once", got.Status.Revision)
	}
	secret := readySecret(t, ns, "web-tls")
	chain, err := pki.ParseCertificates(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(newData[corev1.TLSCertKey])
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
		t.Errorf("the re-issued certificate is not from the new CA: %v", err)
	}
	bundle, err := pki.ParseCertificates(secret.Data[certificate.KeyCA])
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range bundle {
		names = append(names, string(pki.EncodeCertificates(c)))
	}
	if !slices.Contains(names, string(oldCA)) || !slices.Contains(names, string(newData[corev1.TLSCertKey])) {
		t.Errorf("ca.crt holds %d certificates, want the old and the new CA while the old one retires", len(bundle))
	}
}

// TestIngressCertificates checks the Ingress annotations: one Certificate
// per Secret of spec.tls, owned by the Ingress, following its hosts, and
// removed with the annotation while the Secret stays.
func TestIngressCertificates(t *testing.T) {
	e := requireEnv(t)
	startController(t, "ingress-certificates")
	ctx := t.Context()
	ns := uniqueName("ingress")
	if err := e.ensureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	issuerName, ca := certIssuer(t)
	host := "shop." + ns + ".example.test"
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop", Annotations: map[string]string{ingress.AnnotationClusterIssuer: issuerName}},
		Spec: networkingv1.IngressSpec{
			TLS: []networkingv1.IngressTLS{{Hosts: []string{host}, SecretName: "shop-tls"}},
			DefaultBackend: &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
				Name: "shop", Port: networkingv1.ServiceBackendPort{Number: 80},
			}},
		},
	}
	if err := env.admin.Create(ctx, ing); err != nil {
		t.Fatal(err)
	}
	cert := &v1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-tls"}}
	got := waitCert(t, cert, "to be made for the Ingress and Ready", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	if !metav1.IsControlledBy(got, ing) {
		t.Errorf("the Certificate's owners are %v, want the Ingress", got.OwnerReferences)
	}
	leafOf(t, readySecret(t, ns, "shop-tls"), ca, host)

	t.Run("a new host is added to the Certificate", func(t *testing.T) {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil {
			t.Fatal(err)
		}
		ing.Spec.TLS[0].Hosts = append(ing.Spec.TLS[0].Hosts, "www."+ns+".example.test")
		if err := env.admin.Update(ctx, ing); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "to be issued for the new host", func(c *v1alpha1.Certificate) bool {
			return c.Status.Revision == 2 && readyIs(metav1.ConditionTrue, "")(c)
		})
		leafOf(t, readySecret(t, ns, "shop-tls"), ca, "www."+ns+".example.test")
	})

	updateIngress := func(t *testing.T, change func(*networkingv1.Ingress)) {
		t.Helper()
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil {
			t.Fatal(err)
		}
		change(ing)
		if err := env.admin.Update(ctx, ing); err != nil {
			t.Fatal(err)
		}
	}
	waitGone := func(t *testing.T, name string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			err := env.admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &v1alpha1.Certificate{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Fatalf("Certificate %s stays: %v", name, err)
		}
	}

	t.Run("a Certificate of the name that is not the Ingress's is left alone, and the Ingress gets the name once it goes", func(t *testing.T) {
		theirs := newCert(ns, "taken-tls", issuerName, "other."+ns+".example.test")
		theirs.Spec.SecretName = "their-secret"
		if err := env.admin.Create(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		updateIngress(t, func(ing *networkingv1.Ingress) {
			ing.Spec.TLS = append(ing.Spec.TLS, networkingv1.IngressTLS{Hosts: []string{"taken." + ns + ".example.test"}, SecretName: "taken-tls"})
		})
		waitIngressEvent(t, ing, ingress.ReasonNameTaken)
		if err := env.admin.Delete(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		taken := waitCert(t, &v1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken-tls"}}, "to be the Ingress's", func(c *v1alpha1.Certificate) bool {
			return metav1.IsControlledBy(c, ing) && readyIs(metav1.ConditionTrue, "")(c)
		})
		leafOf(t, readySecret(t, ns, taken.Spec.SecretName), ca, "taken."+ns+".example.test")
	})

	t.Run("removing a TLS entry removes its Certificate", func(t *testing.T) {
		updateIngress(t, func(ing *networkingv1.Ingress) { ing.Spec.TLS = ing.Spec.TLS[:1] })
		waitGone(t, "taken-tls")
	})

	t.Run("annotations a Certificate cannot take change nothing and say why", func(t *testing.T) {
		updateIngress(t, func(ing *networkingv1.Ingress) { ing.Annotations[ingress.AnnotationDuration] = "5m" })
		waitIngressEvent(t, ing, ingress.ReasonBadAnnotations)
		got := waitCert(t, cert, "to stay Ready", readyIs(metav1.ConditionTrue, ""))
		if got.Spec.Duration != nil {
			t.Errorf("the Certificate took the duration %s", got.Spec.Duration.Duration)
		}
		updateIngress(t, func(ing *networkingv1.Ingress) { delete(ing.Annotations, ingress.AnnotationDuration) })
	})

	t.Run("removing the annotation removes the Certificate and keeps the Secret", func(t *testing.T) {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil {
			t.Fatal(err)
		}
		delete(ing.Annotations, ingress.AnnotationClusterIssuer)
		if err := env.admin.Update(ctx, ing); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			err := env.admin.Get(ctx, client.ObjectKeyFromObject(cert), &v1alpha1.Certificate{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Fatalf("the Certificate of an Ingress without the annotation stays: %v", err)
		}
		leafOf(t, readySecret(t, ns, "shop-tls"), ca, host)
	})
}

// waitIngressEvent waits for an Event of reason on ing.
func waitIngressEvent(t *testing.T, ing *networkingv1.Ingress, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		if err := env.admin.List(ctx, &events, client.InNamespace(ing.Namespace)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Ingress" && e.InvolvedObject.Name == ing.Name && e.Reason == reason {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s Event on Ingress %s: %v", reason, ing.Name, err)
	}
}

// TestControllerWritesOnlyTLSSecrets checks the admission policy that keeps
// the controller's Secret permissions from minting tokens: as the
// controller, a ServiceAccount token Secret is refused, a TLS Secret is not.
func TestControllerWritesOnlyTLSSecrets(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	ns := uniqueName("vap")
	if err := e.ensureServiceAccount(ctx, ns, "victim"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.controllerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	asController := kubernetes.NewForConfigOrDie(cfg)
	token := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "stolen", Annotations: map[string]string{corev1.ServiceAccountNameKey: "victim"}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}
	// The policy is enforced once the API server has loaded it.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := asController.CoreV1().Secrets(ns).Create(ctx, token, metav1.CreateOptions{})
		if err == nil {
			return false, fmt.Errorf("the controller created a ServiceAccount token Secret")
		}
		return strings.Contains(err.Error(), "may write only kubernetes.io/tls Secrets"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tlsSecret := func(name string, annotations map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: nil, corev1.TLSPrivateKeyKey: nil}}
	}
	kept := map[string]string{certificate.AnnotationCertificate: "web"}
	if _, err := asController.CoreV1().Secrets(ns).Create(ctx, tlsSecret("fine", kept), metav1.CreateOptions{}); err != nil {
		t.Errorf("the controller may not create a Certificate's TLS Secret: %v", err)
	}
	if _, err := asController.CoreV1().Secrets(ns).Create(ctx, tlsSecret("not-a-certificates", nil), metav1.CreateOptions{}); err == nil {
		t.Error("the controller created a TLS Secret that names no Certificate")
	}
	// A TLS Secret someone else made, such as an issuer's CA key pair:
	// the controller may not take it over, even by annotating it.
	theirs, err := e.kube.CoreV1().Secrets(ns).Create(ctx, tlsSecret("ca-key-pair", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	theirs.Annotations = kept
	if _, err := asController.CoreV1().Secrets(ns).Update(ctx, theirs, metav1.UpdateOptions{}); err == nil {
		t.Error("the controller took over a TLS Secret no Certificate kept")
	}
}

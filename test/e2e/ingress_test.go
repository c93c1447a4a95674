package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

const (
	// ingressHost is the host of the test's Ingress rule. There is no DNS:
	// the client dials Traefik's pod IP and names the host only in SNI and
	// the Host header.
	ingressHost = "app.example.test"
	// ingressCAFile is where the client pod finds the CA to verify
	// Traefik with, and otherCAFile one that signed none of its
	// certificates, from a ConfigMap.
	ingressCAFile = "/ca/ca.crt"
	otherCAFile   = "/ca/other-ca.crt"
	// ingressTimeout bounds a wait for Traefik to act on a change of
	// the API objects it watches; it takes seconds.
	ingressTimeout = 2 * time.Minute
)

// TestIngressControllerServesAndReloadsTLSSecret checks, without certmint,
// the Ingress controller the certificate tests rely on: Traefik serves an
// Ingress's spec.tls Secret over HTTPS to a client that verifies it against
// its CA and the host name, and serves the new certificate once the Secret
// is replaced, as a renewal replaces it.
func TestIngressControllerServesAndReloadsTLSSecret(t *testing.T) {
	f := framework.New(t, testCluster)
	traefik := startTraefik(t)

	ca := newTestCA(t, "ingress e2e CA")
	first := ca.serverCertificate(t, ingressHost)
	const secretName, message = "app-tls", "hello from the ingress backend"
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName},
		Type:       corev1.SecretTypeTLS,
		Data:       first.secretData(),
	}
	if _, err := f.Client.CoreV1().Secrets(f.Namespace).Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Secret: %v", err)
	}
	startIngressBackend(t, f, "app", message)
	createIngress(t, f, "app", "app", secretName, nil)
	startIngressClient(t, f, "client", ca.certPEM, newTestCA(t, "unrelated CA").certPEM)
	waitIngressAddress(t, f, "app", traefik.PodIP)

	get := func(serverName string) (string, error) {
		return httpsGetSerial(f, traefik.HTTPSAddr(), serverName, ingressCAFile, message)
	}
	waitServedSerial(t, f, "Traefik to serve https://"+ingressHost+"/ with the Secret's certificate", get, first.serial())

	t.Run("the client refuses the certificate under a CA that did not sign it", func(t *testing.T) {
		f := f.WithT(t)
		out, err := httpsGetSerial(f, traefik.HTTPSAddr(), ingressHost, otherCAFile, message)
		if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
			t.Errorf("GET trusting another CA: err = %v, output %q; want the client to refuse the chain", err, out)
		}
	})

	t.Run("the client refuses a certificate that does not name the host it asked for", func(t *testing.T) {
		f := f.WithT(t)
		// Traefik answers a host it has no certificate for with its
		// self-signed default one.
		out, err := httpsGetSerial(f, traefik.HTTPSAddr(), "other.example.test", ingressCAFile, message)
		if err == nil || !strings.Contains(err.Error(), ", not other.example.test") {
			t.Errorf("GET with SNI other.example.test: err = %v, output %q; want the client to refuse the host name", err, out)
		}
	})

	second := ca.serverCertificate(t, ingressHost)
	current, err := f.Client.CoreV1().Secrets(f.Namespace).Get(t.Context(), secretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	current.Data = second.secretData()
	if _, err := f.Client.CoreV1().Secrets(f.Namespace).Update(t.Context(), current, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("replacing the Secret's certificate: %v", err)
	}
	replaced := time.Now()
	waitServedSerial(t, f, "Traefik to serve the replaced certificate", get, second.serial())
	t.Logf("Traefik served the replaced certificate %s after the Secret's update", time.Since(replaced).Round(10*time.Millisecond))
}

// startTraefik installs Traefik for t and removes it when t ends, logging
// its last lines first if t failed.
func startTraefik(t *testing.T) *deploy.TraefikInstance {
	t.Helper()
	start := time.Now()
	traefik, err := deploy.Traefik(t.Context(), testCluster, testCluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Traefik Ready at %s in %s", traefik.PodIP, time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			logs, err := traefik.Logs(ctx)
			if err != nil {
				logs = err.Error()
			}
			t.Logf("last lines of Traefik's log:\n%s", logs)
		}
		if err := traefik.Delete(ctx); err != nil {
			t.Errorf("removing Traefik: %v", err)
		}
	})
	return traefik
}

// startIngressBackend starts a pod name answering HTTP with message and a
// Service name selecting it on port 80, and waits until the pod is Ready.
func startIngressBackend(t *testing.T, f *framework.Framework, name, message string) {
	t.Helper()
	pod, svc := deploy.HTTPBackend(name, testappImage, message, serverUser)
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod %s: %v", name, err)
	}
	if _, err := f.Client.CoreV1().Services(f.Namespace).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Service %s: %v", name, err)
	}
	f.WaitForPodRunning(name, podTimeout)
}

// createIngress creates an Ingress name of Traefik's class, with
// annotations, routing ingressHost to port 80 of service, with TLS from
// secretName.
func createIngress(t *testing.T, f *framework.Framework, name, service, secretName string, annotations map[string]string) {
	t.Helper()
	ing := deploy.TLSIngress(name, ingressHost, service, secretName, annotations)
	if _, err := f.Client.NetworkingV1().Ingresses(f.Namespace).Create(t.Context(), ing, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Ingress %s: %v", name, err)
	}
}

// startIngressClient starts a pod name that sleeps, with caPEM at
// ingressCAFile and otherCAPEM at otherCAFile from a ConfigMap of the same
// name, and waits until it runs. Tests exec https-get in it.
func startIngressClient(t *testing.T, f *framework.Framework, name string, caPEM, otherCAPEM []byte) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{
		filepath.Base(ingressCAFile): string(caPEM),
		filepath.Base(otherCAFile):   string(otherCAPEM),
	}}
	if _, err := f.Client.CoreV1().ConfigMaps(f.Namespace).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ConfigMap %s: %v", name, err)
	}
	pod := testappPod(name, []string{"sleep"})
	pod.Spec.Volumes = []corev1.Volume{{Name: "ca", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}},
	}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "ca", MountPath: "/ca", ReadOnly: true}}
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod %s: %v", name, err)
	}
	f.WaitForPodRunning(name, podTimeout)
}

// testappPod is an unprivileged pod of the test app running args.
func testappPod(name string, args []string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			DNSPolicy:                     corev1.DNSDefault,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: new(true),
				RunAsUser:    new(int64(serverUser)),
				RunAsGroup:   new(int64(serverUser)),
			},
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           testappImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            args,
			}},
		},
	}
}

// waitIngressAddress waits until the Ingress's status names ip, which
// Traefik writes when it takes the Ingress on.
func waitIngressAddress(t *testing.T, f *framework.Framework, name, ip string) {
	t.Helper()
	f.WaitFor("Ingress "+name+"'s status to name Traefik's address "+ip, ingressTimeout, func(ctx context.Context) (bool, string, error) {
		ing, err := f.Client.NetworkingV1().Ingresses(f.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		lb := ing.Status.LoadBalancer.Ingress
		return len(lb) == 1 && lb[0].IP == ip, fmt.Sprintf("status.loadBalancer.ingress %+v", lb), nil
	})
}

var servedSerial = regexp.MustCompile(`verified server \S+ \(serial ([0-9a-f]+)\)`)

// httpsGetSerial has the pod "client" GET https://serverName/ from addr,
// verifying the server's certificate against caFile and serverName and
// requiring the body wantBody, and returns the serial of the certificate
// served.
func httpsGetSerial(f *framework.Framework, addr, serverName, caFile, wantBody string) (string, error) {
	out, err := f.Kubectl("exec", "client", "--", "/testapp", "https-get", "--addr="+addr,
		"--server-name="+serverName, "--ca-file="+caFile, "--expect-body="+wantBody)
	if err != nil {
		return out, err
	}
	m := servedSerial.FindStringSubmatch(out)
	if m == nil {
		return out, fmt.Errorf("https-get printed no serial: %q", out)
	}
	return m[1], nil
}

// waitServedSerial waits until get answers a certificate with serial want.
func waitServedSerial(t *testing.T, f *framework.Framework, what string, get func(serverName string) (string, error), want string) {
	t.Helper()
	f.WaitFor(fmt.Sprintf("%s (serial %s)", what, want), ingressTimeout, func(context.Context) (bool, string, error) {
		serial, err := get(ingressHost)
		if err != nil {
			return false, err.Error(), nil
		}
		return serial == want, "served serial " + serial, nil
	})
}

// testCA is a throwaway CA signing server certificates, standing in for an
// issuer.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key := newP256Key(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// servingCert is a server certificate and its key, and both in PEM.
type servingCert struct {
	cert            *x509.Certificate
	certPEM, keyPEM []byte
}

// serverCertificate issues a server certificate for host, with a new key.
func (ca *testCA) serverCertificate(t *testing.T, host string) servingCert {
	t.Helper()
	key := newP256Key(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(t),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("creating server certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return servingCert{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// secretData is the data of a kubernetes.io/tls Secret holding c.
func (c servingCert) secretData() map[string][]byte {
	return map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM}
}

// serial is the certificate's serial as https-get prints it.
func (c servingCert) serial() string { return fmt.Sprintf("%x", c.cert.SerialNumber) }

func newP256Key(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newSerial(t *testing.T) *big.Int {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return serial
}

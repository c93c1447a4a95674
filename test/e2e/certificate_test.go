package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/certmint/certmint/pkg/controller/ingress"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

// ingressIssuer is the ClusterIssuer of the Ingress's certificates; its
// policy grants the names under example.test.
const ingressIssuer = "e2e-ingress"

// TestIngressCertificate checks the Secret path end to end: an Ingress
// annotated with a certmint ClusterIssuer gets a Certificate for its TLS
// entry, whose Secret Traefik serves over HTTPS to a pod that verifies the
// chain against the issuer's CA and the host name; the short-lived
// certificate is renewed and Traefik serves the new one with no failed
// request; and removing the annotation removes the Certificate but not the
// Secret, which Traefik goes on serving.
func TestIngressCertificate(t *testing.T) {
	f := framework.New(t, testCluster)
	installCertmint(t, f)
	root, err := deploy.CAClusterIssuerWithPolicy(t.Context(), testCluster.Config, ingressIssuer, map[string]any{
		"allowedDNSNames": []any{"*.example.test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	traefik := startTraefik(t)
	const secretName, message = "app-tls", "hello through certmint's certificate"
	startIngressBackend(t, f, "app", message)
	// Renewed a minute after issue: the CA backdates notBefore by five
	// minutes, and renews 9 of the 10 minutes before expiry.
	createIngress(t, f, "app", "app", secretName, map[string]string{
		ingress.AnnotationClusterIssuer: ingressIssuer,
		ingress.AnnotationDuration:      "10m",
		ingress.AnnotationRenewBefore:   "9m",
	})
	startIngressClient(t, f, "client", pki.EncodeCertificates(root), newTestCA(t, "unrelated CA").certPEM)
	waitIngressAddress(t, f, "app", traefik.PodIP)

	dyn := dynamicClient(t)
	revision := func(ctx context.Context) (int64, string) {
		u, err := dyn.Resource(deploy.Certificates).Namespace(f.Namespace).Get(ctx, secretName, metav1.GetOptions{})
		if err != nil {
			return 0, err.Error()
		}
		rev, _, _ := unstructured.NestedInt64(u.Object, "status", "revision")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		return rev, fmt.Sprintf("revision %d, conditions %v", rev, conds)
	}
	f.WaitFor("the Ingress's Certificate to be issued", podTimeout, func(ctx context.Context) (bool, string, error) {
		rev, state := revision(ctx)
		return rev >= 1, state, nil
	})
	first := secretSerial(t, f, secretName)
	get := func(serverName string) (string, error) {
		return httpsGetSerial(f, traefik.HTTPSAddr(), serverName, ingressCAFile, message)
	}
	waitServedSerial(t, f, "Traefik to serve the certificate certmint issued", get, first)

	t.Run("the client refuses it under a CA that did not sign it", func(t *testing.T) {
		out, err := httpsGetSerial(f.WithT(t), traefik.HTTPSAddr(), ingressHost, otherCAFile, message)
		if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
			t.Errorf("GET trusting another CA: err = %v, output %q; want the client to refuse the chain", err, out)
		}
	})

	t.Run("the certificate is renewed and Traefik serves the new one with no failed request", func(t *testing.T) {
		f := f.WithT(t)
		poller := testappPod("poller", []string{"https-get", "--addr=" + traefik.HTTPSAddr(), "--server-name=" + ingressHost,
			"--ca-file=" + ingressCAFile, "--expect-body=" + message, "--every=250ms", "--timeout=5s"})
		poller.Spec.Volumes = []corev1.Volume{{Name: "ca", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "client"}},
		}}}
		poller.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "ca", MountPath: "/ca", ReadOnly: true}}
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), poller, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitForPodRunning("poller", podTimeout)
		f.WaitFor("the poller's first request", time.Minute, func(context.Context) (bool, string, error) {
			logs, err := f.Kubectl("logs", "poller")
			return err == nil && strings.Contains(logs, "verified server "), "poller log: " + logs, nil
		})
		f.WaitFor("the Certificate's renewal", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
			rev, state := revision(ctx)
			return rev >= 2, state, nil
		})
		second := secretSerial(t, f, secretName)
		if second == first {
			t.Fatal("the renewed Secret holds the first certificate")
		}
		waitServedSerial(t, f, "Traefik to serve the renewed certificate", get, second)
		f.WaitFor("the poller to see the renewed certificate", time.Minute, func(context.Context) (bool, string, error) {
			logs, err := f.Kubectl("logs", "poller")
			return err == nil && strings.Contains(logs, "(serial "+second+")"), "waiting for serial " + second, nil
		})
		logs, err := f.Kubectl("logs", "poller")
		if err != nil {
			t.Fatal(err)
		}
		_, afterFirst, _ := strings.Cut(logs, "verified server ")
		if failed := strings.Count(afterFirst, "call failed"); failed > 0 {
			t.Errorf("%d requests failed across the renewal:\n%s", failed, logs)
		}
		t.Logf("%d requests succeeded across the renewal", strings.Count(logs, "verified server "))
	})

	t.Run("no API object holds a private key but the Certificate's Secret and the CA's", func(t *testing.T) {
		for _, found := range privateKeysInAPI(t, f.WithT(t), deploy.Namespace+"/"+ingressIssuer, f.Namespace+"/"+secretName) {
			t.Errorf("%s holds a private key", found)
		}
	})

	t.Run("removing the annotation removes the Certificate, and the Secret stays served", func(t *testing.T) {
		f := f.WithT(t)
		ing, err := f.Client.NetworkingV1().Ingresses(f.Namespace).Get(t.Context(), "app", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		delete(ing.Annotations, ingress.AnnotationClusterIssuer)
		if _, err := f.Client.NetworkingV1().Ingresses(f.Namespace).Update(t.Context(), ing, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitFor("the Certificate to be deleted", time.Minute, func(ctx context.Context) (bool, string, error) {
			_, err := dyn.Resource(deploy.Certificates).Namespace(f.Namespace).Get(ctx, secretName, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), nil
		})
		serial := secretSerial(t, f, secretName)
		if got, err := get(ingressHost); err != nil || got != serial {
			t.Errorf("after the Certificate went Traefik served %q (%v), want the Secret's %s", got, err, serial)
		}
	})
}

// secretSerial is the serial, in hex, of the leaf in the Secret name.
func secretSerial(t *testing.T, f *framework.Framework, name string) string {
	t.Helper()
	s, err := f.Client.CoreV1().Secrets(f.Namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading Secret %s: %v", name, err)
	}
	chain, err := pki.ParseCertificates(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatalf("Secret %s: %v", name, err)
	}
	return fmt.Sprintf("%x", chain[0].SerialNumber)
}

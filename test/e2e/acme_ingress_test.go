package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/controller/acmesolver"
	"github.com/certmint/certmint/pkg/controller/ingress"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
	"github.com/certmint/certmint/test/pebble"
	"github.com/certmint/certmint/test/testproc"
)

const (
	// acmeIssuer is the ACME ClusterIssuer of TestACMEThroughIngress.
	acmeIssuer = "e2e-pebble"
	// pebbleBasePort is the first of the ports Pebble and its DNS server
	// listen on in the cluster's network namespace, where nothing else
	// uses them.
	pebbleBasePort = 14000
)

// TestACMEThroughIngress gets an Ingress's certificate from a real ACME
// server: Pebble resolves the Ingress's host to Traefik and validates the
// HTTP-01 challenge through it, by way of the Ingress certmint keeps for
// the challenge; Traefik then serves Pebble's chain for the host; and the
// challenge's Ingress and key authorization are gone afterwards.
func TestACMEThroughIngress(t *testing.T) {
	f := framework.New(t, testCluster)
	sys := installCertmint(t, f)
	traefik := startTraefik(t)
	pb := pebble.Start(t, pebble.Options{
		IP:        testCluster.APIServerIP(),
		BasePort:  pebbleBasePort,
		HTTPPort:  traefik.HTTPPort,
		ResolveTo: traefik.PodIP,
		Command:   testCluster.Command,
	})
	// The controller checks that a challenge answers through the Ingress
	// controller before it asks Pebble to validate, as Pebble will: at the
	// host's address. The cluster has no DNS; the controller's pods get
	// the host's address the way Pebble does, pointing at Traefik.
	resolveInController(t, sys, ingressHost, traefik.PodIP)
	createACMEIssuer(t, f, pb)

	// Watched from before the Ingress exists: the challenge's objects come
	// and go within the issuance.
	routes, err := f.Client.NetworkingV1().Ingresses(deploy.Namespace).Watch(t.Context(), metav1.ListOptions{
		LabelSelector: acmesolver.LabelChallenge + "=true", ResourceVersion: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer routes.Stop()

	const secretName, message = "app-tls", "hello through an ACME certificate"
	startIngressBackend(t, f, "app", message)
	createIngress(t, f, "app", "app", secretName, map[string]string{ingress.AnnotationClusterIssuer: acmeIssuer})
	startIngressClient(t, f, "client", pb.Root, newTestCA(t, "unrelated CA").certPEM)
	waitIngressAddress(t, f, "app", traefik.PodIP)

	dyn := dynamicClient(t)
	f.WaitFor("the Ingress's Certificate to be issued by Pebble", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		u, err := dyn.Resource(deploy.Certificates).Namespace(f.Namespace).Get(ctx, secretName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		rev, _, _ := unstructured.NestedInt64(u.Object, "status", "revision")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		return rev >= 1, fmt.Sprintf("revision %d, conditions %v", rev, conds), nil
	})

	t.Run("the challenge was routed through an Ingress of Traefik's class for the host", func(t *testing.T) {
		var route *networkingv1.Ingress
		// The issuance is over: its events are on their way, if any.
		timeout := time.After(time.Minute)
		for route == nil {
			select {
			case ev := <-routes.ResultChan():
				if ing, ok := ev.Object.(*networkingv1.Ingress); ok {
					route = ing
				}
			case <-timeout:
				t.Fatal("no Ingress routed the HTTP-01 challenge")
			}
		}
		if c := route.Spec.IngressClassName; c == nil || *c != deploy.TraefikIngressClass {
			t.Errorf("the challenge's Ingress has class %v, want %s", c, deploy.TraefikIngressClass)
		}
		if r := route.Spec.Rules; len(r) != 1 || r[0].Host != ingressHost || !strings.HasPrefix(r[0].HTTP.Paths[0].Path, acmesolver.PathPrefix) {
			t.Errorf("the challenge's Ingress routes %+v, want only %s%s<token>", r, ingressHost, acmesolver.PathPrefix)
		}
		if log := pb.Log(); !strings.Contains(log, acmesolver.PathPrefix) {
			t.Errorf("Pebble logged no HTTP-01 validation:\n%s", testproc.Tail(log, 30))
		}
	})

	t.Run("the Secret holds Pebble's chain for the host, and Traefik serves it", func(t *testing.T) {
		secret, err := f.Client.CoreV1().Secrets(f.Namespace).Get(t.Context(), secretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		chain, err := pki.ParseCertificates(secret.Data[corev1.TLSCertKey])
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pb.Root)
		intermediates := x509.NewCertPool()
		for _, c := range chain[1:] {
			intermediates.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, DNSName: ingressHost}); err != nil {
			t.Errorf("the Secret's chain does not verify against Pebble's root for %s: %v", ingressHost, err)
		}
		get := func(serverName string) (string, error) {
			return httpsGetSerial(f, traefik.HTTPSAddr(), serverName, ingressCAFile, message)
		}
		waitServedSerial(t, f.WithT(t), "Traefik to serve Pebble's certificate", get, fmt.Sprintf("%x", chain[0].SerialNumber))
	})

	t.Run("the issuance shows in an Order and a Challenge, which go with their Certificate", func(t *testing.T) {
		f := f.WithT(t)
		orders, err := dyn.Resource(deploy.Orders).Namespace(f.Namespace).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		challenges, err := dyn.Resource(deploy.Challenges).Namespace(f.Namespace).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(orders.Items) != 1 || len(challenges.Items) != 1 {
			t.Fatalf("%d Orders and %d Challenges, want one of each", len(orders.Items), len(challenges.Items))
		}
		for _, u := range []unstructured.Unstructured{orders.Items[0], challenges.Items[0]} {
			if state, _, _ := unstructured.NestedString(u.Object, "status", "state"); state != "valid" {
				t.Errorf("%s %s is %q, want valid", u.GetKind(), u.GetName(), state)
			}
		}
		if typ, _, _ := unstructured.NestedString(challenges.Items[0].Object, "spec", "type"); typ != "http-01" {
			t.Errorf("the Challenge is %q, want http-01", typ)
		}
		// The annotation goes, and the Certificate with it: the garbage
		// collector removes its Order, and the Order's Challenge.
		ing, err := f.Client.NetworkingV1().Ingresses(f.Namespace).Get(t.Context(), "app", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		delete(ing.Annotations, ingress.AnnotationClusterIssuer)
		if _, err := f.Client.NetworkingV1().Ingresses(f.Namespace).Update(t.Context(), ing, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitFor("the Order and the Challenge to be collected with their Certificate", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
			orders, err := dyn.Resource(deploy.Orders).Namespace(f.Namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			challenges, err := dyn.Resource(deploy.Challenges).Namespace(f.Namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			return len(orders.Items)+len(challenges.Items) == 0, fmt.Sprintf("%d Orders, %d Challenges", len(orders.Items), len(challenges.Items)), nil
		})
	})

	t.Run("nothing of the challenge is left", func(t *testing.T) {
		sys := sys.WithT(t)
		sys.WaitFor("the challenge's Ingress and key authorization to be removed", time.Minute, func(ctx context.Context) (bool, string, error) {
			selector := metav1.ListOptions{LabelSelector: acmesolver.LabelChallenge + "=true"}
			ings, err := sys.Client.NetworkingV1().Ingresses(deploy.Namespace).List(ctx, selector)
			if err != nil {
				return false, err.Error(), nil
			}
			cms, err := sys.Client.CoreV1().ConfigMaps(deploy.Namespace).List(ctx, selector)
			if err != nil {
				return false, err.Error(), nil
			}
			return len(ings.Items)+len(cms.Items) == 0, fmt.Sprintf("%d Ingresses, %d ConfigMaps", len(ings.Items), len(cms.Items)), nil
		})
	})
}

// resolveInController makes host resolve to ip in the certmint
// controller's pods and waits until the Deployment has rolled out pods
// that do.
func resolveInController(t *testing.T, sys *framework.Framework, host, ip string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"hostAliases":[{"ip":%q,"hostnames":[%q]}]}}}}`, ip, host)
	if _, err := sys.Client.AppsV1().Deployments(deploy.Namespace).Patch(t.Context(), deploy.ControllerDeployment,
		types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("pointing %s at %s in the controller's pods: %v", host, ip, err)
	}
	sys.WaitForDeploymentAvailable(deploy.ControllerDeployment, podTimeout)
}

// createACMEIssuer creates the ClusterIssuer acmeIssuer for Pebble, routing
// challenges through Traefik, granting the names under example.test, and
// waits until it is Ready: registered with Pebble.
func createACMEIssuer(t *testing.T, f *framework.Framework, pb *pebble.Server) {
	t.Helper()
	dyn := dynamicClient(t)
	iss := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "certmint.io/v1alpha1",
		"kind":       "ClusterIssuer",
		"metadata":   map[string]any{"name": acmeIssuer},
		"spec": map[string]any{
			"acme": map[string]any{
				"server":               pb.DirectoryURL,
				"email":                "certs@example.test",
				"accountKeySecretName": acmeIssuer + "-account",
				"caBundle":             string(pb.TLSCA),
				"trustBundle":          string(pb.Root),
				"solvers": []any{map[string]any{"http01": map[string]any{
					"ingress": map[string]any{"ingressClassName": deploy.TraefikIngressClass},
				}}},
			},
			"policy": map[string]any{"allowedDNSNames": []any{"*.example.test"}},
		},
	}}
	if _, err := dyn.Resource(deploy.ClusterIssuers).Create(t.Context(), iss, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ClusterIssuer %s: %v", acmeIssuer, err)
	}
	f.WaitFor("ClusterIssuer "+acmeIssuer+" to register with Pebble and be Ready", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		u, err := dyn.Resource(deploy.ClusterIssuers).Get(ctx, acmeIssuer, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
				return m["status"] == "True", fmt.Sprintf("Ready %v: %v", m["status"], m["message"]), nil
			}
		}
		return false, "no Ready condition", nil
	})
}

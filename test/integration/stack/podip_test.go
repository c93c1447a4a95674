package stack_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/stack"
)

// reissueTimeout bounds how long a volume may take to name its pod's new
// address: the driver's pod watch, the renewal rate limit, the controller's
// approval and signing, on two shared cores.
const reissueTimeout = time.Minute

// setPodIPs writes ips into the status of v's pod as the pod's node does
// once its sandbox has them: with the node's own credentials, which the
// API server's Node authorizer and NodeRestriction admit for pods bound to
// it.
func setPodIPs(t *testing.T, v stack.Volume, ips ...string) *corev1.Pod {
	t.Helper()
	cfg, err := env.CP.UserConfig("system:node:"+env.Node, "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	node, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := env.Admin.CoreV1().Pods(v.Pod.Namespace).Get(t.Context(), v.Pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP = ips[0]
	pod.Status.PodIPs = nil
	for _, ip := range ips {
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	updated, err := node.CoreV1().Pods(pod.Namespace).UpdateStatus(t.Context(), pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("node %s writing the addresses of pod %s: %v", env.Node, pod.Name, err)
	}
	return updated
}

func ipStrings(ips []net.IP) []string {
	out := []string{}
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// TestAVolumeGetsItsPodsAddressOnceThePodHasOne publishes, through the real
// driver, a volume asking for ${POD_IP} of a pod that has no address yet,
// as the kubelet does before the pod's sandbox exists: the first
// certificate names none. Once the pod's node writes the address into the
// pod's status, the driver re-issues the volume, and the real controller
// approves the address as the pod's own.
func TestAVolumeGetsItsPodsAddressOnceThePodHasOne(t *testing.T) {
	requireEnv(t)
	v := newVolume(t, "pod-ip")
	req, err := publish(t, v, map[string]string{
		attributes.IssuerName: caIssuerPodIPs, attributes.IssuerKind: "ClusterIssuer",
		attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.IPSANs: "${POD_IP}",
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	first := leafOf(t, req.TargetPath)
	if len(first.IPAddresses) != 0 {
		t.Fatalf("the first certificate names %v before the pod has an address", first.IPAddresses)
	}

	const podIP = "10.244.7.5"
	setPodIPs(t, v, podIP)
	statusWritten := time.Now()
	var leaf *x509.Certificate
	err = wait.PollUntilContextTimeout(t.Context(), 5*time.Millisecond, reissueTimeout, true, func(context.Context) (bool, error) {
		leaf = leafOf(t, req.TargetPath)
		return len(leaf.IPAddresses) > 0, nil
	})
	if err != nil {
		t.Fatalf("the volume's certificate did not name the pod's address %s within %s of the pod's status having it; it names %v",
			podIP, reissueTimeout, leaf.IPAddresses)
	}
	t.Logf("the certificate named the pod's address %s after the status update", time.Since(statusWritten).Round(time.Millisecond))
	if got := ipStrings(leaf.IPAddresses); !slices.Equal(got, []string{podIP}) {
		t.Errorf("re-issued certificate names %v, want %s alone", got, podIP)
	}
	if want := []string{v.Pod.Name + "." + workloadNS + ".svc"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("re-issued certificate names DNS names %v, want %v as before", leaf.DNSNames, want)
	}
	if leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the certificate naming the address is the first one")
	}
}

// TestADriverIsDeniedAnotherPodsAddress makes requests as a compromised
// driver would, with the driver's own token, for a pod on its node naming
// an address: its pod's own is approved, another pod's on the same node is
// denied.
func TestADriverIsDeniedAnotherPodsAddress(t *testing.T) {
	requireEnv(t)
	web, other := newVolume(t, "web"), newVolume(t, "other")
	setPodIPs(t, web, "10.244.7.10")
	setPodIPs(t, other, "10.244.7.11")
	cfg, err := env.DriverConfig()
	if err != nil {
		t.Fatal(err)
	}
	driver, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// The control: the same request for the pod's own address is approved,
	// so the denial below is the address's doing.
	if got := requestAddress(t, driver, web.Pod, "10.244.7.10"); got != "Approved" {
		t.Errorf("request naming the pod's own address: %s, want Approved", got)
	}
	if got := requestAddress(t, driver, web.Pod, "10.244.7.11"); got != "Denied: PodIPMismatch: 10.244.7.11 is not an address of pod "+workloadNS+"/"+web.Pod.Name+
		", whose addresses are 10.244.7.10: a certificate names only its own pod's addresses" {
		t.Errorf("request naming another pod's address: %s, want Denied for PodIPMismatch", got)
	}
}

// requestAddress creates, as driver, the request the driver makes for
// pod's certificate naming the address ip, and returns its outcome:
// "Approved" once the certificate is issued, or "Denied: <reason>:
// <message>".
func requestAddress(t *testing.T, driver kubernetes.Interface, pod *corev1.Pod, ip string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		DNSNames:    []string{pod.Name + "." + pod.Namespace + ".svc"},
		IPAddresses: []net.IP{net.ParseIP(ip)},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	seconds := int32(time.Hour / time.Second)
	csr, err := driver.CertificatesV1().CertificateSigningRequests().Create(t.Context(), &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "stack-pod-ip-",
			Labels: map[string]string{
				request.LabelManagedBy: request.DriverName,
				request.LabelNode:      env.Node,
				request.LabelPodUID:    string(pod.UID),
			},
			Annotations: map[string]string{
				request.AnnotationPodName:      pod.Name,
				request.AnnotationPodNamespace: pod.Namespace,
				request.AnnotationVolumeID:     "stack-pod-ip",
				request.AnnotationPodIPs:       request.PodIPsPrimary,
			},
		},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        request.IssuerRef{Kind: request.KindClusterIssuer, Name: caIssuerPodIPs}.SignerName(),
			ExpirationSeconds: &seconds,
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a request for pod %s as the driver: %v", pod.Name, err)
	}
	defer func() {
		if err := env.Admin.CertificatesV1().CertificateSigningRequests().Delete(context.Background(), csr.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting request %s: %v", csr.Name, err)
		}
	}()
	var outcome string
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := env.Admin.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
				outcome = fmt.Sprintf("%s: %s: %s", c.Type, c.Reason, c.Message)
				return true, nil
			}
		}
		if len(got.Status.Certificate) > 0 {
			outcome = "Approved"
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("waiting for request %s for pod %s naming %s to be decided: %v", csr.Name, pod.Name, ip, err)
	}
	return outcome
}

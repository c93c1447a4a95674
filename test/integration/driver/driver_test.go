package driver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	"k8s.io/utils/ptr"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/request"
)

func requireEnv(t testing.TB) {
	t.Helper()
	if env == nil {
		t.Skip("needs a kube-apiserver and root; runs without -short")
	}
}

// workloadPod creates a pod on the driver's node, as the pod the kubelet
// would publish a volume for.
func workloadPod(t testing.TB, name string) *corev1.Pod {
	t.Helper()
	return workloadPodOn(t, nodeName, name)
}

// workloadPodOn creates a pod on node.
func workloadPodOn(t testing.TB, node, name string) *corev1.Pod {
	t.Helper()
	pod, err := env.admin.CoreV1().Pods(workloadNS).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: workloadSA, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "example/app"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// No kubelet will confirm a graceful deletion.
		_ = env.admin.CoreV1().Pods(workloadNS).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	})
	return pod
}

// publishRequest is what the kubelet sends for an inline volume of pod.
func publishRequest(t testing.TB, pod *corev1.Pod, volumeID string, attrs ...string) *csispec.NodePublishVolumeRequest {
	ctx := map[string]string{
		attributes.PodNameKey:            pod.Name,
		attributes.PodNamespaceKey:       pod.Namespace,
		attributes.PodUIDKey:             string(pod.UID),
		attributes.ServiceAccountNameKey: pod.Spec.ServiceAccountName,
		attributes.EphemeralKey:          "true",
		attributes.IssuerName:            "ca",
		attributes.DNSNames:              "${POD_NAME}.${POD_NAMESPACE}.svc",
	}
	for i := 0; i < len(attrs); i += 2 {
		ctx[attrs[i]] = attrs[i+1]
	}
	return &csispec.NodePublishVolumeRequest{
		VolumeId:   volumeID,
		TargetPath: filepath.Join(t.TempDir(), "pods", string(pod.UID), "volumes", "tls", "mount"),
		Readonly:   true,
		VolumeCapability: &csispec.VolumeCapability{
			AccessType: &csispec.VolumeCapability_Mount{Mount: &csispec.VolumeCapability_MountVolume{}},
			AccessMode: &csispec.VolumeCapability_AccessMode{Mode: csispec.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: ctx,
	}
}

// mountOf returns the fields of the /proc/self/mountinfo line for path.
func mountOf(t testing.TB, path string) (fsType, opts string, ok bool) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 10 || fields[4] != path {
			continue
		}
		for i, fld := range fields {
			if fld == "-" {
				return fields[i+1], fields[5], true
			}
		}
	}
	return "", "", false
}

func TestPublishIssuesACertificateOnTmpfsAndBindMountsItReadOnly(t *testing.T) {
	requireEnv(t)
	pod := workloadPod(t, "web-0")
	req := publishRequest(t, pod, "csi-it-publish")
	req.VolumeCapability.GetMount().VolumeMountGroup = "2000"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := env.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = env.node.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})

	if fsType, _, ok := mountOf(t, filepath.Join(env.dataRoot, req.VolumeId)); !ok || fsType != "tmpfs" {
		t.Errorf("volume directory is mounted as %q (%v), want tmpfs", fsType, ok)
	}
	if _, opts, ok := mountOf(t, req.TargetPath); !ok || !strings.Contains(","+opts+",", ",ro,") {
		t.Errorf("target path mount options %q (mounted: %v), want a read-only mount", opts, ok)
	}
	if err := os.WriteFile(filepath.Join(req.TargetPath, "x"), nil, 0o600); err == nil {
		t.Error("wrote into the published volume")
	}

	pair, err := tls.LoadX509KeyPair(filepath.Join(req.TargetPath, "tls.crt"), filepath.Join(req.TargetPath, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := checkTrustBundle(t, req.TargetPath)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "web-0.shop.svc", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("certificate does not verify for web-0.shop.svc against ca.crt: %v", err)
	}
	checkGroup(t, req.TargetPath, 2000, 0o440)

	// The API server, not the driver, stamped who asked and from which node.
	var found bool
	for _, r := range env.seen() {
		if r.Annotations[request.AnnotationVolumeID] != req.VolumeId {
			continue
		}
		found = true
		if got := r.Spec.Extra[request.ExtraNodeName]; len(got) != 1 || got[0] != nodeName {
			t.Errorf("spec.extra[%s] = %v, want [%s]", request.ExtraNodeName, got, nodeName)
		}
		if got := r.Spec.Extra[request.ExtraPodName]; len(got) != 1 || got[0] != driverPod {
			t.Errorf("spec.extra[%s] = %v, want [%s]", request.ExtraPodName, got, driverPod)
		}
		if want := "system:serviceaccount:" + driverNS + ":" + driverSA; r.Spec.Username != want {
			t.Errorf("spec.username = %q, want %q", r.Spec.Username, want)
		}
		if r.Spec.SignerName != "issuers.certmint.io/shop.ca" || r.Labels[request.LabelPodUID] != string(pod.UID) ||
			r.Labels[request.LabelNode] != nodeName || r.Annotations[request.AnnotationPodName] != "web-0" ||
			r.Annotations[request.AnnotationPodNamespace] != workloadNS || ptr.Deref(r.Spec.ExpirationSeconds, 0) != 86400 {
			t.Errorf("request does not name the pod, node, issuer and duration: %+v", r.ObjectMeta)
		}
	}
	if !found {
		t.Fatal("the signer never saw the request")
	}
	waitRequestsDeleted(t, pod)

	if _, err := env.node.NodeUnpublishVolume(ctx, &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{req.TargetPath, filepath.Join(env.dataRoot, req.VolumeId)} {
		if _, _, mounted := mountOf(t, p); mounted {
			t.Errorf("%s is still mounted", p)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists", p)
		}
	}
}

func TestPublishWritesTheClusterIssuersTrustBundle(t *testing.T) {
	requireEnv(t)
	pod := workloadPod(t, "mesh-0")
	req := publishRequest(t, pod, "csi-it-cluster", attributes.IssuerKind, string(request.KindClusterIssuer), attributes.IssuerName, clusterIssuer)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := env.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = env.node.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})
	checkTrustBundle(t, req.TargetPath)
}

func TestPublishIsUnavailableUntilTheIssuerPublishesATrustBundle(t *testing.T) {
	requireEnv(t)
	pod := workloadPod(t, "pending-0")
	req := publishRequest(t, pod, "csi-it-pending", attributes.IssuerName, pendingIssuer)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := env.node.NodePublishVolume(ctx, req)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "Issuer "+workloadNS+"/"+pendingIssuer) {
		t.Fatalf("err = %v, want Unavailable naming the issuer", err)
	}
	if _, err := os.Stat(filepath.Join(env.dataRoot, req.VolumeId)); !os.IsNotExist(err) {
		t.Error("a failed publish left its volume directory behind")
	}

	// The driver's watch picks the bundle up; the kubelet's retry succeeds.
	if err := setTrustBundle(ctx, env.dyn, issuersResource, workloadNS, pendingIssuer, env.signer.TrustBundle()); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := env.node.NodePublishVolume(ctx, req)
		if status.Code(err) == codes.Unavailable {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("publish after the issuer published its trust bundle: %v", err)
	}
	t.Cleanup(func() {
		_, _ = env.node.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})
	checkTrustBundle(t, req.TargetPath)
}

func TestPublishFailsWithTheReasonTheIssuerDenied(t *testing.T) {
	requireEnv(t)
	pod := workloadPod(t, deniedPod)
	req := publishRequest(t, pod, "csi-it-denied")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := env.node.NodePublishVolume(ctx, req)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("err = %v, want PermissionDenied", err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, denialReason+": "+denialText) || !strings.Contains(msg, "Issuer shop/ca") {
		t.Errorf("message %q does not carry the issuer and the denial reason", msg)
	}
	if _, err := os.Stat(filepath.Join(env.dataRoot, req.VolumeId)); !os.IsNotExist(err) {
		t.Error("a denied volume left its directory behind")
	}
	waitRequestsDeleted(t, pod)
}

func TestKubeletCanRegisterTheDriverAndMetricsAreServed(t *testing.T) {
	requireEnv(t)
	conn, err := grpc.NewClient("unix://"+env.regSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	info, err := registerapi.NewRegistrationClient(conn).GetInfo(context.Background(), &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != request.DriverName {
		t.Errorf("GetInfo = %+v", info)
	}
	if _, err := env.node.NodeGetInfo(context.Background(), &csispec.NodeGetInfoRequest{}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(strings.TrimSuffix(env.healthURL, "/healthz") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, metric := range []string{"certmint_driver_csi_call_duration_seconds", "certmint_driver_renewals_total"} {
		if !strings.Contains(string(body), metric) {
			t.Errorf("/metrics lacks %s", metric)
		}
	}
}

// waitRequestsDeleted waits until no request for pod is left: the driver
// deletes finished requests in the background, right after reading them.
func waitRequestsDeleted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := env.admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{LabelSelector: request.LabelPodUID + "=" + string(pod.UID)})
		return err == nil && len(list.Items) == 0, err
	})
	if err != nil {
		t.Errorf("requests for pod %s were not deleted: %v", pod.Name, err)
	}
}

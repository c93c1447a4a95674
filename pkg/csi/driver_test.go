package csi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/csr/csrtest"
)

func dial(t *testing.T, h *harness) csispec.NodeClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+h.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csispec.NewNodeClient(conn)
}

const secretToken = "eyJhbGciOiJSUzI1NiJ9.secret-token-value"

func publishRequest(t *testing.T, volumeID string, extra ...string) *csispec.NodePublishVolumeRequest {
	attrs := map[string]string{
		attributes.PodNameKey:              "web-0",
		attributes.PodNamespaceKey:         "shop",
		attributes.PodUIDKey:               "6b1f7c8e-0d8e-4a43-9f0e-3b1c1f4e9a10",
		attributes.ServiceAccountNameKey:   "web",
		attributes.EphemeralKey:            "true",
		attributes.ServiceAccountTokensKey: `{"":{"token":"` + secretToken + `"}}`,
		attributes.IssuerName:              "ca",
		attributes.DNSNames:                "${POD_NAME}.${POD_NAMESPACE}.svc",
	}
	for i := 0; i < len(extra); i += 2 {
		attrs[extra[i]] = extra[i+1]
	}
	return &csispec.NodePublishVolumeRequest{
		VolumeId:   volumeID,
		TargetPath: filepath.Join(t.TempDir(), "pods", volumeID, "mount"),
		Readonly:   true,
		VolumeCapability: &csispec.VolumeCapability{
			AccessType: &csispec.VolumeCapability_Mount{Mount: &csispec.VolumeCapability_MountVolume{}},
			AccessMode: &csispec.VolumeCapability_AccessMode{Mode: csispec.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: attrs,
	}
}

func TestPublishWritesAVerifiedCertificateAndUnpublishRemovesIt(t *testing.T) {
	h := newHarness(t, nil)
	node := dial(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := publishRequest(t, "csi-0001")
	if _, err := node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	// The kubelet retries calls it lost track of: publishing again is fine.
	if _, err := node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal("second publish:", err)
	}
	// As root the target is a real bind mount; otherwise the files are read
	// from the volume directory the mount would show.
	dir := req.TargetPath
	if os.Geteuid() != 0 {
		dir = filepath.Join(h.dataRoot, "csi-0001")
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "web-0.shop.svc" {
		t.Errorf("DNS names = %v", leaf.DNSNames)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "web-0.shop.svc"}); err != nil {
		t.Errorf("certificate does not verify against ca.crt: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "tls.key"))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("tls.key mode = %v (%v), want 0400 without an fsGroup", fi.Mode().Perm(), err)
	}
	// The driver deletes finished requests in the background.
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		csrs, err := h.client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		return err == nil && len(csrs.Items) == 0, err
	})
	if err != nil {
		t.Errorf("finished CSRs were not deleted: %v", err)
	}

	for range 2 { // idempotent
		if _, err := node.NodeUnpublishVolume(ctx, &csispec.NodeUnpublishVolumeRequest{VolumeId: "csi-0001", TargetPath: req.TargetPath}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{req.TargetPath, filepath.Join(h.dataRoot, "csi-0001")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after unpublish", p)
		}
	}
	logs := h.logs.String()
	if !strings.Contains(logs, attributes.ServiceAccountTokensKey+`"="[redacted]"`) {
		t.Errorf("the request's attributes were not logged redacted; the leak check below proves nothing:\n%s", logs)
	}
	if strings.Contains(logs, secretToken) || strings.Contains(logs, "PRIVATE KEY") {
		t.Errorf("logs leak the ServiceAccount token or a key:\n%s", logs)
	}
}

func TestPublishGivesTheFileGroupFromTheKubeletOrTheAttribute(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's group to another group needs root")
	}
	h := newHarness(t, nil)
	node := dial(t, h)
	ctx := context.Background()

	viaKubelet := publishRequest(t, "csi-0002")
	viaKubelet.VolumeCapability.GetMount().VolumeMountGroup = "3000"
	viaAttribute := publishRequest(t, "csi-0003", attributes.FSGroup, "4000")
	viaAttribute.VolumeCapability.GetMount().VolumeMountGroup = "3000"
	for _, req := range []*csispec.NodePublishVolumeRequest{viaKubelet, viaAttribute} {
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = node.NodeUnpublishVolume(ctx, &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
		})
	}
	checkGroup(t, viaKubelet.TargetPath, 3000, 0o440)
	checkGroup(t, viaAttribute.TargetPath, 4000, 0o440)
}

func TestPublishFailsWithTheIssuersDenialReason(t *testing.T) {
	h := newHarness(t, func(*certificatesv1.CertificateSigningRequest) csrtest.Decision {
		return csrtest.Decision{Deny: true, Reason: "NotAllowed", Message: `DNS name "web-0.shop.svc" is not allowed by Issuer shop/ca`}
	})
	node := dial(t, h)
	req := publishRequest(t, "csi-0004")
	_, err := node.NodePublishVolume(context.Background(), req)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `NotAllowed: DNS name "web-0.shop.svc" is not allowed by Issuer shop/ca`) {
		t.Fatalf("err = %v, want PermissionDenied carrying the denial", err)
	}
	if _, err := os.Stat(filepath.Join(h.dataRoot, "csi-0004")); !os.IsNotExist(err) {
		t.Error("a failed publish left its volume directory behind")
	}
}

func TestPublishIsUnavailableWhileTheIssuerHasNoTrustBundle(t *testing.T) {
	h := newHarness(t, nil)
	node := dial(t, h)
	req := publishRequest(t, "csi-0006", attributes.IssuerName, "gone")
	_, err := node.NodePublishVolume(context.Background(), req)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "Issuer shop/gone") {
		t.Fatalf("err = %v, want Unavailable naming Issuer shop/gone", err)
	}
	if _, err := os.Stat(filepath.Join(h.dataRoot, "csi-0006")); !os.IsNotExist(err) {
		t.Error("a failed publish left its volume directory behind")
	}
}

func TestPublishRejectsWhatThePodSpecMustChange(t *testing.T) {
	h := newHarness(t, nil)
	node := dial(t, h)
	cases := []struct {
		name   string
		modify func(*csispec.NodePublishVolumeRequest)
		want   string
	}{
		{"a writable volume", func(r *csispec.NodePublishVolumeRequest) { r.Readonly = false }, "set readOnly: true"},
		{"a persistent volume", func(r *csispec.NodePublishVolumeRequest) { r.VolumeContext[attributes.EphemeralKey] = "false" }, "only inline ephemeral volumes"},
		{"a block volume", func(r *csispec.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csispec.VolumeCapability_Block{Block: &csispec.VolumeCapability_BlockVolume{}}
		}, "file systems"},
		{"a mistyped attribute", func(r *csispec.NodePublishVolumeRequest) { r.VolumeContext["csi.certmint.io/dns-name"] = "x" },
			`volumeAttributes["csi.certmint.io/dns-name"]: unknown attribute`},
		{"an invalid attribute value", func(r *csispec.NodePublishVolumeRequest) { r.VolumeContext[attributes.Duration] = "1d" },
			`volumeAttributes["csi.certmint.io/duration"]: must be a duration`},
		{"a volume ID that is a path", func(r *csispec.NodePublishVolumeRequest) { r.VolumeId = "../x" }, "single path component"},
		{"a mount group that is not a number", func(r *csispec.NodePublishVolumeRequest) { r.VolumeCapability.GetMount().VolumeMountGroup = "wheel" }, "not a group ID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := publishRequest(t, "csi-0005")
			c.modify(req)
			_, err := node.NodePublishVolume(context.Background(), req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want InvalidArgument with %q", err, c.want)
			}
		})
	}
}

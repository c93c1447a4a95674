package driver_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/csr/csrtest"
)

// publishWith publishes a volume of a new pod named name through client,
// retrying while the driver has not seen the issuer yet, and unpublishes
// it when the test ends.
func publishWith(t *testing.T, client csispec.NodeClient, node, name string, attrs ...string) *csispec.NodePublishVolumeRequest {
	t.Helper()
	pod := workloadPodOn(t, node, name)
	req := publishRequest(t, pod, "csi-it-"+name, attrs...)
	if err := os.MkdirAll(filepath.Dir(req.TargetPath), 0o750); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := client.NodePublishVolume(ctx, req)
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("publishing %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = client.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})
	return req
}

// readLeaf returns the volume's leaf certificate as the pod reads it.
func readLeaf(t testing.TB, target string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(target, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s/tls.crt holds no PEM block", target)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func readString(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// askReissue sets the issuer's status.reissueBefore as the controller
// does, to a whole second (the API's precision) after every request made
// so far, and returns it.
func askReissue(t *testing.T, gvr schema.GroupVersionResource, namespace, name string) time.Time {
	t.Helper()
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	cut := time.Now().Truncate(time.Second)
	ctx := context.Background()
	res := env.dyn.Resource(gvr).Namespace(namespace)
	obj, err := res.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(obj.Object, cut.UTC().Format(time.RFC3339), "status", "reissueBefore"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return cut
}

func TestANewTrustBundleReachesEveryVolumeOfTheIssuerAtOnce(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	if err := createIssuer(ctx, env.dyn, workloadNS, "rotating", env.signer.TrustBundle()); err != nil {
		t.Fatal(err)
	}
	var reqs []*csispec.NodePublishVolumeRequest
	for _, name := range []string{"rotate-0", "rotate-1", "rotate-2"} {
		reqs = append(reqs, publishWith(t, env.node, nodeName, name, attributes.IssuerName, "rotating",
			attributes.PKCS12Enable, "true", attributes.PKCS12Password, "p12"))
	}
	other := publishWith(t, env.node, nodeName, "rotate-other")
	before := map[string]string{}
	for _, r := range reqs {
		before[r.TargetPath] = readString(t, filepath.Join(r.TargetPath, "tls.key")) + readString(t, filepath.Join(r.TargetPath, "tls.crt"))
	}

	// A CA rotation's first step: the issuer publishes the old and the new
	// CA together.
	next, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	bundle := env.signer.TrustBundle() + next.TrustBundle()
	start := time.Now()
	if err := setTrustBundle(ctx, env.dyn, issuersResource, workloadNS, "rotating", bundle); err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		caFile := filepath.Join(r.TargetPath, "ca.crt")
		// Generous: what is checked is that the bundle arrives by the
		// watch, not how fast; the log below says how fast it was.
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			data, err := os.ReadFile(caFile)
			return err == nil && string(data) == bundle, nil
		})
		if err != nil {
			t.Fatalf("waiting a minute for %s to hold the old and the new CA: it holds %q", caFile, readString(t, caFile))
		}
	}
	t.Logf("every volume had the new trust bundle %v after the issuer's status changed", time.Since(start).Round(time.Millisecond))

	for _, r := range reqs {
		if got := readString(t, filepath.Join(r.TargetPath, "tls.key")) + readString(t, filepath.Join(r.TargetPath, "tls.crt")); got != before[r.TargetPath] {
			t.Errorf("%s: the key or certificate changed with the trust bundle", r.TargetPath)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM([]byte(readString(t, filepath.Join(r.TargetPath, "ca.crt"))))
		if _, err := readLeaf(t, r.TargetPath).Verify(x509.VerifyOptions{Roots: roots}); err != nil {
			t.Errorf("%s: the certificate does not verify against the new ca.crt: %v", r.TargetPath, err)
		}
	}
	checkTrustBundle(t, other.TargetPath)
}

func TestReissueBeforeHasOlderCertificatesReissuedWithinTheSpread(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	if err := createIssuer(ctx, env.dyn, workloadNS, "reissuing", env.signer.TrustBundle()); err != nil {
		t.Fatal(err)
	}
	var reqs []*csispec.NodePublishVolumeRequest
	serials := map[string]string{}
	for _, name := range []string{"reissue-0", "reissue-1", "reissue-2", "reissue-3"} {
		r := publishWith(t, env.node, nodeName, name, attributes.IssuerName, "reissuing")
		reqs = append(reqs, r)
		serials[r.TargetPath] = readLeaf(t, r.TargetPath).SerialNumber.String()
	}

	cut := askReissue(t, issuersResource, workloadNS, "reissuing")
	start := time.Now()
	// Published after the cut: its request is newer, it stays.
	newer := publishWith(t, env.node, nodeName, "reissue-newer", attributes.IssuerName, "reissuing")
	newerSerial := readLeaf(t, newer.TargetPath).SerialNumber.String()

	var last time.Duration
	for _, r := range reqs {
		// That re-issues fall within the spread is the scheduler's unit
		// tests' to show, on a fake clock; here the wait is generous, and
		// the log says how long it took.
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, reissueSpread+2*time.Minute, true, func(context.Context) (bool, error) {
			return readLeaf(t, r.TargetPath).SerialNumber.String() != serials[r.TargetPath], nil
		})
		if err != nil {
			t.Fatalf("waiting %v for %s to be re-issued after reissueBefore %v: it was not", reissueSpread+2*time.Minute, r.TargetPath, cut)
		}
		if d := time.Since(start); d > last {
			last = d
		}
	}
	t.Logf("%d volumes re-issued, the last %v after reissueBefore was set (spread %v)", len(reqs), last.Round(time.Millisecond), reissueSpread)

	// Each was re-issued once: the new requests are not older than the cut.
	renewed := map[string]string{}
	for _, r := range reqs {
		renewed[r.TargetPath] = readLeaf(t, r.TargetPath).SerialNumber.String()
	}
	time.Sleep(reissueSpread + time.Second)
	for _, r := range reqs {
		if got := readLeaf(t, r.TargetPath).SerialNumber.String(); got != renewed[r.TargetPath] {
			t.Errorf("%s was re-issued again", r.TargetPath)
		}
	}
	if got := readLeaf(t, newer.TargetPath).SerialNumber.String(); got != newerSerial {
		t.Error("a certificate requested after reissueBefore was re-issued")
	}
}

func TestAFailedRenewalRaisesAnEventOnThePodAndKeepsItsFiles(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	if err := createIssuer(ctx, env.dyn, workloadNS, "refusing", env.signer.TrustBundle()); err != nil {
		t.Fatal(err)
	}
	r := publishWith(t, env.node, nodeName, "renew-fail-0", attributes.IssuerName, "refusing")
	pod, err := env.admin.CoreV1().Pods(workloadNS).Get(ctx, "renew-fail-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	files := readString(t, filepath.Join(r.TargetPath, "tls.key")) + readString(t, filepath.Join(r.TargetPath, "tls.crt"))

	env.decideFor(t, pod.Name, func(*certificatesv1.CertificateSigningRequest) csrtest.Decision {
		return csrtest.Decision{Deny: true, Reason: "Suspended", Message: "issuance for shop is suspended"}
	})
	askReissue(t, issuersResource, workloadNS, "refusing")

	var event *corev1.Event
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := env.admin.CoreV1().Events(workloadNS).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod.Name).String()})
		if err != nil {
			return false, err
		}
		for i := range list.Items {
			if list.Items[i].Reason == "CertificateRenewalFailed" {
				event = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no CertificateRenewalFailed event on the pod: %v", err)
	}
	if event.Type != corev1.EventTypeWarning || event.InvolvedObject.UID != pod.UID || event.InvolvedObject.Kind != "Pod" ||
		!strings.Contains(event.Message, "issuance for shop is suspended") || event.Source.Host != nodeName {
		t.Errorf("event %+v", event)
	}
	if got := readString(t, filepath.Join(r.TargetPath, "tls.key")) + readString(t, filepath.Join(r.TargetPath, "tls.crt")); got != files {
		t.Error("a failed renewal changed the volume's files")
	}
}

func TestAVolumeWhosePodDirectoryIsRemovedIsCollectedWhileTheDriverRuns(t *testing.T) {
	requireEnv(t)
	r := publishWith(t, env.node, nodeName, "gc-0")
	podDir := filepath.Dir(filepath.Dir(filepath.Dir(r.TargetPath)))
	// The pod is torn down without NodeUnpublishVolume, e.g. by a kubelet
	// that was restarted meanwhile.
	if err := syscall.Unmount(r.TargetPath, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(podDir); err != nil {
		t.Fatal(err)
	}
	volumeDir := filepath.Join(env.dataRoot, r.VolumeId)
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, gcInterval+10*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(volumeDir)
		return os.IsNotExist(err), nil
	})
	if err != nil {
		t.Fatalf("the volume's directory is still there: %v", err)
	}
	if _, _, mounted := mountOf(t, volumeDir); mounted {
		t.Error("the volume's tmpfs is still mounted")
	}
}

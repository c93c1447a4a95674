package driver_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/certmint/certmint/pkg/volumestatus"
)

// driverGet GETs path from the driver's metrics address (its health
// address too, in this environment).
func driverGet(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(strings.TrimSuffix(env.healthURL, "/healthz") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// scrapedLine returns the line of /metrics for the series named, labels
// and all; empty if the driver does not report it.
func scrapedLine(t *testing.T, series string) string {
	t.Helper()
	_, body := driverGet(t, "/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return line
		}
	}
	return ""
}

// TestTheDriverReportsEachVolumeUntilItIsUnpublished publishes a volume
// through the driver's CSI socket, as the kubelet does, and reads what the
// driver serves of it: its expiry and renewal series on /metrics and its
// entry on /volumes, both for the certificate the volume's files hold, then
// unpublishes it, after which it has neither.
func TestTheDriverReportsEachVolumeUntilItIsUnpublished(t *testing.T) {
	requireEnv(t)
	pod := workloadPod(t, "status-0")
	req := publishRequest(t, pod, "csi-it-status")
	// The kubelet's layout, which names the volume.
	req.TargetPath = filepath.Join(t.TempDir(), "pods", string(pod.UID), "volumes", "kubernetes.io~csi", "tls", "mount")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := env.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	unpublished := false
	t.Cleanup(func() {
		if !unpublished {
			_, _ = env.node.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
		}
	})
	certPEM, err := os.ReadFile(filepath.Join(req.TargetPath, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("tls.crt holds no PEM: %q", certPEM)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	series := fmt.Sprintf("certmint_driver_certificate_not_after_timestamp_seconds{issuer=%q,namespace=%q,pod=%q,volume=%q}",
		"issuers.certmint.io/"+workloadNS+".ca", workloadNS, pod.Name, "tls")
	if line, want := scrapedLine(t, series), fmt.Sprintf("%s %g", series, float64(leaf.NotAfter.Unix())); line != want {
		t.Errorf("/metrics has %q, want %q", line, want)
	}

	code, body := driverGet(t, "/volumes?namespace="+workloadNS+"&pod="+pod.Name)
	if code != http.StatusOK {
		t.Fatalf("GET /volumes = %d %s", code, body)
	}
	var list volumestatus.List
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if list.Node != nodeName || len(list.Volumes) != 1 {
		t.Fatalf("/volumes = %s, want node %s and the volume of %s", body, nodeName, pod.Name)
	}
	v := list.Volumes[0]
	switch {
	case v.PodUID != string(pod.UID) || v.Volume.ID != req.VolumeId || v.Volume.Name != "tls":
		t.Errorf("volume %+v of pod UID %s, want %s named tls of %s", v.Volume, v.PodUID, req.VolumeId, pod.UID)
	case v.Issuer == nil || *v.Issuer != (volumestatus.Issuer{Kind: "Issuer", Namespace: workloadNS, Name: "ca"}):
		t.Errorf("issuer %+v, want Issuer %s/ca", v.Issuer, workloadNS)
	case v.Certificate == nil || v.Certificate.SerialNumber != fmt.Sprintf("%x", leaf.SerialNumber) || !v.Certificate.NotAfter.Equal(leaf.NotAfter):
		t.Errorf("certificate %+v, want serial %x valid until %v, as tls.crt", v.Certificate, leaf.SerialNumber, leaf.NotAfter)
	case v.NextRenewalAttempt == nil || v.RenewalTime == nil || v.NextRenewalAttempt.After(*v.RenewalTime):
		t.Errorf("renewal due %v, next attempt %v; want an attempt no later than due", v.RenewalTime, v.NextRenewalAttempt)
	}

	if _, err := env.node.NodeUnpublishVolume(ctx, &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
		t.Fatal(err)
	}
	unpublished = true
	if line := scrapedLine(t, series); line != "" {
		t.Errorf("/metrics still has %q after the unpublish", line)
	}
	if _, body := driverGet(t, "/volumes?pod="+pod.Name); !strings.Contains(body, `"volumes": []`) {
		t.Errorf("/volumes after the unpublish = %s", body)
	}
}

package stack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/test/stack"
)

// kubeletCall is a NodePublishVolume call whose kubelet-supplied keys the
// test sets itself, as a kubelet with bad data would send them.
type kubeletCall struct {
	stack.Volume
	override map[string]string
}

func (k kubeletCall) PublishRequest(attrs map[string]string) *csispec.NodePublishVolumeRequest {
	req := k.Volume.PublishRequest(attrs)
	for key, v := range k.override {
		req.VolumeContext[key] = v
	}
	return req
}

// TestBadInputIsRefusedAtTheDriver calls the real driver with what a pod
// spec (or a kubelet) could put in a volume's context, and checks that each
// is refused at once with InvalidArgument naming what to fix, and that
// nothing is issued for it.
func TestBadInputIsRefusedAtTheDriver(t *testing.T) {
	requireEnv(t)
	cases := []struct {
		name     string
		attrs    map[string]string
		kubelet  map[string]string
		wantText []string
	}{
		{name: "a typo in the prefix", attrs: map[string]string{"csi.certmnt.io/duration": "1h"},
			wantText: []string{`volumeAttributes["csi.certmnt.io/duration"]`, `did you mean "csi.certmint.io/duration"?`}},
		{name: "an attribute without the prefix", attrs: map[string]string{"duration": "1h"},
			wantText: []string{`volumeAttributes["duration"]`, `did you mean "csi.certmint.io/duration"?`}},
		{name: "another driver's attribute", attrs: map[string]string{"csi.cert-manager.io/uri-sans": "spiffe://cluster.local/x"},
			wantText: []string{`did you mean "csi.certmint.io/uri-sans"?`}},
		{name: "a pod UID no API server gives", kubelet: map[string]string{attributes.PodUIDKey: "-1"},
			wantText: []string{`pod UID "-1"`}},
		{name: "a pod name with a slash", kubelet: map[string]string{attributes.PodNameKey: "web/0"},
			wantText: []string{`pod name "web/0"`}},
		{name: "an organization of 70,000 characters", attrs: map[string]string{attributes.Organizations: strings.Repeat("o", 70000)},
			wantText: []string{attributes.Organizations, "at most 64"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			attrs := map[string]string{attributes.IssuerName: caIssuer, attributes.IssuerKind: "ClusterIssuer",
				attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc"}
			for k, v := range c.attrs {
				attrs[k] = v
			}
			v := kubeletCall{Volume: newVolume(t, "bad-input"), override: c.kubelet}
			start := time.Now()
			_, err := publish(t, v, attrs)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("publish = %v, want InvalidArgument", err)
			}
			for _, want := range c.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// At once, from the driver: not after the kubelet's deadline.
			if elapsed := time.Since(start); elapsed > 30*time.Second {
				t.Errorf("refused after %s; bad input must be refused before any request is made", elapsed)
			}
			if n := len(err.Error()); n > 2000 {
				t.Errorf("the error is %d bytes long; values must be quoted in part", n)
			}
			csrs, lerr := env.Admin.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{LabelSelector: "certmint.io/pod-uid=" + string(v.Pod.UID)})
			if lerr != nil || len(csrs.Items) != 0 {
				t.Errorf("%d requests for the refused volume (%v), want none", len(csrs.Items), lerr)
			}
		})
	}

	t.Run("an Issuer that does not exist, where a ClusterIssuer of its name does", func(t *testing.T) {
		v := newVolume(t, "issuer-kind")
		_, err := publish(t, v, map[string]string{attributes.IssuerName: caIssuer, attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc"})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "a ClusterIssuer "+caIssuer+" exists: set csi.certmint.io/issuer-kind: ClusterIssuer") {
			t.Fatalf("publish = %v, want Unavailable pointing at the ClusterIssuer", err)
		}
	})
}

// TestAVolumeTheDriverCannotRenewIsReported publishes a volume, stops the
// driver, leaves the volume's state unreadable to the driver that comes
// next (stored attributes a newer driver refuses), and checks that the new
// driver says so: on the pod, in a metric and in its readiness.
func TestAVolumeTheDriverCannotRenewIsReported(t *testing.T) {
	requireEnv(t)
	ctx := t.Context()
	v := newVolume(t, "stranded")
	req, err := publish(t, v, map[string]string{attributes.IssuerName: caIssuer, attributes.IssuerKind: "ClusterIssuer",
		attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc"})
	if err != nil {
		t.Fatal(err)
	}
	env.Driver.Stop()
	statePath := filepath.Join(env.Driver.Dir, "state", req.VolumeId+".json")
	data, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	st["attributes"].(map[string]any)["csi.certmnt.io/duration"] = "1h"
	if data, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := env.StartDriver(ctx, "driver-restarted.log"); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get(env.Driver.ServerURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), req.VolumeId) {
		t.Errorf("/readyz = %d %q, want 503 naming %s", resp.StatusCode, body, req.VolumeId)
	}
	if n, err := env.Driver.Metric("certmint_driver_stranded_volumes"); err != nil || n != 1 {
		t.Errorf("certmint_driver_stranded_volumes = %v (%v), want 1", n, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		events, err := env.Admin.CoreV1().Events(workloadNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(v.Pod.UID)})
		if err != nil {
			return false, err
		}
		for _, ev := range events.Items {
			if ev.Reason == manager.ReasonVolumeStranded && strings.Contains(ev.Message, "csi.certmnt.io/duration") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("no %s Event on pod %s naming the cause: %v", manager.ReasonVolumeStranded, v.Pod.Name, err)
	}

	// Unpublishing it clears the report.
	if _, err := env.Driver.Node.NodeUnpublishVolume(ctx, &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
		t.Fatal(err)
	}
	if err := env.Driver.WaitHTTP(ctx, env.Driver.ServerURL+"/readyz", time.Minute); err != nil {
		t.Error(fmt.Errorf("the driver stayed not ready after the volume went: %w", err))
	}
}

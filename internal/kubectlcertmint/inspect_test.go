package kubectlcertmint

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	restclient "k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/volumestatus"
)

// proxyAnswer is what the fake API server's pod proxy answers.
type proxyAnswer struct {
	body []byte
	err  error
}

func (p proxyAnswer) DoRaw(context.Context) ([]byte, error) { return p.body, p.err }

func (p proxyAnswer) Stream(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(p.body)), p.err
}

// serveVolumes makes the fake API server proxy GET /volumes to a driver
// that holds list, and records each request proxied.
func (f *fakes) serveVolumes(t *testing.T, list volumestatus.List) *[]clienttesting.ProxyGetAction {
	t.Helper()
	body, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	var seen []clienttesting.ProxyGetAction
	f.kube.AddProxyReactor("pods", func(a clienttesting.Action) (bool, restclient.ResponseWrapper, error) {
		seen = append(seen, a.(clienttesting.ProxyGetAction))
		return true, proxyAnswer{body: body}, nil
	})
	return &seen
}

func certmintVolume(name string, attrs map[string]string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: request.DriverName, ReadOnly: new(true), VolumeAttributes: attrs,
	}}}
}

// webPod is pod shop/web-0 on node-a with a volume from ClusterIssuer
// mesh, tls, one from Issuer shop/ca, client, and one of another kind.
func webPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", UID: "uid-web-0"},
		Spec: corev1.PodSpec{
			NodeName: "node-a",
			Volumes: []corev1.Volume{
				certmintVolume("tls", map[string]string{attributes.IssuerName: "mesh", attributes.IssuerKind: "ClusterIssuer"}),
				certmintVolume("client", map[string]string{attributes.IssuerName: "ca"}),
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func driverPodFixture(name, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "certmint", Name: name, Labels: map[string]string{"app.kubernetes.io/name": "certmint-driver"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name:  "csi-driver",
			Ports: []corev1.ContainerPort{{Name: "healthz", ContainerPort: 9808}, {Name: "metrics", ContainerPort: 9809}},
		}}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// drivers are the pods in the driver's namespace: the driver on node-a,
// one of its predecessors going and another that failed to start, the
// driver on node-b, and a pod of another kind on node-a.
func drivers() []runtime.Object {
	going := driverPodFixture("certmint-driver-old", "node-a", corev1.PodRunning)
	going.DeletionTimestamp = new(metav1.NewTime(now))
	going.Finalizers = []string{"test"}
	controller := driverPodFixture("certmint-controller", "node-a", corev1.PodRunning)
	controller.Labels = map[string]string{"app.kubernetes.io/name": "certmint-controller"}
	return []runtime.Object{
		going, driverPodFixture("certmint-driver-failed", "node-a", corev1.PodFailed),
		driverPodFixture("certmint-driver-a", "node-a", corev1.PodRunning), driverPodFixture("certmint-driver-b", "node-b", corev1.PodRunning),
		controller,
	}
}

func at(d time.Duration) *time.Time {
	t := now.Add(d)
	return &t
}

// heldTLS is what the driver on node-a holds of web-0's volume tls.
func heldTLS(uid string) volumestatus.Volume {
	return volumestatus.Volume{
		Namespace: "shop", Pod: "web-0", PodUID: uid,
		Volume: volumestatus.VolumeRef{ID: "csi-1", Name: "tls", TargetPath: "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~csi/tls/mount"},
		Issuer: &volumestatus.Issuer{Kind: "ClusterIssuer", Name: "mesh"},
		Certificate: &volumestatus.Certificate{
			Subject:  "CN=web-0.shop.svc",
			DNSNames: []string{"web-0.shop.svc"}, URIs: []string{"spiffe://cluster.local/ns/shop/sa/web"},
			SerialNumber: "5f3a0c", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(23 * time.Hour),
		},
		RenewalTime: at(15 * time.Hour), NextRenewalAttempt: at(14 * time.Hour),
	}
}

func TestInspectShowsEachVolumeAsThePodsNodesDriverHoldsIt(t *testing.T) {
	f := newFakes(t, append(drivers(), webPod()))
	client := volumestatus.Volume{
		Namespace: "shop", Pod: "web-0", PodUID: "uid-web-0",
		Volume: volumestatus.VolumeRef{ID: "csi-2", Name: "client"},
		Issuer: &volumestatus.Issuer{Kind: "Issuer", Namespace: "shop", Name: "ca"},
		Certificate: &volumestatus.Certificate{
			Subject: "CN=web-0", SerialNumber: "01", NotBefore: now.Add(-20 * time.Hour), NotAfter: now.Add(4 * time.Hour),
		},
		RenewalTime: at(-4 * time.Hour), NextRenewalAttempt: at(5 * time.Minute),
		LastRenewalError: &volumestatus.RenewalError{Message: "Issuer shop/ca is not Ready", Time: now.Add(-5 * time.Minute), FailuresInARow: 3},
	}
	// The driver still holds the volume of an earlier pod of that name.
	earlier := heldTLS("uid-earlier")
	earlier.Certificate.SerialNumber = "0123"
	proxied := f.serveVolumes(t, volumestatus.List{Node: "node-a", Volumes: []volumestatus.Volume{client, earlier, heldTLS("uid-web-0")}})

	code, out, errOut := f.run(t, "inspect", "pod", "web-0", "-n", "shop")
	want := `Pod shop/web-0 (uid-web-0) on node node-a, driver pod certmint/certmint-driver-a

VOLUME  ISSUER              SUBJECT            SANS                                                          SERIAL  NOT AFTER             NEXT RENEWAL          STATUS
tls     ClusterIssuer mesh  CN=web-0.shop.svc  DNS:web-0.shop.svc,URI:spiffe://cluster.local/ns/shop/sa/web  5f3a0c  2030-01-03T02:04:05Z  2030-01-02T17:04:05Z  OK
client  Issuer shop/ca      CN=web-0           -                                                             01      2030-01-02T07:04:05Z  2030-01-02T03:09:05Z  renewal failed (3 in a row, last at 2030-01-02T02:59:05Z): Issuer shop/ca is not Ready
`
	if code != ExitUnhealthy || out != want || errOut != "" {
		t.Errorf("exit %d, stdout\n%s\nstderr %q; want %d and\n%s", code, out, errOut, ExitUnhealthy, want)
	}
	if len(*proxied) != 1 {
		t.Fatalf("%d requests proxied, want 1", len(*proxied))
	}
	p := (*proxied)[0]
	if p.GetNamespace() != "certmint" || p.GetName() != "certmint-driver-a" || p.GetPort() != "9809" || p.GetPath() != "volumes" ||
		!maps.Equal(p.GetParams(), map[string]string{"namespace": "shop", "pod": "web-0"}) {
		t.Errorf("proxied GET %s/%s:%s/%s?%v; want certmint/certmint-driver-a:9809/volumes for shop/web-0",
			p.GetNamespace(), p.GetName(), p.GetPort(), p.GetPath(), p.GetParams())
	}
}

func TestInspectOfAWellPodExits0WithEveryFieldTheDriverGave(t *testing.T) {
	pod := webPod()
	pod.Spec.Volumes = pod.Spec.Volumes[:1]
	f := newFakes(t, append(drivers(), pod))
	held := heldTLS("uid-web-0")
	f.serveVolumes(t, volumestatus.List{Node: "node-a", Volumes: []volumestatus.Volume{held}})
	code, out, errOut := f.run(t, "inspect", "pod", "web-0", "-n", "shop", "-o", "json")
	if code != ExitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q; want 0", code, errOut)
	}
	var got InspectReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if len(got.Volumes) != 1 {
		t.Fatalf("volumes %+v, want tls", got.Volumes)
	}
	// What the plugin decodes of the driver's answer is what the driver
	// said, field for field.
	v := got.Volumes[0]
	c, hc := v.Certificate, held.Certificate
	if v.Name != "tls" || *v.Issuer != (Issuer{Kind: "ClusterIssuer", Name: "mesh"}) || c.Subject != hc.Subject ||
		strings.Join(c.DNSNames, ",") != strings.Join(hc.DNSNames, ",") || strings.Join(c.URIs, ",") != strings.Join(hc.URIs, ",") ||
		c.SerialNumber != hc.SerialNumber || !c.NotBefore.Equal(hc.NotBefore) || !c.NotAfter.Equal(hc.NotAfter) ||
		!v.RenewalTime.Equal(*held.RenewalTime) || !v.NextRenewalAttempt.Equal(*held.NextRenewalAttempt) || v.Problem != "" {
		t.Errorf("volume %+v, certificate %+v; want what the driver holds: %+v, %+v", v, c, held, hc)
	}
	if got.Node != "node-a" || got.DriverPod != "certmint/certmint-driver-a" || got.PodUID != "uid-web-0" {
		t.Errorf("report %+v; want node-a, its driver pod, the pod's UID", got)
	}
}

func TestInspectDecodesEveryFieldOfTheDriversVolumes(t *testing.T) {
	driver := volumestatus.Volume{
		Namespace: "shop", Pod: "web-0", PodUID: "uid-web-0",
		Volume: volumestatus.VolumeRef{ID: "csi-1", Name: "tls", TargetPath: "/target"},
		Issuer: &volumestatus.Issuer{Kind: "Issuer", Namespace: "shop", Name: "ca"},
		Certificate: &volumestatus.Certificate{
			Subject: "CN=a", DNSNames: []string{"a"}, IPAddresses: []string{"10.0.0.1"}, URIs: []string{"spiffe://x/y"},
			EmailAddresses: []string{"a@example.com"}, SerialNumber: "ff", NotBefore: now, NotAfter: now.Add(time.Hour),
		},
		RenewalTime: at(time.Minute), NextRenewalAttempt: at(time.Second), Renewing: true,
		LastRenewalError: &volumestatus.RenewalError{Message: "m", Time: now, FailuresInARow: 2},
		Stranded:         "state unreadable",
	}
	body, err := json.Marshal(volumestatus.List{Node: "node-a", Volumes: []volumestatus.Volume{driver}})
	if err != nil {
		t.Fatal(err)
	}
	var decoded driverVolumes
	if err := json.Unmarshal(body, &decoded); err != nil {
		t.Fatal(err)
	}
	// Encoded again in the driver's shape, nothing may be lost: the
	// plugin's types have every field of the driver's but the target path,
	// which it does not show.
	d := decoded.Volumes[0]
	back := volumestatus.Volume{
		Namespace: d.Namespace, Pod: d.Pod, PodUID: d.PodUID,
		Volume:      volumestatus.VolumeRef{ID: d.Volume.ID, Name: d.Volume.Name, TargetPath: driver.Volume.TargetPath},
		Issuer:      &volumestatus.Issuer{Kind: d.Issuer.Kind, Namespace: d.Issuer.Namespace, Name: d.Issuer.Name},
		Certificate: (*volumestatus.Certificate)(d.Certificate),
		RenewalTime: d.RenewalTime, NextRenewalAttempt: d.NextRenewalAttempt, Renewing: d.Renewing,
		LastRenewalError: (*volumestatus.RenewalError)(d.LastRenewalError), Stranded: d.Stranded,
	}
	again, err := json.Marshal(volumestatus.List{Node: decoded.Node, Volumes: []volumestatus.Volume{back}})
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(body) {
		t.Errorf("decoded and encoded again:\n%s\nthe driver sent:\n%s", again, body)
	}
}

func TestInspectReportsAVolumeTheDriverDoesNotHoldAndExits2(t *testing.T) {
	pod := webPod()
	pod.Spec.Volumes = pod.Spec.Volumes[:1]
	f := newFakes(t, append(drivers(), pod))
	f.serveVolumes(t, volumestatus.List{Node: "node-a", Volumes: []volumestatus.Volume{heldTLS("uid-earlier")}})
	code, out, _ := f.run(t, "inspect", "pod", "web-0", "-n", "shop")
	if code != ExitUnhealthy || !strings.Contains(out, "tls     ClusterIssuer mesh  -        -     -       -          -             the driver on the pod's node holds no such volume") {
		t.Errorf("exit %d, stdout\n%s\nwant %d and the volume reported as not held, from the pod's spec", code, out, ExitUnhealthy)
	}
}

func TestInspectOfAPodNotScheduledAsksNoDriver(t *testing.T) {
	pod := webPod()
	pod.Spec.NodeName = ""
	pod.Status.Phase = corev1.PodPending
	f := newFakes(t, append(drivers(), pod))
	proxied := f.serveVolumes(t, volumestatus.List{})
	code, out, _ := f.run(t, "inspect", "pod", "web-0", "-n", "shop")
	if code != ExitUnhealthy || !strings.Contains(out, "not scheduled to a node") || len(*proxied) != 0 {
		t.Errorf("exit %d, %d requests proxied, stdout\n%s\nwant %d, none proxied, the pod reported not scheduled", code, len(*proxied), out, ExitUnhealthy)
	}
}

func TestInspectExits1WhenItCannotAsk(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods/proxy"}, "certmint-driver-a", nil)
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
		proxy   error
		body    string
		args    []string
		want    string
	}{
		{name: "a pod that does not exist", objects: drivers(), args: []string{"-n", "shop"}, want: `pods "web-0" not found`},
		{name: "a pod without a certmint volume", objects: append(drivers(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0"}}),
			args: []string{"-n", "shop"}, want: "pod shop/web-0 has no csi.certmint.io volume"},
		{name: "no driver running on the pod's node", objects: []runtime.Object{webPod(), driverPodFixture("certmint-driver-b", "node-b", corev1.PodRunning)},
			args: []string{"-n", "shop"}, want: "no running certmint driver pod (app.kubernetes.io/name=certmint-driver) on node node-a in namespace certmint"},
		{name: "the driver in another namespace than --certmint-namespace", objects: append(drivers(), webPod()),
			args: []string{"-n", "shop", "--certmint-namespace", "kube-system"}, want: "on node node-a in namespace kube-system"},
		{name: "the user may not use the pod proxy", objects: append(drivers(), webPod()), proxy: forbidden,
			args: []string{"-n", "shop"}, want: "needs get on pods/proxy in namespace certmint"},
		{name: "a driver that serves no /volumes", objects: append(drivers(), webPod()), proxy: apierrors.NewNotFound(schema.GroupResource{Resource: "pods/proxy"}, ""),
			args: []string{"-n", "shop"}, want: "driver pod certmint/certmint-driver-a serves no /volumes: is it older than the plugin?"},
		{name: "a driver that answers something else", objects: append(drivers(), webPod()), proxy: nil, body: "<html>",
			args: []string{"-n", "shop"}, want: "reading /volumes of driver pod certmint/certmint-driver-a: invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(t, tc.objects)
			body := cmp.Or(tc.body, `{"node":"node-a","volumes":[]}`)
			f.kube.AddProxyReactor("pods", func(clienttesting.Action) (bool, restclient.ResponseWrapper, error) {
				return true, proxyAnswer{body: []byte(body), err: tc.proxy}, nil
			})
			code, out, errOut := f.run(t, append([]string{"inspect", "pod", "web-0"}, tc.args...)...)
			if code != ExitError || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, nothing, and an error with %q", code, out, errOut, ExitError, tc.want)
			}
		})
	}
}

func TestCertmintVolumesNameTheIssuerAsTheDriverReadsIt(t *testing.T) {
	pod := webPod()
	pod.UID = types.UID("x")
	got := certmintVolumes(pod)
	want := []podVolume{
		{name: "tls", issuer: request.IssuerRef{Kind: request.KindClusterIssuer, Name: "mesh"}},
		{name: "client", issuer: request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("certmintVolumes = %+v, want %+v", got, want)
	}
}

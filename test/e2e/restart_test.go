package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

// The restart test's pod: its two containers call each other over mutual
// TLS through the loopback every 200ms, each with the same volume at /tls,
// so every call reads and verifies that volume's files twice. A second
// volume at /tls-reuse asks to keep its key across renewals.
const (
	restartPodName = "restart"
	restartMount   = "/tls"
	reuseMount     = "/tls-reuse"
)

// TestRenewalAfterDriverRestart checks that a driver pod deleted and
// recreated by its DaemonSet takes over the renewals of the volumes on its
// node: each volume of a running pod, due for renewal 30s after issue, gets
// a new certificate from a request the new driver pod made (the API server
// stamps the requesting pod on it), in the same files under the same mount;
// the chain verifies to the issuer's root; the key is new unless the volume
// asks to reuse it; and the pod, reading and verifying its files every
// 200ms, never finds them missing or invalid.
func TestRenewalAfterDriverRestart(t *testing.T) {
	f := framework.New(t, testCluster)
	sys := installCertmint(t, f)
	root, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, caIssuer)
	if err != nil {
		t.Fatal(err)
	}
	node := testCluster.Nodes[0].Name
	pod, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), restartPod(f.Namespace, node), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	requests := watchRequests(t, f, pod)
	f.WaitForPodRunning(restartPodName, podTimeout)

	mounts := []string{restartMount, reuseMount}
	before := map[string]volumeFiles{}
	for _, m := range mounts {
		before[m] = readVolume(t, f, m, root)
	}
	listings := map[string]string{}
	for _, m := range mounts {
		listings[m] = listFiles(t, f, m)
	}

	// The first certificates are due 30s after issue; the driver pod goes
	// seconds after the pod runs, so each renewal falls to the new driver
	// pod: scheduled when it resumes the volume, or run at once by the
	// resume if the new pod took longer than that to start.
	oldDriver := driverPodOn(t, sys, node)
	restartStart := time.Now()
	if err := sys.Client.CoreV1().Pods(deploy.Namespace).Delete(t.Context(), oldDriver.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	newDriver := waitNewDriverPod(t, sys, node, oldDriver.UID)
	newDriverReady := time.Now()
	t.Logf("driver pod %s replaced by %s, Ready %s after the delete", oldDriver.Name, newDriver.Name, time.Since(restartStart).Round(100*time.Millisecond))

	after := map[string]volumeFiles{}
	for _, m := range mounts {
		f.WaitFor("a renewed certificate in "+m, rotationTimeout, func(context.Context) (bool, string, error) {
			requests.drain()
			v, err := tryReadVolume(f, m, root)
			if err != nil {
				return false, err.Error(), nil
			}
			after[m] = v
			return v.serial() != before[m].serial(), "serial " + v.serial() + ", the first one", nil
		})
	}
	t.Logf("both volumes renewed %s after the driver pod was deleted", time.Since(restartStart).Round(100*time.Millisecond))
	f.WaitFor("the calls to use the renewed certificate", 10*time.Second, func(context.Context) (bool, string, error) {
		log, err := f.Kubectl("logs", restartPodName, "--container=caller")
		if err != nil {
			return false, err.Error(), nil
		}
		seen := serials(serverSerial, log)
		return slices.Contains(seen, after[restartMount].serial()), fmt.Sprintf("serials presented %v", seen), nil
	})

	t.Run("each first certificate came from the old driver pod and each renewal from the new one", func(t *testing.T) {
		f := f.WithT(t)
		var want []string
		for _, m := range mounts {
			want = append(want, before[m].serial(), after[m].serial())
		}
		f.WaitFor("the watch to deliver the requests that issued serials "+strings.Join(want, ", "), 10*time.Second, func(context.Context) (bool, string, error) {
			requests.drain()
			missing := slices.DeleteFunc(slices.Clone(want), func(s string) bool {
				_, ok := requests.issued(s)
				return ok
			})
			return len(missing) == 0, fmt.Sprintf("requests seen: %v", requests.seen), requests.err
		})
		for _, m := range mounts {
			first, _ := requests.issued(before[m].serial())
			if first.driverUID != oldDriver.UID {
				t.Errorf("the first certificate of %s was requested by driver pod %s, want the old one, %s", m, first.driverPod, oldDriver.Name)
			}
			renewed, _ := requests.issued(after[m].serial())
			if renewed.driverUID != newDriver.UID {
				t.Errorf("the renewed certificate of %s was requested by driver pod %s, want the new one, %s", m, renewed.driverPod, newDriver.Name)
			}
			if renewed.volumeID != first.volumeID {
				t.Errorf("the renewal of %s was requested for volume %s, the first certificate for %s", m, renewed.volumeID, first.volumeID)
			}
		}
	})

	t.Run("the renewed files replace the first ones in place, with a new key unless reuse-private-key", func(t *testing.T) {
		f := f.WithT(t)
		for _, m := range mounts {
			if got := listFiles(t, f, m); got != listings[m] {
				t.Errorf("files in %s after the renewal:\n%s\nbefore:\n%s", m, got, listings[m])
			}
			// readVolume checked the chain, the key pair and the names.
			if !after[m].leaf.NotBefore.After(before[m].leaf.NotBefore) {
				t.Errorf("%s: the renewed certificate is valid from %s, not after the first one (%s)", m, after[m].leaf.NotBefore, before[m].leaf.NotBefore)
			}
		}
		if bytes.Equal(after[restartMount].leaf.RawSubjectPublicKeyInfo, before[restartMount].leaf.RawSubjectPublicKeyInfo) {
			t.Errorf("%s kept its key across the renewal", restartMount)
		}
		if !bytes.Equal(after[reuseMount].leaf.RawSubjectPublicKeyInfo, before[reuseMount].leaf.RawSubjectPublicKeyInfo) {
			t.Errorf("%s, with reuse-private-key, got a new key in the renewal", reuseMount)
		}
	})

	t.Run("the pod never found its files missing or invalid, before, during or after the restart", func(t *testing.T) {
		f := f.WithT(t)
		calls := callerLog(t, f)
		// The caller may start before the server listens: only failures
		// after the first success count.
		first := slices.IndexFunc(calls, func(c call) bool { return c.ok })
		if first < 0 {
			t.Fatal("the caller never succeeded")
		}
		var during int
		for _, c := range calls[first:] {
			if !c.ok {
				t.Errorf("call failed at %s: %s", c.at.Format(time.StampMilli), c.line)
			}
			if c.ok && c.at.After(restartStart) && c.at.Before(newDriverReady) {
				during++
			}
		}
		// The checks must be able to fail: the calls spanned the restart.
		if during == 0 {
			t.Errorf("no call succeeded between the driver pod's deletion (%s) and its replacement being Ready (%s)",
				restartStart.Format(time.StampMilli), newDriverReady.Format(time.StampMilli))
		}
		t.Logf("%d calls after the first success, %d of them while the node's driver was replaced", len(calls)-first, during)
		serverLog, err := f.Kubectl("logs", restartPodName, "--container=server")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(serverLog, "failed") {
			t.Errorf("the server's handshakes failed:\n%s", serverLog)
		}
	})
}

// call is one call the caller container made, as its log reports it.
type call struct {
	at   time.Time
	ok   bool
	line string
}

// callerLog returns the calls in the restart pod's caller log, with the
// times the kubelet recorded for them.
func callerLog(t *testing.T, f *framework.Framework) []call {
	t.Helper()
	out, err := f.Kubectl("logs", restartPodName, "--container=caller", "--timestamps")
	if err != nil {
		t.Fatal(err)
	}
	var calls []call
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		stamp, msg, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil {
			t.Fatalf("caller log line without a time: %q", line)
		}
		switch {
		case strings.HasPrefix(msg, "verified server "):
			calls = append(calls, call{at: at, ok: true, line: msg})
		case strings.HasPrefix(msg, "call failed"):
			calls = append(calls, call{at: at, line: msg})
		}
	}
	return calls
}

// restartPod is a pod on node whose server and caller containers share the
// certmint volume at restartMount, with a second volume at reuseMount that
// keeps its key. Both volumes hold certificates of the shortest lifetime,
// renewed 30s after issue.
func restartPod(namespace, node string) *corev1.Pod {
	self := spiffeID(namespace, "default")
	p := certPod(restartPodName, node, "default", []string{"mtls-serve",
		fmt.Sprintf("--listen=127.0.0.1:%d", mtlsPort), "--cert-dir=" + restartMount, "--peer-uri=" + self})
	// No readiness probe: the server's log holds only the caller's
	// handshakes, and the caller's failures count only after its first
	// success.
	server := &p.Spec.Containers[0]
	server.Name = "server"
	caller := *server.DeepCopy()
	caller.Name = "caller"
	caller.Args = []string{"mtls-call", fmt.Sprintf("--addr=127.0.0.1:%d", mtlsPort), "--cert-dir=" + restartMount,
		"--server-name=" + restartPodName + "." + namespace + ".svc", "--peer-uri=" + self, "--every=200ms", "--timeout=5s"}

	reuse := *p.Spec.Volumes[0].DeepCopy()
	reuse.Name = "tls-reuse"
	reuse.CSI.VolumeAttributes["csi.certmint.io/reuse-private-key"] = "true"
	p.Spec.Volumes = append(p.Spec.Volumes, reuse)
	for _, v := range p.Spec.Volumes {
		v.CSI.VolumeAttributes["csi.certmint.io/duration"] = rotationDuration
		v.CSI.VolumeAttributes["csi.certmint.io/renew-before"] = rotationRenewBefore
	}
	caller.VolumeMounts = append(caller.VolumeMounts, corev1.VolumeMount{Name: reuse.Name, MountPath: reuseMount, ReadOnly: true})
	p.Spec.Containers = append(p.Spec.Containers, caller)
	return p
}

// waitNewDriverPod waits until the DaemonSet runs a Ready driver pod on node
// other than the one with UID old, and returns it.
func waitNewDriverPod(t *testing.T, sys *framework.Framework, node string, old types.UID) *corev1.Pod {
	t.Helper()
	var found *corev1.Pod
	sys.WithT(t).WaitFor("a new driver pod on "+node, podTimeout, func(ctx context.Context) (bool, string, error) {
		pods, err := sys.Client.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/name=" + deploy.DriverDaemonSet,
			FieldSelector: "spec.nodeName=" + node,
		})
		if err != nil {
			return false, err.Error(), nil
		}
		var states []string
		for i, p := range pods.Items {
			ready := slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
				return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
			})
			if p.UID != old && p.DeletionTimestamp == nil && ready {
				found = &pods.Items[i]
				return true, "", nil
			}
			states = append(states, fmt.Sprintf("%s ready=%v", p.Name, ready))
		}
		return false, fmt.Sprint(states), nil
	})
	return found
}

// volumeFiles is what a certmint volume held when the test read it.
type volumeFiles struct {
	leaf *x509.Certificate
}

func (v volumeFiles) serial() string { return fmt.Sprintf("%x", v.leaf.SerialNumber) }

// readVolume reads the certmint volume mounted at dir in the restart pod and
// checks it, failing the test if it is not a complete, valid set.
func readVolume(t *testing.T, f *framework.Framework, dir string, root *x509.Certificate) volumeFiles {
	t.Helper()
	v, err := tryReadVolume(f, dir, root)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tryReadVolume reads dir's tls.crt, tls.key and ca.crt in the restart pod
// and checks that the key is the certificate's, that the chain in tls.crt
// verifies both against ca.crt and against root, the issuer's root, and that
// the leaf carries the pod's names.
func tryReadVolume(f *framework.Framework, dir string, root *x509.Certificate) (volumeFiles, error) {
	read := func(name string) ([]byte, error) {
		out, err := f.Kubectl("exec", restartPodName, "--container=caller", "--", "/testapp", "cat", "--file="+dir+"/"+name)
		return []byte(out), err
	}
	certPEM, err := read("tls.crt")
	if err != nil {
		return volumeFiles{}, err
	}
	keyPEM, err := read("tls.key")
	if err != nil {
		return volumeFiles{}, err
	}
	caPEM, err := read("ca.crt")
	if err != nil {
		return volumeFiles{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return volumeFiles{}, fmt.Errorf("%s: tls.crt and tls.key: %w", dir, err)
	}
	leaf := pair.Leaf
	intermediates := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return volumeFiles{}, fmt.Errorf("%s: tls.crt: %w", dir, err)
		}
		intermediates.AddCert(c)
	}
	caFile := x509.NewCertPool()
	if !caFile.AppendCertsFromPEM(caPEM) {
		return volumeFiles{}, fmt.Errorf("%s: no certificate in ca.crt", dir)
	}
	issuerRoot := x509.NewCertPool()
	issuerRoot.AddCert(root)
	for what, roots := range map[string]*x509.CertPool{"ca.crt": caFile, "the issuer's root": issuerRoot} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, DNSName: restartPodName + "." + f.Namespace + ".svc"}); err != nil {
			return volumeFiles{}, fmt.Errorf("%s: verifying tls.crt against %s: %w", dir, what, err)
		}
	}
	if want := spiffeID(f.Namespace, "default"); len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		return volumeFiles{}, fmt.Errorf("%s: tls.crt is for %v, want %s", dir, leaf.URIs, want)
	}
	return volumeFiles{leaf: leaf}, nil
}

// listFiles returns the names, modes, owners and groups of the files in dir
// of the restart pod.
func listFiles(t *testing.T, f *framework.Framework, dir string) string {
	t.Helper()
	out, err := f.Kubectl("exec", restartPodName, "--container=caller", "--", "/testapp", "files", "--dir="+dir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requestLog records the CertificateSigningRequests made for one pod's
// volumes, as a watch started at the pod's creation sees them. The requests
// are deleted once read, so only a watch sees them all.
type requestLog struct {
	w    watch.Interface
	seen []*seenRequest
	err  error
}

// seenRequest is one request and who made it, as the API server stamped it.
type seenRequest struct {
	name, volumeID, driverPod string
	driverUID                 types.UID
	// serial is that of the certificate issued for it, once it is.
	serial string
}

func (r *seenRequest) String() string {
	return fmt.Sprintf("%s (volume %s, by %s, serial %q)", r.name, r.volumeID, r.driverPod, r.serial)
}

// watchRequests starts watching the requests made for pod's certificates
// from pod's creation on; drain collects what the watch has delivered.
func watchRequests(t *testing.T, f *framework.Framework, pod *corev1.Pod) *requestLog {
	t.Helper()
	w, err := f.Client.CertificatesV1().CertificateSigningRequests().Watch(t.Context(), metav1.ListOptions{
		LabelSelector:   request.LabelPodUID + "=" + string(pod.UID),
		ResourceVersion: pod.ResourceVersion,
	})
	if err != nil {
		t.Fatalf("watching the requests for pod %s: %v", pod.Name, err)
	}
	t.Cleanup(w.Stop)
	return &requestLog{w: w}
}

// seenPods records, from a watch of every certmint request, the pods that
// requests were made for.
type seenPods struct {
	mu   sync.Mutex
	pods map[types.UID]bool
	err  error
}

// watchAllRequests starts watching every certmint request from now on, in
// the background until the test ends.
func watchAllRequests(t *testing.T, f *framework.Framework) *seenPods {
	t.Helper()
	// From a listed resourceVersion: a watch from "now" waits for the watch
	// cache to prove it is current, which etcd 3.4 cannot help with.
	list, err := f.Client.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := f.Client.CertificatesV1().CertificateSigningRequests().Watch(t.Context(), metav1.ListOptions{
		LabelSelector:   request.LabelPodUID,
		ResourceVersion: list.ResourceVersion,
	})
	if err != nil {
		t.Fatalf("watching the requests: %v", err)
	}
	t.Cleanup(w.Stop)
	s := &seenPods{pods: map[types.UID]bool{}}
	go func() {
		for ev := range w.ResultChan() {
			s.mu.Lock()
			if csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest); ok {
				s.pods[types.UID(csr.Labels[request.LabelPodUID])] = true
			} else if s.err == nil {
				s.err = fmt.Errorf("the watch of requests delivered %s %T: %v", ev.Type, ev.Object, ev.Object)
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// saw reports whether a request for the pod uid was seen, or the error
// that ended the watch.
func (s *seenPods) saw(uid types.UID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods[uid], s.err
}

// drain records every event the watch has delivered so far, without
// waiting for more.
func (l *requestLog) drain() {
	for l.err == nil {
		select {
		case ev, ok := <-l.w.ResultChan():
			if !ok {
				l.err = fmt.Errorf("the watch of requests ended early; requests seen: %v", l.seen)
				return
			}
			l.record(ev)
		default:
			return
		}
	}
}

func (l *requestLog) record(ev watch.Event) {
	csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
	if !ok {
		l.err = fmt.Errorf("the watch of requests delivered %s %T: %v", ev.Type, ev.Object, ev.Object)
		return
	}
	i := slices.IndexFunc(l.seen, func(r *seenRequest) bool { return r.name == csr.Name })
	if i < 0 {
		extra := csr.Spec.Extra
		r := &seenRequest{name: csr.Name, volumeID: csr.Annotations[request.AnnotationVolumeID]}
		if v := extra[request.ExtraPodName]; len(v) == 1 {
			r.driverPod = v[0]
		}
		if v := extra[request.ExtraPodUID]; len(v) == 1 {
			r.driverUID = types.UID(v[0])
		}
		l.seen = append(l.seen, r)
		i = len(l.seen) - 1
	}
	if block, _ := pem.Decode(csr.Status.Certificate); block != nil {
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			l.seen[i].serial = fmt.Sprintf("%x", c.SerialNumber)
		}
	}
}

// issued returns the request whose certificate has serial.
func (l *requestLog) issued(serial string) (*seenRequest, bool) {
	i := slices.IndexFunc(l.seen, func(r *seenRequest) bool { return r.serial == serial })
	if i < 0 {
		return nil, false
	}
	return l.seen[i], true
}

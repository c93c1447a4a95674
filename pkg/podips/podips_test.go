package podips

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"
)

// lists records the field selectors of the pod lists the fake answered.
type lists struct {
	mu        sync.Mutex
	selectors []string
}

func (l *lists) record(a k8stesting.Action) (bool, runtime.Object, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.selectors = append(l.selectors, a.(k8stesting.ListAction).GetListRestrictions().Fields.String())
	return false, nil, nil
}

func (l *lists) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.selectors)
}

// fakePods is a fake clientset's pod client that tells the informer, as
// the fake clientset itself does, that it cannot stream a watch's initial
// list; the informer would wait for that list forever.
type fakePods struct {
	corev1client.PodInterface
}

func (fakePods) IsWatchListSemanticsUnSupported() bool { return true }

// start runs a Watcher for node-a on a fake API server holding pods, and
// sends the UIDs it reports changed on the returned channel.
func start(t *testing.T, opts Options, pods ...*corev1.Pod) (*Watcher, *fake.Clientset, *lists, chan string) {
	t.Helper()
	objs := make([]runtime.Object, len(pods))
	for i, p := range pods {
		objs[i] = p
	}
	client := fake.NewClientset(objs...)
	l := &lists{}
	client.PrependReactor("list", "pods", l.record)
	opts.Client, opts.NodeName, opts.Logger = fakePods{client.CoreV1().Pods("")}, "node-a", testr.New(t)
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan string, 10)
	w.OnChange(func(uid string) { changed <- uid })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, client, l, changed
}

func pod(name string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "example/app"}}},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func ipsOf(t *testing.T, w *Watcher, uid string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ips, err := w.IPs(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func expectChanged(t *testing.T, changed chan string, uid string) {
	t.Helper()
	select {
	case got := <-changed:
		if got != uid {
			t.Fatalf("changed %s, want %s", got, uid)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no change reported for %s", uid)
	}
}

func expectNoChange(t *testing.T, changed chan string) {
	t.Helper()
	select {
	case got := <-changed:
		t.Fatalf("unexpected change of %s", got)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestNoPodIsReadWhileNoVolumeAsksAndOnlyTheNodesWhileOneDoes(t *testing.T) {
	w, _, l, _ := start(t, Options{}, pod("web-0", "10.244.1.5"))
	time.Sleep(100 * time.Millisecond)
	if got := l.get(); len(got) != 0 {
		t.Fatalf("listed pods %v while no volume asked for addresses", got)
	}

	w.Want("csi-1", "uid-web-0")
	if ips := ipsOf(t, w, "uid-web-0"); !slices.Equal(ips, []string{"10.244.1.5"}) {
		t.Errorf("IPs = %v, want the pod's address", ips)
	}
	if got := l.get(); !slices.Equal(got, []string{"spec.nodeName=node-a"}) {
		t.Errorf("lists with field selectors %q, want one of the node's pods", got)
	}

	w.Release("csi-1")
	waitFor(t, "the watch to stop once no volume asks", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.current == nil
	})
	// Asked again, it lists again: a watch that stopped cannot resume.
	w.Want("csi-2", "uid-web-0")
	ipsOf(t, w, "uid-web-0")
	if got := l.get(); len(got) != 2 {
		t.Errorf("lists %q, want a second one after the watch restarted", got)
	}
}

func TestAWantedPodGettingItsAddressesIsReported(t *testing.T) {
	w, client, _, changed := start(t, Options{}, pod("web-0"), pod("other"))
	w.Want("csi-1", "uid-web-0")
	if ips := ipsOf(t, w, "uid-web-0"); len(ips) != 0 {
		t.Fatalf("IPs = %v, want none yet", ips)
	}
	expectNoChange(t, changed)

	// Another pod of the node gets its address: nobody asked for it.
	if _, err := client.CoreV1().Pods("shop").UpdateStatus(t.Context(), pod("other", "10.244.1.6"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectNoChange(t, changed)

	// The kubelet writes the sandbox's addresses into the status.
	if _, err := client.CoreV1().Pods("shop").UpdateStatus(t.Context(), pod("web-0", "10.244.1.5", "fd00:10:244:1::5"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectChanged(t, changed, "uid-web-0")
	if ips := ipsOf(t, w, "uid-web-0"); !slices.Equal(ips, []string{"10.244.1.5", "fd00:10:244:1::5"}) {
		t.Errorf("IPs = %v, want both addresses, the primary first", ips)
	}

	// A status update that leaves the addresses alone is no change.
	p := pod("web-0", "10.244.1.5", "fd00:10:244:1::5")
	p.Status.Phase = corev1.PodRunning
	if _, err := client.CoreV1().Pods("shop").UpdateStatus(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectNoChange(t, changed)
}

func TestAPodThatHadItsAddressesWhenTheWatchStartedIsReported(t *testing.T) {
	// The watch may start after the pod got its addresses (a restarted
	// driver); its caller must hear of them all the same.
	w, _, _, changed := start(t, Options{}, pod("web-0", "10.244.1.5"))
	w.Want("csi-1", "uid-web-0")
	expectChanged(t, changed, "uid-web-0")
}

func TestAPodTheWatchHasNotSeenHasNoAddresses(t *testing.T) {
	w, _, _, _ := start(t, Options{}, pod("web-0", "10.244.1.5"))
	w.Want("csi-1", "uid-gone")
	if ips := ipsOf(t, w, "uid-gone"); len(ips) != 0 {
		t.Errorf("IPs = %v, want none", ips)
	}
}

func TestIPsTellsAtOnceWhyTheWatchCannotList(t *testing.T) {
	w, client, _, _ := start(t, Options{SyncTimeout: time.Hour})
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", nil)
	})
	w.Want("csi-1", "uid-web-0")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := w.IPs(ctx, "uid-web-0")
	if err == nil || !strings.Contains(err.Error(), "has not listed them") || !apierrors.IsForbidden(err) {
		t.Errorf("IPs error = %v, want the watch's Forbidden before the test's deadline", err)
	}
}

func TestTheCacheHoldsAddressesOnly(t *testing.T) {
	p := pod("web-0", "10.244.1.5")
	p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PASSWORD", Value: "secret"}}
	p.Labels = map[string]string{"app": "web"}
	got, err := addressesOnly(p)
	if err != nil {
		t.Fatal(err)
	}
	slim := got.(*corev1.Pod)
	if len(slim.Spec.Containers) != 0 || slim.Labels != nil || !slices.EqualFunc(addresses(slim), []net.IP{net.ParseIP("10.244.1.5")}, net.IP.Equal) || slim.UID != "uid-web-0" {
		t.Errorf("kept %+v", slim)
	}
}

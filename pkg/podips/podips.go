// Package podips keeps the addresses of this node's pods whose volumes ask
// for them (the ip-sans attribute's ${POD_IP} and ${POD_IPS}). The kubelet
// does not pass a pod's addresses to the driver, and the pod has none yet
// when its volumes are published: they appear in the pod's status once its
// sandbox exists. So the driver watches this node's pods, and only while at
// least one volume asks for addresses; a driver whose volumes ask for none
// reads no pods at all.
//
// It knows nothing of volumes or certificates: callers say which pods they
// want, read their addresses and hear when they change.
package podips

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/pkg/logkeys"
)

// API is the pod client the package needs: the calls it makes of
// client-go's typed one, which a clientset's CoreV1().Pods("") provides,
// fake included.
type API interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// NewAPI returns an API for the pods of every namespace, backed by the API
// server that cfg and httpClient reach. It is what client-go's typed client
// builds, with a scheme of only the core API group, whose types the driver
// links anyway.
func NewAPI(cfg *rest.Config, httpClient *http.Client) (API, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme)).WithoutConversion()
	client, err := rest.RESTClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	return gentype.NewClientWithList("pods", client, runtime.NewParameterCodec(scheme), metav1.NamespaceAll,
		func() *corev1.Pod { return &corev1.Pod{} },
		func() *corev1.PodList { return &corev1.PodList{} },
		gentype.PrefersProtobuf[*corev1.Pod]()), nil
}

// DefaultSyncTimeout is how long IPs waits for the watch to list the
// node's pods before it gives up with the watch's last error.
const DefaultSyncTimeout = 30 * time.Second

// Options configure a Watcher.
type Options struct {
	// Client lists and watches pods. Required.
	Client API
	// NodeName is this node: only pods bound to it are watched. Required.
	NodeName string
	// SyncTimeout bounds how long IPs waits for the watch to list the
	// node's pods; zero means DefaultSyncTimeout.
	SyncTimeout time.Duration
	// Logger; zero discards.
	Logger logr.Logger
}

// Watcher keeps the addresses of the pods it is asked for, from a watch of
// the node's pods that runs while it is asked for any.
type Watcher struct {
	opts Options

	mu sync.Mutex
	// wanted maps each key (a volume) to the UID of the pod it wants.
	wanted map[string]string
	// current is the running watch's informer; nil while none runs.
	current cache.SharedIndexInformer
	changed func(podUID string)
	// lastErr is why the running watch last failed; nil when it started.
	lastErr error
	// wake tells Run that wanted changed.
	wake chan struct{}
}

const uidIndex = "uid"

// New returns a Watcher; call Run to have it watch.
func New(opts Options) (*Watcher, error) {
	switch {
	case opts.Client == nil:
		return nil, errors.New("podips: Client is required")
	case opts.NodeName == "":
		return nil, errors.New("podips: NodeName is required")
	case opts.SyncTimeout < 0:
		return nil, fmt.Errorf("podips: SyncTimeout (%s) must not be negative", opts.SyncTimeout)
	}
	if opts.SyncTimeout == 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	return &Watcher{opts: opts, wanted: map[string]string{}, wake: make(chan struct{}, 1)}, nil
}

// OnChange has changed called with the UID of every wanted pod whose
// addresses change, including when the watch first lists a pod that has
// some (the watch may start after the pod got them), from the watch's
// goroutine: changed must not block. Call it before Run.
func (w *Watcher) OnChange(changed func(podUID string)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.changed = changed
}

// Want has the addresses of pod podUID kept for key (a volume) until
// Release(key).
func (w *Watcher) Want(key, podUID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wanted[key] = podUID
	w.poke()
}

// Release forgets what key wanted; once nobody wants a pod, the watch
// stops.
func (w *Watcher) Release(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.wanted[key]; ok {
		delete(w.wanted, key)
		w.poke()
	}
}

func (w *Watcher) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// IPs returns the addresses of pod podUID, its primary one first; none
// while it has none, or while the watch has not seen it. It waits, until
// ctx ends or for SyncTimeout at most, for the watch to have listed the
// node's pods, so that a pod that has its addresses already is not taken
// for one without; a watch that failed to list them is an error at once,
// not after the wait. The pod must be wanted.
func (w *Watcher) IPs(ctx context.Context, podUID string) ([]net.IP, error) {
	var inf cache.SharedIndexInformer
	var failed error
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, w.opts.SyncTimeout, true, func(context.Context) (bool, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch {
		case w.current != nil && w.current.HasSynced():
			inf = w.current
			return true, nil
		case w.lastErr != nil:
			failed = w.lastErr
			return true, nil
		}
		return false, nil
	})
	switch {
	case failed != nil:
		return nil, fmt.Errorf("the driver's watch on the pods of node %s has not listed them: %w", w.opts.NodeName, failed)
	case err != nil:
		return nil, fmt.Errorf("waiting for the driver's watch on the pods of node %s: %w", w.opts.NodeName, err)
	}
	objs, err := inf.GetIndexer().ByIndex(uidIndex, podUID)
	if err != nil || len(objs) == 0 {
		return nil, err
	}
	return addresses(objs[0].(*corev1.Pod)), nil
}

// Run watches the node's pods while any is wanted, until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	for {
		if !w.waitUntil(ctx, true) {
			return
		}
		inf, err := w.newInformer()
		if err != nil {
			// Only a programming error: handlers and indexers are set on
			// an informer that has not started.
			w.opts.Logger.Error(err, "Starting the watch on the node's pods")
			return
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			inf.RunWithContext(runCtx)
		}()
		w.mu.Lock()
		w.current = inf
		w.lastErr = nil
		w.mu.Unlock()
		w.opts.Logger.V(1).Info("Watching the node's pods: a volume asks for its pod's addresses", logkeys.Node, w.opts.NodeName)

		stillRunning := w.waitUntil(ctx, false)
		cancel()
		<-done
		w.mu.Lock()
		w.current = nil
		w.mu.Unlock()
		if !stillRunning {
			return
		}
		w.opts.Logger.V(1).Info("Stopped watching the node's pods: no volume asks for addresses", logkeys.Node, w.opts.NodeName)
	}
}

// waitUntil waits until some pod is wanted (wanted true) or none is; false
// if ctx ended first.
func (w *Watcher) waitUntil(ctx context.Context, wanted bool) bool {
	for {
		w.mu.Lock()
		some := len(w.wanted) > 0
		w.mu.Unlock()
		if some == wanted {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-w.wake:
		}
	}
}

func (w *Watcher) newInformer() (cache.SharedIndexInformer, error) {
	selector := fields.OneTermEqualSelector("spec.nodeName", w.opts.NodeName).String()
	// Built here rather than by client-go's informers package, which links
	// the clients of every API group; as its informers do, it asks the
	// client whether it can stream a watch's initial list (fakes cannot).
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return w.opts.Client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return w.opts.Client.Watch(ctx, o)
		},
	}, w.opts.Client)
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		return []string{string(obj.(*corev1.Pod).UID)}, nil
	}})
	if err := inf.SetTransform(addressesOnly); err != nil {
		return nil, err
	}
	if err := inf.SetWatchErrorHandlerWithContext(w.watchFailed); err != nil {
		return nil, err
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok && len(pod.Status.PodIPs) > 0 {
				w.notify(pod)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Pod)
			n, ok2 := obj.(*corev1.Pod)
			if ok1 && ok2 && !slices.Equal(o.Status.PodIPs, n.Status.PodIPs) {
				w.notify(n)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return inf, nil
}

// watchFailed keeps the watch's error for IPs to report, and logs it with
// what it means for the volumes; the informer retries with backoff.
func (w *Watcher) watchFailed(ctx context.Context, r *cache.Reflector, err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	if apierrors.IsForbidden(err) {
		w.opts.Logger.Error(err, "The driver may not watch the node's pods, so volumes that ask for their pod's addresses cannot get them: its ClusterRole needs list and watch on pods", logkeys.Node, w.opts.NodeName)
		return
	}
	cache.DefaultWatchErrorHandler(ctx, r, err)
}

// notify tells the caller that a wanted pod's addresses changed.
func (w *Watcher) notify(pod *corev1.Pod) {
	uid := string(pod.UID)
	w.mu.Lock()
	wanted := slices.Contains(slices.Collect(maps.Values(w.wanted)), uid)
	changed := w.changed
	w.mu.Unlock()
	if wanted && changed != nil {
		changed(uid)
	}
}

// addressesOnly keeps of a pod what the watcher reads, so the cache of the
// node's pods holds no spec and nothing else of their status. It is called
// again on objects it already transformed, and passes those through.
func addressesOnly(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Status:     corev1.PodStatus{PodIPs: pod.Status.PodIPs},
	}, nil
}

// addresses parses a pod's status.podIPs, the primary first as the API
// server keeps them.
func addresses(pod *corev1.Pod) []net.IP {
	var out []net.IP
	for _, a := range pod.Status.PodIPs {
		if ip := net.ParseIP(a.IP); ip != nil {
			out = append(out, ip)
		}
	}
	return out
}

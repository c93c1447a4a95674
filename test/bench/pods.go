package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/certmint/certmint/test/e2e/cluster"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
)

const (
	podNamespace = "bench-pods"
	podTimeout   = 2 * time.Minute
	podWarmup    = 3
)

// podStartup is pod start-up with a certmint CSI volume, with a
// podCertificate projection of a certmint signer and with an emptyDir,
// measured in triples.
type podStartup struct {
	certmint, projected, emptyDir []time.Duration // sorted
	// diffs and projectedDiffs are certmint and projected minus emptyDir
	// within each triple, sorted.
	diffs, projectedDiffs []time.Duration
}

// runPodStartup measures, on the full cluster with certmint installed
// from deploy/, how long a pod takes from create to Running with a certmint
// volume, with a podCertificate projection (and the issuer's
// clusterTrustBundle) instead, and with an emptyDir. Pods of the three
// kinds take turns, in rotating order and on alternating nodes, so that all
// see the same cluster; each pod is deleted once it runs.
func runPodStartup(ctx context.Context, n int, logDir string, res *results) error {
	logf("starting the full cluster (it waits while another one runs)")
	c, err := cluster.Start(ctx, cluster.Options{Logf: logf, LogDir: logDir})
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			logf("stopping the cluster: %v", err)
		}
	}()
	logf("installing certmint")
	if err := deploy.Images(ctx, c); err != nil {
		return err
	}
	overlay := filepath.Join(c.Dir, "certmint-deploy")
	if err := deploy.WriteOverlay(overlay, c.NodesDir); err != nil {
		return err
	}
	if err := deploy.Apply(ctx, c.Kubectl, overlay); err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	if err := waitInstalled(ctx, client, len(c.Nodes)); err != nil {
		return err
	}
	if _, err := deploy.CAClusterIssuer(ctx, c.Config, issuerName); err != nil {
		return err
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := framework.Wait(ctx, "the namespace's default ServiceAccount", podTimeout, func(ctx context.Context) (bool, string, error) {
		_, err := client.CoreV1().ServiceAccounts(podNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	}); err != nil {
		return err
	}

	running, err := watchRunning(ctx, client)
	if err != nil {
		return err
	}
	logf("starting %d pods of each kind, %d of them to warm up", n+podWarmup, podWarmup)
	var ps podStartup
	for i := range n + podWarmup {
		node := c.Nodes[i%len(c.Nodes)].Name
		cm, pc, ed := fmt.Sprintf("certmint-%d", i), fmt.Sprintf("projected-%d", i), fmt.Sprintf("emptydir-%d", i)
		turn := []*corev1.Pod{
			deploy.CertPod(cm, node, "default", issuerName, cluster.PauseImage, nil),
			deploy.ProjectedPod(pc, node, "default", issuerName, cluster.PauseImage, nil, deploy.Projection{}),
			emptyDirPod(ed, node),
		}
		// Each kind goes first, second and third equally often.
		for range i % len(turn) {
			turn = append(turn[1:], turn[0])
		}
		took := map[string]time.Duration{}
		for _, pod := range turn {
			d, err := startPod(ctx, client, running, pod)
			if err != nil {
				return err
			}
			took[pod.Name] = d
		}
		if i < podWarmup {
			continue
		}
		ps.certmint = append(ps.certmint, took[cm])
		ps.projected = append(ps.projected, took[pc])
		ps.emptyDir = append(ps.emptyDir, took[ed])
		ps.diffs = append(ps.diffs, took[cm]-took[ed])
		ps.projectedDiffs = append(ps.projectedDiffs, took[pc]-took[ed])
	}
	for _, d := range [][]time.Duration{ps.certmint, ps.projected, ps.emptyDir, ps.diffs, ps.projectedDiffs} {
		slices.Sort(d)
	}
	res.pods = &ps
	return nil
}

// emptyDirPod is deploy.CertPod with an emptyDir where the certmint volume
// was: the baseline.
func emptyDirPod(name, node string) *corev1.Pod {
	pod := deploy.CertPod(name, node, "default", issuerName, cluster.PauseImage, nil)
	pod.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}
	return pod
}

// startPod creates pod, waits until it runs and deletes it, and returns the
// time from the create call to the watch event that showed it Running.
func startPod(ctx context.Context, client kubernetes.Interface, running *runningWatch, pod *corev1.Pod) (time.Duration, error) {
	seen := running.expect(pod.Name)
	start := time.Now()
	if _, err := client.CoreV1().Pods(podNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return 0, fmt.Errorf("creating pod %s: %w", pod.Name, err)
	}
	var took time.Duration
	select {
	case at := <-seen:
		took = at.Sub(start)
	case <-time.After(podTimeout):
		return 0, fmt.Errorf("pod %s not Running after %s", pod.Name, podTimeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if err := client.CoreV1().Pods(podNamespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		return 0, fmt.Errorf("deleting pod %s: %w", pod.Name, err)
	}
	return took, nil
}

// runningWatch reports when each pod of the namespace is first seen
// Running, from an informer: it lists again whenever its watch breaks.
type runningWatch struct {
	mu      sync.Mutex
	waiting map[string]chan time.Time
}

func watchRunning(ctx context.Context, client kubernetes.Interface) (*runningWatch, error) {
	r := &runningWatch{waiting: map[string]chan time.Time{}}
	informer := coreinformers.NewPodInformer(client, podNamespace, 0, cache.Indexers{})
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.observe,
		UpdateFunc: func(_, obj any) { r.observe(obj) },
	})
	if err != nil {
		return nil, err
	}
	go informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil, fmt.Errorf("watching pods: %w", ctx.Err())
	}
	return r, nil
}

func (r *runningWatch) observe(obj any) {
	at := time.Now()
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Status.Phase != corev1.PodRunning {
		return
	}
	r.mu.Lock()
	ch := r.waiting[pod.Name]
	delete(r.waiting, pod.Name)
	r.mu.Unlock()
	if ch != nil {
		ch <- at
	}
}

// expect returns a channel that receives when the pod name is first seen
// Running; call it before creating the pod.
func (r *runningWatch) expect(name string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	r.mu.Lock()
	r.waiting[name] = ch
	r.mu.Unlock()
	return ch
}

// waitInstalled waits until the driver runs on every node and the
// controller is available.
func waitInstalled(ctx context.Context, client kubernetes.Interface, nodes int) error {
	return framework.Wait(ctx, "the driver on every node and the controller", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		ds, err := client.AppsV1().DaemonSets(deploy.Namespace).Get(ctx, deploy.DriverDaemonSet, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		d, err := client.AppsV1().Deployments(deploy.Namespace).Get(ctx, deploy.ControllerDeployment, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		state := fmt.Sprintf("driver ready on %d of %d nodes, controller %d available", ds.Status.NumberReady, nodes, d.Status.AvailableReplicas)
		return ds.Status.NumberReady == int32(nodes) && d.Status.AvailableReplicas >= 1, state, nil
	})
}

// Package framework is what end-to-end tests share on top of a running
// cluster: a namespace per test, waits that say what they waited for and what
// they last saw, kubectl, and a dump of events, pods and component logs when a
// test fails.
package framework

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"github.com/certmint/certmint/test/e2e/cluster"
)

const (
	// pollInterval is how often waits look again.
	pollInterval = 250 * time.Millisecond
	// dumpLogLines is how much of each container and component log a
	// failure dump shows.
	dumpLogLines = 40
	// namespaceTimeout bounds the wait for a new namespace's default
	// ServiceAccount.
	namespaceTimeout = 30 * time.Second
)

// Framework is one test's view of the cluster.
type Framework struct {
	T         testing.TB
	Cluster   *cluster.Cluster
	Client    kubernetes.Interface
	Namespace string // created for this test, deleted after it
}

// New creates a namespace for t on c and waits until pods can be created in
// it. When t ends the namespace is deleted; if t failed, events, pods and
// component logs are logged first.
func New(t testing.TB, c *cluster.Cluster) *Framework {
	t.Helper()
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	f := &Framework{T: t, Cluster: c, Client: client}
	ns, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: namespaceName(t.Name())},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating test namespace: %v", err)
	}
	f.Namespace = ns.Name
	t.Cleanup(func() {
		if t.Failed() {
			f.Dump()
		}
		// Not waiting: the next test has its own namespace.
		err := client.CoreV1().Namespaces().Delete(context.Background(), f.Namespace, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", f.Namespace, err)
		}
	})
	// The ServiceAccount admission plugin rejects pods until
	// kube-controller-manager has created the namespace's default account.
	f.WaitFor("default ServiceAccount in namespace "+f.Namespace, namespaceTimeout, func(ctx context.Context) (bool, string, error) {
		_, err := client.CoreV1().ServiceAccounts(f.Namespace).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not created yet", nil
		}
		return err == nil, fmt.Sprint(err), nil
	})
	return f
}

// WithT returns a copy of f that reports to t, for use inside a subtest:
// a subtest must not fail its parent.
func (f *Framework) WithT(t testing.TB) *Framework {
	c := *f
	c.T = t
	return &c
}

var notDNSLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// namespaceName derives a valid, unique namespace name from a test name.
func namespaceName(testName string) string {
	base := strings.Trim(notDNSLabel.ReplaceAllString(strings.ToLower(testName), "-"), "-")
	if len(base) > 50 {
		base = strings.TrimRight(base[:50], "-")
	}
	return base + "-" + rand.String(5)
}

// Condition reports whether what a wait waits for has happened, and
// otherwise the state it saw, which a timeout reports. An error ends the wait
// at once: the condition can no longer become true.
type Condition func(ctx context.Context) (done bool, state string, err error)

// Wait polls cond until it is done, fails or timeout passes. The error of a
// timeout names what was awaited and the last state seen.
func Wait(ctx context.Context, what string, timeout time.Duration, cond Condition) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	state := "not checked yet"
	for {
		done, s, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if done {
			return nil
		}
		if s != "" {
			state = s
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		case <-time.After(pollInterval):
		}
	}
}

// WaitFor is Wait that fails the test.
func (f *Framework) WaitFor(what string, timeout time.Duration, cond Condition) {
	f.T.Helper()
	if err := Wait(f.T.Context(), what, timeout, cond); err != nil {
		f.T.Fatal(err)
	}
}

// WaitForPodRunning waits until the pod is Running and Ready and returns it.
func (f *Framework) WaitForPodRunning(name string, timeout time.Duration) *corev1.Pod {
	f.T.Helper()
	var pod *corev1.Pod
	f.WaitFor("pod "+f.Namespace+"/"+name+" to be Running and Ready", timeout, func(ctx context.Context) (bool, string, error) {
		p, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, "", fmt.Errorf("pod ended: %s", podState(p))
		}
		pod = p
		return runningAndReady(p), podState(p), nil
	})
	return pod
}

// WaitForDaemonSetRunning waits until the DaemonSet has a Running and Ready
// pod on every cluster node and returns those pods by node name.
func (f *Framework) WaitForDaemonSetRunning(name string, timeout time.Duration) map[string]*corev1.Pod {
	f.T.Helper()
	var byNode map[string]*corev1.Pod
	f.WaitFor("DaemonSet "+f.Namespace+"/"+name+" to run a Ready pod on every node", timeout, func(ctx context.Context) (bool, string, error) {
		ds, err := f.Client.AppsV1().DaemonSets(f.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pods, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: metav1.FormatLabelSelector(ds.Spec.Selector),
		})
		if err != nil {
			return false, err.Error(), nil
		}
		byNode = map[string]*corev1.Pod{}
		var states []string
		for i := range pods.Items {
			p := &pods.Items[i]
			states = append(states, p.Name+" on "+p.Spec.NodeName+": "+podState(p))
			if runningAndReady(p) && p.DeletionTimestamp == nil {
				byNode[p.Spec.NodeName] = p
			}
		}
		var missing []string
		for _, n := range f.Cluster.Nodes {
			if byNode[n.Name] == nil {
				missing = append(missing, n.Name)
			}
		}
		state := fmt.Sprintf("desired %d, ready %d; no ready pod on %v; pods: %s",
			ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, missing, strings.Join(states, "; "))
		return len(missing) == 0, state, nil
	})
	return byNode
}

// WaitForDeploymentAvailable waits until every replica of the Deployment's
// current revision is available.
func (f *Framework) WaitForDeploymentAvailable(name string, timeout time.Duration) {
	f.T.Helper()
	f.WaitFor("Deployment "+f.Namespace+"/"+name+" to be available", timeout, func(ctx context.Context) (bool, string, error) {
		d, err := f.Client.AppsV1().Deployments(f.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		state := fmt.Sprintf("observedGeneration %d/%d, updated %d, available %d, want %d",
			s.ObservedGeneration, d.Generation, s.UpdatedReplicas, s.AvailableReplicas, want)
		done := s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
		return done, state, nil
	})
}

// Kubectl runs kubectl in the test's namespace and returns its stdout. The
// error carries stderr.
func (f *Framework) Kubectl(args ...string) (string, error) {
	f.T.Helper()
	ctx, cancel := context.WithTimeout(f.T.Context(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := f.Cluster.Kubectl(ctx, append([]string{"--namespace=" + f.Namespace}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func runningAndReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podState summarizes a pod the way a person debugging it looks at it first.
func podState(p *corev1.Pod) string {
	parts := []string{"phase " + string(p.Status.Phase)}
	if p.Status.Reason != "" {
		parts = append(parts, "reason "+p.Status.Reason)
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			parts = append(parts, fmt.Sprintf("%s=%s %s %s", c.Type, c.Status, c.Reason, c.Message))
		}
	}
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		parts = append(parts, containerState(cs))
	}
	return strings.Join(parts, ", ")
}

func containerState(cs corev1.ContainerStatus) string {
	s := cs.State
	switch {
	case s.Waiting != nil:
		return fmt.Sprintf("container %s waiting: %s %s", cs.Name, s.Waiting.Reason, s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("container %s terminated: exit %d %s %s", cs.Name, s.Terminated.ExitCode, s.Terminated.Reason, s.Terminated.Message)
	case s.Running != nil:
		return fmt.Sprintf("container %s running (restarts %d)", cs.Name, cs.RestartCount)
	}
	return "container " + cs.Name + " in no state"
}

// Dump logs the namespace's events and pods (with their containers' last log
// lines) and the last lines of every component's log.
func (f *Framework) Dump() {
	f.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "=== dump of namespace %s ===\n", f.Namespace)
	f.dumpEvents(ctx, &b)
	f.dumpPods(ctx, &b)
	logs := f.Cluster.LogFiles()
	for _, name := range slices.Sorted(maps.Keys(logs)) {
		fmt.Fprintf(&b, "--- last lines of %s (%s)\n%s\n", name, logs[name], cluster.LogTail(logs[name], dumpLogLines))
	}
	f.T.Log(b.String())
}

func (f *Framework) dumpEvents(ctx context.Context, b *strings.Builder) {
	events, err := f.Client.CoreV1().Events(f.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(b, "listing events: %v\n", err)
		return
	}
	slices.SortFunc(events.Items, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	fmt.Fprintf(b, "--- events (%d)\n", len(events.Items))
	for _, e := range events.Items {
		fmt.Fprintf(b, "%s %s %s %s/%s: %s (x%d)\n", eventTime(e).Format(time.TimeOnly), e.Type, e.Reason,
			e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message, max(e.Count, 1))
	}
}

func eventTime(e corev1.Event) time.Time {
	for _, t := range []time.Time{e.LastTimestamp.Time, e.EventTime.Time, e.FirstTimestamp.Time} {
		if !t.IsZero() {
			return t
		}
	}
	return e.CreationTimestamp.Time
}

func (f *Framework) dumpPods(ctx context.Context, b *strings.Builder) {
	pods, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(b, "listing pods: %v\n", err)
		return
	}
	for _, p := range pods.Items {
		fmt.Fprintf(b, "--- pod %s on %s, IP %s: %s\n", p.Name, p.Spec.NodeName, p.Status.PodIP, podState(&p))
		for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
			lines := int64(dumpLogLines)
			data, err := f.Client.CoreV1().Pods(f.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: &lines}).DoRaw(ctx)
			if err != nil {
				fmt.Fprintf(b, "    logs of %s: %v\n", c.Name, err)
				continue
			}
			fmt.Fprintf(b, "    logs of %s:\n\t%s\n", c.Name, strings.ReplaceAll(strings.TrimSpace(string(data)), "\n", "\n\t"))
		}
	}
}

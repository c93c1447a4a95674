package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/certmint/certmint/test/e2e/framework"
)

// TestClusterSmoke checks what every other end-to-end test relies on: a
// DaemonSet runs on every node, pods on different nodes reach each other by
// IP, kubectl exec and logs work on every node, and a pod reaches the API
// server as an in-cluster client with a token naming its node.
func TestClusterSmoke(t *testing.T) {
	f := framework.New(t, testCluster)
	if len(testCluster.Nodes) < 2 {
		t.Fatalf("cluster has %d nodes; the smoke test needs two", len(testCluster.Nodes))
	}

	const name, port = "echo", 8080
	labels := map[string]string{"app": name}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{
						Name:            "echo",
						Image:           testappImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"serve-tcp", fmt.Sprintf("--listen=:%d", port), "--message=hello from $(NODE_NAME)"},
						Env: []corev1.EnvVar{{
							Name:      "NODE_NAME",
							ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}},
						}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	if _, err := f.Client.AppsV1().DaemonSets(f.Namespace).Create(t.Context(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating DaemonSet: %v", err)
	}
	pods := f.WaitForDaemonSetRunning(name, 2*time.Minute)
	client, server := pods[testCluster.Nodes[0].Name], pods[testCluster.Nodes[1].Name]
	if client.Status.PodIP == server.Status.PodIP {
		t.Fatalf("pods on %s and %s share IP %s", client.Spec.NodeName, server.Spec.NodeName, client.Status.PodIP)
	}

	t.Run("kubectl exec on node 1 reaches a pod on node 2 over TCP", func(t *testing.T) {
		f := f.WithT(t)
		out, err := f.Kubectl("exec", client.Name, "--", "/testapp", "connect",
			fmt.Sprintf("--addr=%s:%d", server.Status.PodIP, port))
		if err != nil {
			t.Fatal(err)
		}
		if want := "hello from " + server.Spec.NodeName; strings.TrimSpace(out) != want {
			t.Errorf("reply = %q, want %q", out, want)
		}
	})

	t.Run("kubectl logs of the pod on node 2 shows the connection from node 1", func(t *testing.T) {
		f := f.WithT(t)
		// No masquerading: the server sees the client pod's own address.
		want := "connection from " + client.Status.PodIP + ":"
		var logs string
		f.WaitFor("the server's log to show "+want, 30*time.Second, func(context.Context) (bool, string, error) {
			out, err := f.Kubectl("logs", server.Name)
			if err != nil {
				return false, err.Error(), nil
			}
			logs = out
			return strings.Contains(out, want), "log: " + out, nil
		})
		if !strings.Contains(logs, "serving tcp on") {
			t.Errorf("log lacks the server's start line:\n%s", logs)
		}
	})

	t.Run("kubectl exec and logs work on node 1 too", func(t *testing.T) {
		f := f.WithT(t)
		out, err := f.Kubectl("exec", server.Name, "--", "/testapp", "connect",
			fmt.Sprintf("--addr=%s:%d", client.Status.PodIP, port))
		if err != nil {
			t.Fatal(err)
		}
		if want := "hello from " + client.Spec.NodeName; strings.TrimSpace(out) != want {
			t.Errorf("reply = %q, want %q", out, want)
		}
		logs, err := f.Kubectl("logs", client.Name)
		if err != nil {
			t.Fatal(err)
		}
		if want := "connection from " + server.Status.PodIP + ":"; !strings.Contains(logs, want) {
			t.Errorf("log of %s lacks %q:\n%s", client.Name, want, logs)
		}
	})

	t.Run("a pod reaches the API server through the kubernetes Service with a token naming its node", func(t *testing.T) {
		f := f.WithT(t)
		out, err := f.Kubectl("exec", client.Name, "--", "/testapp", "whoami")
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("user=system:serviceaccount:%s:default node=%s", f.Namespace, client.Spec.NodeName)
		if strings.TrimSpace(out) != want {
			t.Errorf("whoami = %q, want %q", out, want)
		}
	})
}

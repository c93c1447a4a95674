package csr

import (
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmint/certmint/pkg/request"
)

func TestOwnWritesHideOnlyTheStaleCache(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := &Reconciler{opts: Options{Clock: clk}, ownWrites: map[string]ownWrite{}}
	written := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "uid-1", ResourceVersion: "7"}}
	r.rememberOwnWrite(written)

	stale := written.DeepCopy()
	stale.ResourceVersion = "6"
	if wait := r.behindOwnWrite(stale); wait != ownWriteWait {
		t.Errorf("a cache older than our write waits %s, want %s", wait, ownWriteWait)
	}
	replaced := stale.DeepCopy()
	replaced.UID = "uid-2"
	if wait := r.behindOwnWrite(replaced); wait != 0 {
		t.Errorf("a new request of the same name waits %s, want 0", wait)
	}

	r.rememberOwnWrite(written)
	clk.Step(ownWriteWait + time.Second)
	if wait := r.behindOwnWrite(stale); wait != 0 {
		t.Errorf("after %s a missed event no longer blocks, but waits %s", ownWriteWait, wait)
	}

	r.rememberOwnWrite(written)
	if wait := r.behindOwnWrite(written); wait != 0 {
		t.Errorf("a cache that has our write waits %s, want 0", wait)
	}
	if len(r.ownWrites) != 0 {
		t.Errorf("entry kept after the cache caught up: %v", r.ownWrites)
	}
	r.rememberOwnWrite(written)
	r.forgetOwnWrite("a")
	if len(r.ownWrites) != 0 {
		t.Errorf("entry kept after the request was deleted: %v", r.ownWrites)
	}
}

func TestFinishedAndLastChange(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	csr := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}}
	if finished(csr) || !lastChange(csr).Equal(created) {
		t.Fatal("a new request is finished or changed after its creation")
	}
	approvedAt := created.Add(time.Minute)
	csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, LastUpdateTime: metav1.NewTime(approvedAt)}}
	if finished(csr) {
		t.Error("an approved request without a certificate is finished")
	}
	if !lastChange(csr).Equal(approvedAt) {
		t.Errorf("lastChange = %s, want the approval time", lastChange(csr))
	}
	csr.Status.Certificate = []byte("x")
	if !finished(csr) {
		t.Error("an issued request is not finished")
	}
	denied := &certificatesv1.CertificateSigningRequest{Status: certificatesv1.CertificateSigningRequestStatus{Conditions: []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue}}}}
	if !finished(denied) {
		t.Error("a denied request is not finished")
	}
}

func TestEventsGoOnlyToPodsOnTheRequestersNode(t *testing.T) {
	const driver = "system:serviceaccount:certmint:certmint-driver"
	fromNodeA := func() *certificatesv1.CertificateSigningRequest {
		return &certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{
			Username: driver,
			Extra:    map[string]certificatesv1.ExtraValue{request.ExtraNodeName: {"node-a"}},
		}}
	}
	podOn := func(node string) *corev1.Pod { return &corev1.Pod{Spec: corev1.PodSpec{NodeName: node}} }
	tests := []struct {
		name string
		pod  *corev1.Pod
		csr  func() *certificatesv1.CertificateSigningRequest
		want bool
	}{
		{"the driver's request tells a pod on its node", podOn("node-a"), fromNodeA, true},
		{"the driver's request does not tell a pod on another node", podOn("node-b"), fromNodeA, false},
		{"an unscheduled pod is not told", podOn(""), fromNodeA, false},
		{"there is no one to tell without a pod", nil, fromNodeA, false},
		{"another requester's request tells no pod", podOn("node-a"), func() *certificatesv1.CertificateSigningRequest {
			c := fromNodeA()
			c.Spec.Username = "system:serviceaccount:default:evil"
			return c
		}, false},
		{"a request without a node tells no pod", podOn(""), func() *certificatesv1.CertificateSigningRequest {
			c := fromNodeA()
			c.Spec.Extra = nil
			return c
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mayTell(tt.pod, tt.csr(), driver); got != tt.want {
				t.Errorf("mayTell = %v, want %v", got, tt.want)
			}
		})
	}
}

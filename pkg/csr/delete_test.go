package csr

import (
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// A deletion the watch missed reaches the handler as a tombstone carrying
// the last state the informer knew.
func TestADeletionSeenAsATombstoneEndsTheWait(t *testing.T) {
	issued := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "certmint-issued"},
		Status: certificatesv1.CertificateSigningRequestStatus{
			Conditions:  []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}},
			Certificate: []byte("chain"),
		},
	}
	cases := []struct {
		name      string
		tombstone cache.DeletedFinalStateUnknown
		wantChain string
		wantErr   string
	}{
		{"a pending request fails", cache.DeletedFinalStateUnknown{Key: "certmint-pending", Obj: &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: "certmint-pending"}}},
			"", "CertificateSigningRequest certmint-pending was deleted before it was issued"},
		{"an issued request whose update was missed still gives its chain", cache.DeletedFinalStateUnknown{Key: issued.Name, Obj: issued}, "chain", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Options{Client: fake.NewClientset().CertificatesV1().CertificateSigningRequests(), NodeName: "node-1"})
			if err != nil {
				t.Fatal(err)
			}
			ch := make(chan outcome, 1)
			c.waiters[tc.tombstone.Key] = ch
			c.observeDeletion(tc.tombstone)
			select {
			case out := <-ch:
				if string(out.chain) != tc.wantChain || (out.err == nil) != (tc.wantErr == "") || (out.err != nil && out.err.Error() != tc.wantErr) {
					t.Fatalf("outcome = %q, %v; want %q, %q", out.chain, out.err, tc.wantChain, tc.wantErr)
				}
			default:
				t.Fatal("the waiter got no outcome")
			}
		})
	}
}

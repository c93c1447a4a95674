package csr_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/pkg/csr"
	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/request"
)

func newRequest(t *testing.T) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return &certificatesv1.CertificateSigningRequest{
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: "issuers.certmint.io/ns.ca",
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature},
		},
	}
}

func start(t *testing.T, decide func(*certificatesv1.CertificateSigningRequest) csrtest.Decision) (*csr.Client, *fake.Clientset) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	client := fake.NewClientset()
	signer, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	signer.Decide = decide
	t.Cleanup(func() {
		for _, err := range signer.Failures() {
			t.Error(err)
		}
	})
	if err := signer.Start(ctx, client); err != nil {
		t.Fatal(err)
	}
	c, err := csr.New(csr.Options{Client: csrtest.CSRs(client), NodeName: "node-1", Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), c.HasSynced) {
		t.Fatal("watch not established")
	}
	return c, client
}

func TestRequestReturnsTheIssuedChainAndDeletesTheRequest(t *testing.T) {
	c, client := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	issued, err := c.Request(ctx, newRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(issued.Chain); block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("chain = %q", issued.Chain)
	}
	waitDeleted(t, client)
}

func TestRequestLabelsTheRequestWithTheNode(t *testing.T) {
	seen := make(chan map[string]string, 1)
	c, _ := start(t, func(r *certificatesv1.CertificateSigningRequest) csrtest.Decision {
		seen <- r.Labels
		return csrtest.Decision{}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Request(ctx, newRequest(t)); err != nil {
		t.Fatal(err)
	}
	l := <-seen
	if l[request.LabelNode] != "node-1" || l[request.LabelManagedBy] != request.DriverName {
		t.Fatalf("labels = %v", l)
	}
}

func TestRequestReturnsTheDenialReason(t *testing.T) {
	c, client := start(t, func(*certificatesv1.CertificateSigningRequest) csrtest.Decision {
		return csrtest.Decision{Deny: true, Reason: "PolicyViolation", Message: "dns name evil.example.com is not allowed"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Request(ctx, newRequest(t))
	var denied *csr.DeniedError
	if !errors.As(err, &denied) || denied.Reason != "PolicyViolation" {
		t.Fatalf("err = %v, want a denial", err)
	}
	if got := err.Error(); got != "CertificateSigningRequest "+denied.Name+" was denied: PolicyViolation: dns name evil.example.com is not allowed" {
		t.Fatalf("message = %q", got)
	}
	waitDeleted(t, client)
}

func TestRequestGivesUpWithItsContextAndDeletesTheRequest(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	c, client := start(t, func(*certificatesv1.CertificateSigningRequest) csrtest.Decision {
		<-block // the signer never answers in time
		return csrtest.Decision{Deny: true}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Request(ctx, newRequest(t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	waitDeleted(t, client)
}

func TestRequestFailsAtOnceWhenSomeoneDeletesTheRequest(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	c, client := start(t, func(*certificatesv1.CertificateSigningRequest) csrtest.Decision {
		<-block // the signer never answers
		return csrtest.Decision{Deny: true}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, newRequest(t))
		done <- err
	}()
	csrs := client.CertificatesV1().CertificateSigningRequests()
	var name string
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := csrs.List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) == 0 {
			return false, err
		}
		name = list.Items[0].Name
		return true, nil
	})
	if err != nil {
		t.Fatalf("the request was not created: %v", err)
	}
	if err := csrs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if want := "CertificateSigningRequest " + name + " was deleted before it was issued"; err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Request still waits for a deleted request")
	}
}

// waitDeleted waits until no request is left; deletion runs in the
// background after Request returns.
func waitDeleted(t *testing.T, client *fake.Clientset) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 0, err
	})
	if err != nil {
		t.Fatalf("requests were not deleted: %v", err)
	}
}

func TestDeleteLeftoversDeletesOnlyThisNodesRequests(t *testing.T) {
	client := fake.NewClientset()
	csrs := client.CertificatesV1().CertificateSigningRequests()
	for name, node := range map[string]string{"left-1": "node-1", "left-2": "node-1", "other-node": "node-2"} {
		r := newRequest(t)
		r.Name = name
		r.Labels = map[string]string{request.LabelManagedBy: request.DriverName, request.LabelNode: node}
		if _, err := csrs.Create(context.Background(), r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	notOurs := newRequest(t)
	notOurs.Name = "kubelet-serving"
	if _, err := csrs.Create(context.Background(), notOurs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := csr.New(csr.Options{Client: csrtest.CSRs(client), NodeName: "node-1"})
	if err != nil {
		t.Fatal(err)
	}

	if err := c.DeleteLeftovers(context.Background()); err != nil {
		t.Fatal(err)
	}
	list, err := csrs.List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, r := range list.Items {
		left = append(left, r.Name)
	}
	slices.Sort(left)
	if !slices.Equal(left, []string{"kubelet-serving", "other-node"}) {
		t.Errorf("left %v, want the other node's request and the one not made by a driver", left)
	}
}

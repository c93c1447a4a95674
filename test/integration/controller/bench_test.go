package controller_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// BenchmarkIssuance measures certificates issued per second end to end, as
// the driver sees it: create a request, wait for its certificate, delete it.
// That is four API writes per issuance (create, approval, status, delete).
//
//	go test ./test/integration/controller -run '^$' -bench Issuance -benchtime 1000x
func BenchmarkIssuance(b *testing.B) {
	requireEnv(b)
	ctx := b.Context()
	ns := uniqueName("bench")
	ctl := startController(b, ns)
	it := newIssuance(b, ns, nil)

	// One watch tells every waiting worker about its request.
	list, err := env.kube.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	w, err := env.kube.CertificatesV1().CertificateSigningRequests().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	waiting := map[string]chan struct{}{}
	issuedNames := map[string]bool{}
	notify := func(name string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		ch, ok := waiting[name]
		if !ok {
			ch = make(chan struct{})
			waiting[name] = ch
		}
		return ch
	}
	go func() {
		for ev := range w.ResultChan() {
			csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
			if !ok || ev.Type == watch.Deleted || !issued(csr) {
				continue
			}
			ch := notify(csr.Name)
			mu.Lock()
			if !issuedNames[csr.Name] {
				issuedNames[csr.Name] = true
				close(ch)
			}
			mu.Unlock()
		}
	}()

	const workers = 32
	var next atomic.Int64
	var failures atomic.Int64
	csrs := make([]*certificatesv1.CertificateSigningRequest, b.N)
	for i := range csrs {
		csrs[i] = newCSR(b, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{"web." + ns + ".svc"}})
		csrs[i].GenerateName, csrs[i].Name = "", fmt.Sprintf("%s-%d", ns, i)
	}

	cpuBefore, err := ctl.cpuTime()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				csr := csrs[i]
				done := notify(csr.Name)
				if _, err := env.driverA.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{}); err != nil {
					failures.Add(1)
					continue
				}
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					failures.Add(1)
					continue
				}
				_ = env.driverA.CertificatesV1().CertificateSigningRequests().Delete(context.WithoutCancel(ctx), csr.Name, metav1.DeleteOptions{})
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed or timed out", n, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "csrs/s")
	// The controller's own cost, which the machine's load does not change.
	if cpuAfter, err := ctl.cpuTime(); err == nil {
		b.ReportMetric(float64((cpuAfter-cpuBefore).Microseconds())/float64(b.N), "controller-cpu-µs/csr")
	}
}

package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/stack"
)

const (
	// certificateNS holds the Certificates and their Secrets, and nothing
	// else: its Secrets are the ones the harness watches and deletes.
	certificateNS = "bench-certificates"
	// certificateIssuer is a CA ClusterIssuer of its own, whose policy
	// grants each namespace names under its own subdomain: the default
	// policy grants a Certificate no name, and the driver's issuer keeps
	// the default policy its publishes are measured with.
	certificateIssuer = "bench-ca-certificates"
	certificateDomain = "example.test"
	certificateWarmup = 10
	// certificateWait bounds one issuance, and settleTimeout the wait for
	// the controller to finish what an issuance set off.
	certificateWait = 30 * time.Second
	settleTimeout   = 20 * time.Second
	// settleQuiet is how long the controller must reconcile no Certificate
	// to count as done: longer than the 1 s it waits after a conflict.
	settleQuiet = 2 * time.Second
	// controllerName is the Certificate controller's name in the
	// controller's metrics.
	controllerName = "certificate"
)

var certificatesResource = v1alpha1.SchemeGroupVersion.WithResource("certificates")

// certificateResults are the figures of the Certificate runs.
type certificateResults struct {
	serial, concurrent certificateRun
	// serialCost and concurrentCost are what each run cost, per issuance,
	// counted until the controller had settled after it.
	serialCost, concurrentCost certificateCost
	// controllerRSS is the controller's resident set before the first
	// Certificate, once all were issued, and after all were deleted.
	controllerRSS struct{ before, issued, deleted stack.Memory }
	// workers is how many Certificates the controller reconciles at once.
	workers float64
	cleanup certificateCleanup
}

// certificateRun is one run of issuances with a fixed number in flight.
type certificateRun struct {
	inflight int
	// toSecret is from just before the create call to the moment the
	// harness's watch saw the Secret hold a certificate for its key;
	// toReady to the moment it saw the Certificate Ready. Both sorted.
	toSecret, toReady []time.Duration
	wall              time.Duration
}

func (r certificateRun) perSecond() float64 { return float64(len(r.toSecret)) / r.wall.Seconds() }

// certificateCleanup is how the Certificates and their Secrets went away.
type certificateCleanup struct {
	certificates, secrets int // deleted
	// From the delete call until the harness's watch saw none left.
	certificatesTook, secretsTook time.Duration
	// Left after the deletions and a quiet period: a Secret re-created by
	// a controller that still saw its Certificate would show here.
	leftCertificates, leftSecrets int
}

// runCertificateBench issues Certificates one at a time and then
// opts.certificatesInflight at a time, on the control plane e, and deletes
// them and their Secrets afterwards.
func runCertificateBench(ctx context.Context, e *env, opts options) (*certificateResults, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(opts.certificates)*100*time.Millisecond)
	defer cancel()
	res := &certificateResults{}
	var err error
	if res.controllerRSS.before, err = e.Controller.RSS(); err != nil {
		return nil, err
	}
	logf("creating the namespace %s and the ClusterIssuer %s for Certificates", certificateNS, certificateIssuer)
	if _, err := e.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: certificateNS}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	policy := map[string]any{"allowedDNSNames": []any{"*.${POD_NAMESPACE}." + certificateDomain}}
	if _, err := deploy.CAClusterIssuerWithPolicy(ctx, e.CP.Config, certificateIssuer, policy); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(e.CP.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	certs := dyn.Resource(certificatesResource).Namespace(certificateNS)
	w, err := watchIssuances(ctx, e, dyn)
	if err != nil {
		return nil, err
	}
	apiMetrics, err := newAPIServerMetrics(e.CP.Config)
	if err != nil {
		return nil, err
	}
	create := func(ctx context.Context, name string) error {
		obj, err := certificateObject(name)
		if err != nil {
			return err
		}
		_, err = certs.Create(ctx, obj, metav1.CreateOptions{})
		return err
	}

	logf("warming up: %d Certificates", certificateWarmup)
	if _, err := issueAll(ctx, w, create, "warmup", certificateWarmup, 1); err != nil {
		return nil, err
	}
	logf("issuing %d Certificates one at a time", opts.certificates)
	if res.serial, res.serialCost, err = measureIssuances(ctx, e, apiMetrics, w, create, "serial", opts.certificates, 1); err != nil {
		return nil, err
	}
	logf("issuing %d Certificates, %d in flight", opts.certificates, opts.certificatesInflight)
	if res.concurrent, res.concurrentCost, err = measureIssuances(ctx, e, apiMetrics, w, create, "concurrent", opts.certificates, opts.certificatesInflight); err != nil {
		return nil, err
	}
	if err := apiMetrics.save(ctx, filepath.Join(e.logDir, "kube-apiserver-metrics-after-certificates.txt")); err != nil {
		return nil, err
	}
	if err := saveURL(ctx, e.ControllerMetrics, filepath.Join(e.logDir, "controller-metrics-after-certificates.txt")); err != nil {
		return nil, err
	}

	if res.controllerRSS.issued, err = e.Controller.RSS(); err != nil {
		return nil, err
	}
	ctrl, err := readURL(ctx, e.ControllerMetrics)
	if err != nil {
		return nil, err
	}
	res.workers = metricSum(ctrl, "controller_runtime_max_concurrent_reconciles", map[string]string{"controller": controllerName})
	total := certificateWarmup + 2*opts.certificates
	logf("deleting %d Certificates and their Secrets", total)
	if res.cleanup, err = deleteCertificates(ctx, e, certs, w); err != nil {
		return nil, err
	}
	if res.cleanup.certificates != total || res.cleanup.secrets != total {
		return nil, fmt.Errorf("deleted %d Certificates and %d Secrets, not %d of each", res.cleanup.certificates, res.cleanup.secrets, total)
	}
	if res.controllerRSS.deleted, err = e.Controller.RSS(); err != nil {
		return nil, err
	}
	return res, nil
}

// measureIssuances issues n Certificates with inflight at a time and counts
// what they cost, from before the first create until the controller has
// settled after the last.
func measureIssuances(ctx context.Context, e *env, m *apiServerMetrics, w *issuanceWatch, create func(context.Context, string) error, prefix string, n, inflight int) (certificateRun, certificateCost, error) {
	if err := waitSettled(ctx, e); err != nil {
		return certificateRun{}, certificateCost{}, err
	}
	before, err := certificateCountersNow(ctx, e, m)
	if err != nil {
		return certificateRun{}, certificateCost{}, err
	}
	run, err := issueAll(ctx, w, create, prefix, n, inflight)
	if err != nil {
		return certificateRun{}, certificateCost{}, err
	}
	if err := waitSettled(ctx, e); err != nil {
		return certificateRun{}, certificateCost{}, err
	}
	after, err := certificateCountersNow(ctx, e, m)
	if err != nil {
		return certificateRun{}, certificateCost{}, err
	}
	return run, after.since(before, float64(n)), nil
}

// issueAll creates n Certificates named prefix-0 ... with inflight at a
// time, each after the last one its worker created was Ready.
func issueAll(ctx context.Context, w *issuanceWatch, create func(context.Context, string) error, prefix string, n, inflight int) (certificateRun, error) {
	toSecret, toReady := make([]time.Duration, n), make([]time.Duration, n)
	start := time.Now()
	err := parallel(ctx, inflight, n, func(ctx context.Context, i int) error {
		var err error
		toSecret[i], toReady[i], err = w.issue(ctx, create, prefix+"-"+strconv.Itoa(i))
		return err
	})
	wall := time.Since(start)
	if err != nil {
		return certificateRun{}, err
	}
	slices.Sort(toSecret)
	slices.Sort(toReady)
	return certificateRun{inflight: inflight, toSecret: toSecret, toReady: toReady, wall: wall}, nil
}

// certificateObject is the Certificate name: one DNS name in the subdomain
// the issuer grants the namespace, a Secret of its own.
func certificateObject(name string) (*unstructured.Unstructured, error) {
	cert := &v1alpha1.Certificate{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Certificate"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: certificateNS},
		Spec: v1alpha1.CertificateSpec{
			SecretName: secretName(name),
			IssuerRef:  v1alpha1.IssuerReference{Kind: string(request.KindClusterIssuer), Name: certificateIssuer},
			DNSNames:   []string{dnsName(name)},
		},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cert)
	if err != nil {
		return nil, err
	}
	unstructured.RemoveNestedField(obj, "status")
	return &unstructured.Unstructured{Object: obj}, nil
}

func secretName(certificate string) string { return certificate + "-tls" }

func dnsName(certificate string) string {
	return certificate + "." + certificateNS + "." + certificateDomain
}

// issuanceWatch follows the namespace's Secrets and Certificates through
// informers and tells each issuance waiting on them when its Secret first
// held a usable certificate and when its Certificate was first Ready.
type issuanceWatch struct {
	secrets, certificates cache.SharedIndexInformer

	mu sync.Mutex
	// byCertificate and bySecret hold the same issuances, by the names of
	// their Certificate and Secret.
	byCertificate, bySecret map[string]*issuance
}

// issuance is one Certificate on its way to Ready.
type issuance struct {
	certificate, secret, dnsName string
	// secretAt and readyAt are set before secretSeen and ready are closed.
	secretAt, readyAt time.Time
	secretSeen, ready chan struct{}
	// problem is why the Secret last seen was not usable yet.
	problem string
}

func watchIssuances(ctx context.Context, e *env, dyn dynamic.Interface) (*issuanceWatch, error) {
	w := &issuanceWatch{
		secrets:       coreinformers.NewSecretInformer(e.Admin, certificateNS, 0, cache.Indexers{}),
		certificates:  dynamicinformer.NewFilteredDynamicInformer(dyn, certificatesResource, certificateNS, 0, cache.Indexers{}, nil).Informer(),
		byCertificate: map[string]*issuance{},
		bySecret:      map[string]*issuance{},
	}
	for _, watched := range []struct {
		informer cache.SharedIndexInformer
		observe  func(any)
	}{{w.secrets, w.observeSecret}, {w.certificates, w.observeCertificate}} {
		if _, err := watched.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    watched.observe,
			UpdateFunc: func(_, obj any) { watched.observe(obj) },
		}); err != nil {
			return nil, err
		}
		go watched.informer.RunWithContext(ctx)
	}
	if !cache.WaitForCacheSync(ctx.Done(), w.secrets.HasSynced, w.certificates.HasSynced) {
		return nil, fmt.Errorf("watching Secrets and Certificates: %w", ctx.Err())
	}
	return w, nil
}

// issue creates the Certificate name through create and waits until its
// Secret holds a certificate for its key and it is Ready. The times are
// from just before the create call.
func (w *issuanceWatch) issue(ctx context.Context, create func(context.Context, string) error, name string) (toSecret, toReady time.Duration, err error) {
	is := &issuance{certificate: name, secret: secretName(name), dnsName: dnsName(name),
		secretSeen: make(chan struct{}), ready: make(chan struct{}), problem: "not seen"}
	w.mu.Lock()
	w.byCertificate[is.certificate], w.bySecret[is.secret] = is, is
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.byCertificate, is.certificate)
		delete(w.bySecret, is.secret)
		w.mu.Unlock()
	}()
	start := time.Now()
	if err := create(ctx, name); err != nil {
		return 0, 0, fmt.Errorf("creating Certificate %s: %w", name, err)
	}
	timeout := time.NewTimer(certificateWait)
	defer timeout.Stop()
	for _, ch := range []chan struct{}{is.secretSeen, is.ready} {
		select {
		case <-ch:
		case <-timeout.C:
			return 0, 0, fmt.Errorf("certificate %s not issued after %s: %s", name, certificateWait, w.describe(is))
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("certificate %s: %w; %s", name, ctx.Err(), w.describe(is))
		}
	}
	return is.secretAt.Sub(start), is.readyAt.Sub(start), nil
}

func (w *issuanceWatch) observeSecret(obj any) {
	at := time.Now()
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	w.mu.Lock()
	is := w.bySecret[secret.Name]
	done := is == nil || !is.secretAt.IsZero()
	w.mu.Unlock()
	if done {
		return
	}
	err := checkSecret(secret, is.dnsName, at)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		is.problem = err.Error()
		return
	}
	is.secretAt = at
	close(is.secretSeen)
}

func (w *issuanceWatch) observeCertificate(obj any) {
	at := time.Now()
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	w.mu.Lock()
	is := w.byCertificate[u.GetName()]
	done := is == nil || !is.readyAt.IsZero()
	w.mu.Unlock()
	if done {
		return
	}
	var cert v1alpha1.Certificate
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cert); err != nil || !isIssued(&cert) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	is.readyAt = at
	close(is.ready)
}

// describe says how far an issuance got, for an error.
func (w *issuanceWatch) describe(is *issuance) string {
	w.mu.Lock()
	problem := is.problem
	w.mu.Unlock()
	state := "not seen"
	if obj, ok, _ := w.certificates.GetStore().GetByKey(certificateNS + "/" + is.certificate); ok {
		var cert v1alpha1.Certificate
		if u, isU := obj.(*unstructured.Unstructured); isU && runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cert) == nil {
			state = "no Ready condition"
			if c := meta.FindStatusCondition(cert.Status.Conditions, v1alpha1.ConditionReady); c != nil {
				state = fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
			}
		}
	}
	return fmt.Sprintf("Secret %s: %s; Certificate: %s", is.secret, problem, state)
}

// checkSecret says why secret does not yet hold a usable certificate for
// dnsName at now, or nil when it does: a key, a chain for that key and
// name that verifies against the Secret's own ca.crt.
func checkSecret(secret *corev1.Secret, dnsName string, now time.Time) error {
	if secret.Type != corev1.SecretTypeTLS {
		return fmt.Errorf("type %s, not %s", secret.Type, corev1.SecretTypeTLS)
	}
	key, err := pki.ParsePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return fmt.Errorf("%s: %w", corev1.TLSPrivateKeyKey, err)
	}
	chain, err := pki.ParseCertificates(secret.Data[corev1.TLSCertKey])
	if err != nil {
		return fmt.Errorf("%s: %w", corev1.TLSCertKey, err)
	}
	if len(chain) == 0 {
		return fmt.Errorf("%s holds no certificate", corev1.TLSCertKey)
	}
	anchors, err := pki.ParseCertificates(secret.Data["ca.crt"])
	if err != nil {
		return fmt.Errorf("ca.crt: %w", err)
	}
	if len(anchors) == 0 {
		return errors.New("ca.crt holds no certificate")
	}
	leaf := chain[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, key.Public()) {
		return errors.New("the certificate is not for the key")
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range anchors {
		roots.AddCert(c)
	}
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName: dnsName, Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("the certificate does not verify for %s against ca.crt: %w", dnsName, err)
	}
	return nil
}

// isIssued reports whether cert's status says it is Ready with a
// certificate issued for its current spec.
func isIssued(cert *v1alpha1.Certificate) bool {
	c := meta.FindStatusCondition(cert.Status.Conditions, v1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == cert.Generation && cert.Status.Revision > 0
}

// certificateCounters are the counters an issuance moves, read at one time.
type certificateCounters struct {
	api      apiCounts
	requests requestStats
	// Of the controller's Certificate controller: reconciles, the time in
	// them and in its work queue; and the time signing (any signer).
	reconciles, reconcileSeconds, queueSeconds, signSeconds float64
	cpu                                                     [4]time.Duration
}

// certificateCost is what a run of issuances cost, per issuance.
type certificateCost struct {
	n          float64
	api        apiCounts // totals over the run
	requests   requestStats
	reconciles float64
	// reconcile, queue and sign are means per issuance, over every
	// reconcile of it.
	reconcile, queue, sign time.Duration
	// cpu is the CPU time per issuance of the driver (idle), the
	// controller, kube-apiserver and etcd.
	cpu [4]time.Duration
}

func certificateCountersNow(ctx context.Context, e *env, m *apiServerMetrics) (certificateCounters, error) {
	var c certificateCounters
	c.cpu = e.CPUTimes()
	body, err := m.scrape(ctx)
	if err != nil {
		return c, err
	}
	c.api, c.requests = parseCounts(body), parseRequestStats(body)
	ctrl, err := readURL(ctx, e.ControllerMetrics)
	if err != nil {
		return c, err
	}
	ours := map[string]string{"controller": controllerName}
	c.reconciles = metricSum(ctrl, "controller_runtime_reconcile_total", ours)
	c.reconcileSeconds = metricSum(ctrl, "controller_runtime_reconcile_time_seconds_sum", ours)
	c.queueSeconds = metricSum(ctrl, "workqueue_queue_duration_seconds_sum", map[string]string{"name": controllerName})
	c.signSeconds = metricSum(ctrl, "certmint_sign_duration_seconds_sum", nil)
	return c, nil
}

func (c certificateCounters) since(start certificateCounters, n float64) certificateCost {
	per := func(seconds float64) time.Duration { return time.Duration(seconds / n * float64(time.Second)) }
	cost := certificateCost{
		n:          n,
		api:        c.api.sub(start.api),
		requests:   c.requests.since(start.requests),
		reconciles: (c.reconciles - start.reconciles) / n,
		reconcile:  per(c.reconcileSeconds - start.reconcileSeconds),
		queue:      per(c.queueSeconds - start.queueSeconds),
		sign:       per(c.signSeconds - start.signSeconds),
	}
	for i := range c.cpu {
		cost.cpu[i] = (c.cpu[i] - start.cpu[i]) / time.Duration(n)
	}
	return cost
}

// waitSettled waits until the Certificate controller has reconciled
// nothing for settleQuiet: the Secret it wrote and its own status write
// wake a Certificate again after it is Ready, and a conflict retries a
// second later. It gives up quietly after settleTimeout, since the figures
// are only an upper bound then.
func waitSettled(ctx context.Context, e *env) error {
	ours := map[string]string{"controller": controllerName}
	deadline := time.Now().Add(settleTimeout)
	last, lastChange := -1.0, time.Now()
	for {
		body, err := readURL(ctx, e.ControllerMetrics)
		if err != nil {
			return err
		}
		n := metricSum(body, "controller_runtime_reconcile_total", ours)
		busy := metricSum(body, "controller_runtime_active_workers", ours) > 0 || metricSum(body, "workqueue_depth", map[string]string{"name": controllerName}) > 0
		if n != last || busy {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) >= settleQuiet {
			return nil
		}
		if time.Now().After(deadline) {
			logf("the Certificate controller was still busy after %s", settleTimeout)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// deleteCertificates deletes every Certificate of the namespace, then,
// once the controller has seen them go, their Secrets (a Certificate does
// not own its Secret), and counts what is left after the controller
// settled again.
func deleteCertificates(ctx context.Context, e *env, certs dynamic.ResourceInterface, w *issuanceWatch) (certificateCleanup, error) {
	var c certificateCleanup
	c.certificates, c.secrets = len(w.certificates.GetStore().ListKeys()), len(w.secrets.GetStore().ListKeys())
	start := time.Now()
	if err := certs.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return c, fmt.Errorf("deleting Certificates: %w", err)
	}
	if err := waitEmpty(ctx, w.certificates.GetStore(), "Certificates"); err != nil {
		return c, err
	}
	c.certificatesTook = time.Since(start)
	// Deleting a Secret whose Certificate the controller still sees would
	// have it issued again.
	if err := waitSettled(ctx, e); err != nil {
		return c, err
	}
	start = time.Now()
	if err := e.Admin.CoreV1().Secrets(certificateNS).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return c, fmt.Errorf("deleting Secrets: %w", err)
	}
	if err := waitEmpty(ctx, w.secrets.GetStore(), "Secrets"); err != nil {
		return c, err
	}
	c.secretsTook = time.Since(start)
	if err := waitSettled(ctx, e); err != nil {
		return c, err
	}
	left, err := certs.List(ctx, metav1.ListOptions{})
	if err != nil {
		return c, err
	}
	secrets, err := e.Admin.CoreV1().Secrets(certificateNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return c, err
	}
	c.leftCertificates, c.leftSecrets = len(left.Items), len(secrets.Items)
	return c, nil
}

// waitEmpty waits until an informer's store holds nothing.
func waitEmpty(ctx context.Context, store cache.Store, what string) error {
	deadline := time.Now().Add(cleanTimeout)
	for len(store.ListKeys()) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d %s left %s after deleting them", len(store.ListKeys()), what, cleanTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// metricSum sums the samples of the metric name in body, a Prometheus text
// exposition, whose labels include every one of want.
func metricSum(body []byte, name string, want map[string]string) float64 {
	var sum float64
samples:
	for _, line := range strings.Split(string(body), "\n") {
		n, labels, value, ok := parseSample(line)
		if !ok || n != name {
			continue
		}
		for k, v := range want {
			if labels[k] != v {
				continue samples
			}
		}
		sum += value
	}
	return sum
}

func readURL(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading %s: %s", url, resp.Status)
	}
	return body, nil
}

func saveURL(ctx context.Context, url, path string) error {
	body, err := readURL(ctx, url)
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

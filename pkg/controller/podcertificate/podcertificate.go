// Package podcertificate signs the kubelet's PodCertificateRequests
// addressed to certmint signers: the native path, where the kubelet makes
// the key, writes the files of a podCertificate projection and refreshes
// them, and certmint only decides and signs.
//
// It is one more request source on the path every source shares: node
// binding (policy.BindPodCertificate) establishes whom a request is for from
// the live pod, node and ServiceAccount; the request's annotations say what
// the certificate is to name; the issuer's policy (policy.Allow) judges it;
// and issuer.Registry.Issue signs it.
//
// The API lets a signer write a request's status once, and only to a final
// state, which the kubelet never retries. So only what the pod's spec or
// the issuer's policy decides is Denied, and only a backend's permanent
// error Failed; an issuer that is missing or not Ready leaves the request
// pending and is waited for.
package podcertificate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/controller/metrics"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// IndexSignerName indexes requests by spec.signerName so an issuer that
// becomes Ready finds the requests waiting for it.
const IndexSignerName = "spec.signerName"

// Reasons of the conditions and Events this controller writes besides the
// policy's and the signing path's.
const (
	ReasonIssued = "Issued"
	// ReasonIssuerNotFound: the request waits for its issuer.
	ReasonIssuerNotFound = "IssuerNotFound"
	// ReasonIssuerCannotSign: the issuer's kind cannot sign without a
	// certificate request naming what it asks for (ACME).
	ReasonIssuerCannotSign = "IssuerCannotSignPodCertificates"
	// ReasonLifetime: the lifetime the request and the issuer allow is one
	// the API server refuses.
	ReasonLifetime = "LifetimeNotAllowed"
)

// DefaultWorkers is how many requests are handled at once by default.
const DefaultWorkers = 16

// Options configures the PodCertificateRequest controller.
type Options struct {
	// ClusterDomain and TrustDomain fill the policy templates of the same
	// names; TrustDomain also names the default SPIFFE ID. Required.
	ClusterDomain string
	TrustDomain   string
	// Registry signs for every kind of issuer spec. Required.
	Registry *issuer.Registry
	// Workers defaults to DefaultWorkers.
	Workers int
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Reconciler signs PodCertificateRequests.
type Reconciler struct {
	client   client.Client
	live     client.Reader
	recorder events.EventRecorder
	opts     Options
}

// SetupWithManager registers the PodCertificateRequest controller.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts Options) error {
	switch {
	case opts.ClusterDomain == "" || opts.TrustDomain == "":
		return errors.New("pod certificate controller: ClusterDomain and TrustDomain are required")
	case opts.Registry == nil:
		return errors.New("pod certificate controller: Registry is required")
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	r := &Reconciler{
		client:   mgr.GetClient(),
		live:     mgr.GetAPIReader(),
		recorder: mgr.GetEventRecorder("certmint-controller"),
		opts:     opts,
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &certificatesv1.PodCertificateRequest{}, IndexSignerName, func(o client.Object) []string {
		return []string{o.(*certificatesv1.PodCertificateRequest).Spec.SignerName}
	}); err != nil {
		return fmt.Errorf("indexing pod certificate requests by signer name: %w", err)
	}
	// Started with the others rather than on the first request, which
	// would otherwise wait for a full list.
	for _, o := range []client.Object{&corev1.Pod{}, metadataOf("Node"), metadataOf("ServiceAccount")} {
		if _, err := mgr.GetCache().GetInformer(ctx, o); err != nil {
			return fmt.Errorf("starting the %T informer: %w", o, err)
		}
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		pcr, ok := o.(*certificatesv1.PodCertificateRequest)
		if !ok {
			return false
		}
		_, ok = request.ParseSignerName(pcr.Spec.SignerName)
		return ok && !finished(pcr)
	})
	return builder.ControllerManagedBy(mgr).
		Named("podcertificaterequest").
		For(&certificatesv1.PodCertificateRequest{}, builder.WithPredicates(ours)).
		Watches(&v1alpha1.Issuer{}, handler.EnqueueRequestsFromMapFunc(r.requestsForIssuer)).
		Watches(&v1alpha1.ClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(r.requestsForIssuer)).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.Workers}).
		Complete(r)
}

// metadataOf is the metadata of a core kind, which is all binding reads of
// nodes and ServiceAccounts, so only that is cached.
func metadataOf(kind string) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind))
	return m
}

// requestsForIssuer wakes the pending requests for an issuer that is Ready.
func (r *Reconciler) requestsForIssuer(ctx context.Context, o client.Object) []reconcile.Request {
	iss, ok := o.(v1alpha1.GenericIssuer)
	if !ok || !issuer.IsReady(iss) {
		return nil
	}
	var list certificatesv1.PodCertificateRequestList
	if err := r.client.List(ctx, &list, client.MatchingFields{IndexSignerName: issuer.RefFor(iss).SignerName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing pod certificate requests for an issuer", logkeys.Issuer, issuer.RefFor(iss).String())
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if !finished(&list.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

// Reconcile decides a pending request and, when it may be issued, signs it,
// with one status write either way.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pcr certificatesv1.PodCertificateRequest
	if err := r.client.Get(ctx, req.NamespacedName, &pcr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	ref, ok := request.ParseSignerName(pcr.Spec.SignerName)
	if !ok || finished(&pcr) {
		return reconcile.Result{}, nil
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues(logkeys.SignerName, pcr.Spec.SignerName,
		logkeys.PodNamespace, pcr.Namespace, logkeys.PodName, pcr.Spec.PodName, logkeys.PodCertificateRequest, pcr.Name))

	f, err := r.gather(ctx, &pcr, ref, r.client)
	if err != nil {
		return reconcile.Result{}, err
	}
	s, certReq := decide(f)
	if s.podDependent {
		// The cache may not have seen a pod, node or ServiceAccount that
		// was just created or replaced; ask the API server before denying.
		if f, err = r.gather(ctx, &pcr, ref, r.live); err != nil {
			return reconcile.Result{}, err
		}
		s, certReq = decide(f)
	}
	if certReq != nil {
		start := r.opts.Clock.Now()
		res := r.opts.Registry.Issue(ctx, f.issuer, certReq.request)
		metrics.SignDuration.WithLabelValues(pcr.Spec.SignerName).Observe(r.opts.Clock.Since(start).Seconds())
		if res.Outcome == issuer.WaitForIssuer {
			log.FromContext(ctx).Info("issuer cannot sign yet", logkeys.Issuer, ref.String(), logkeys.Reason, res.Reason, logkeys.Message, res.Message)
		}
		s = signStep(&pcr, f.issuer, res, certReq.renewBefore)
	}
	return r.apply(ctx, &pcr, f.boundPod, s)
}

// facts is what the decision on a request depends on, as gathered from the
// cache or the API server.
type facts struct {
	source policy.PodCertificateSource
	ref    request.IssuerRef
	// issuer is nil when it does not exist; issuerNotFound then says so.
	issuer         v1alpha1.GenericIssuer
	issuerNotFound string
	// kind is the issuer's backend kind; nil when it selects none.
	kind                       *issuer.Kind
	clusterDomain, trustDomain string
	// boundPod is the pod, once binding has shown the request is its own:
	// only then may an Event about the request go on it.
	boundPod *corev1.Pod
}

// signing is an allowed request, ready for the signing path.
type signing struct {
	request     *issuer.Request
	renewBefore time.Duration
}

// step is what one pass does to a request: at most one status write, an
// Event on its pod, and when to look at it again.
type step struct {
	// condition is the final condition to write; nil writes none.
	condition *metav1.Condition
	// issued are the status fields of an Issued condition.
	issued *certificatesv1.PodCertificateRequestStatus
	event  *podEvent
	// result names the request's new state in the metric.
	result  string
	requeue time.Duration
	// podDependent marks a denial that a stale cache could explain.
	podDependent bool
	err          error
}

type podEvent struct {
	eventType, reason, action, note string
}

func final(t, reason, message string) *metav1.Condition {
	return &metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: reason, Message: message}
}

func denied(pcr *certificatesv1.PodCertificateRequest, reason, message string, tell bool) step {
	s := step{condition: final(certificatesv1.PodCertificateRequestConditionTypeDenied, reason, message), result: metrics.ResultDenied}
	if tell {
		s.event = &podEvent{corev1.EventTypeWarning, reason, "Deny", fmt.Sprintf("pod certificate request %s for signer %s denied: %s", pcr.Name, pcr.Spec.SignerName, message)}
	}
	return s
}

func waiting(pcr *certificatesv1.PodCertificateRequest, reason, message string) step {
	return step{requeue: issuer.IssuerWait,
		event: &podEvent{corev1.EventTypeWarning, reason, "Wait", fmt.Sprintf("pod certificate request %s waits: %s", pcr.Name, message)}}
}

// decide is what to do with a request given f; when it may be issued, it
// returns what the certificate is to say.
func decide(f facts) (step, *signing) {
	pcr := f.source.PCR
	b, d, ok := policy.BindPodCertificate(f.source)
	if !ok {
		s := denied(pcr, d.Reason, d.Message, false)
		s.podDependent = podDependent(d.Reason)
		return s, nil
	}
	switch {
	case f.issuer == nil:
		return waiting(pcr, ReasonIssuerNotFound, f.issuerNotFound), nil
	case f.kind != nil && f.kind.NeedsCSR:
		return denied(pcr, ReasonIssuerCannotSign, fmt.Sprintf("%s is an %s issuer, which cannot sign pod certificates: it validates the names of a certificate request the pod signs itself, and a podCertificate projection has none; use a CSI volume, or a CA or selfSigned issuer", f.ref, f.kind.Name), true), nil
	}
	pod := attributes.Pod{Name: b.Pod.Name, Namespace: b.Pod.Namespace, UID: string(b.Pod.UID), ServiceAccountName: b.Pod.Spec.ServiceAccountName}
	id, err := parseAnnotations(pcr.Spec.UnverifiedUserAnnotations, pod, f.trustDomain)
	if err != nil {
		return denied(pcr, certificatesv1.PodCertificateRequestConditionInvalidUserConfig, err.Error(), true), nil
	}
	stub, err := x509.ParseCertificateRequest(pcr.Spec.StubPKCS10Request)
	if err == nil {
		err = stub.CheckSignature()
	}
	if err != nil {
		return denied(pcr, policy.ReasonInvalidRequest, fmt.Sprintf("spec.stubPKCS10Request is not a valid certificate request: %v", err), true), nil
	}
	pol := f.issuer.GetSpec().Policy
	total, err := lifetime(maxExpiration(pcr), policy.MaxDuration(pol))
	if err != nil {
		return denied(pcr, ReasonLifetime, err.Error(), true), nil
	}
	// Only the key comes from the request: the kubelet's stub names
	// nothing, and whatever another requester put in it is ignored.
	req := &issuer.Request{
		DNSNames:  id.dnsNames,
		URIs:      id.uris,
		PublicKey: stub.PublicKey,
		Duration:  total - Backdate,
		Backdate:  Backdate,
		Usages:    usages(stub.PublicKeyAlgorithm),
	}
	d = policy.Allow(policy.Allowed{Issuer: f.ref, Policy: pol, ClusterDomain: f.clusterDomain, TrustDomain: f.trustDomain, Binding: b, Request: req})
	if !d.Allowed {
		reason := d.Reason
		if reason == policy.ReasonKeyTypeNotAllowed {
			// The reason the API defines, which tells the kubelet's user
			// to pick another keyType.
			reason = certificatesv1.PodCertificateRequestConditionUnsupportedKeyType
		}
		return denied(pcr, reason, d.Message, true), nil
	}
	if !issuer.IsReady(f.issuer) {
		return waiting(pcr, issuer.ReasonIssuerNotReady, fmt.Sprintf("%s is not Ready", f.ref)), nil
	}
	return step{}, &signing{request: req, renewBefore: id.renewBefore}
}

// usages are the key usages of a pod certificate: a TLS server's and
// client's, with key encipherment for RSA keys only, which alone use it.
func usages(alg x509.PublicKeyAlgorithm) []certificatesv1.KeyUsage {
	u := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature}
	if alg == x509.RSA {
		u = append(u, certificatesv1.UsageKeyEncipherment)
	}
	return append(u, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth)
}

// podDependent reports whether a denial for reason could be an artefact of a
// stale cache.
func podDependent(reason string) bool {
	switch reason {
	case policy.ReasonPodNotFound, policy.ReasonPodUIDMismatch, policy.ReasonNodeMismatch, policy.ReasonPodTerminated,
		policy.ReasonServiceAccountMismatch, policy.ReasonNotMounted:
		return true
	}
	return false
}

// signStep is what to do with pcr after the signing path's result res for
// iss; renewBefore is what its annotations asked for.
func signStep(pcr *certificatesv1.PodCertificateRequest, iss v1alpha1.GenericIssuer, res issuer.Result, renewBefore time.Duration) step {
	switch res.Outcome {
	case issuer.Issued:
		chain, err := pki.ParseCertificates(res.Chain)
		if err != nil {
			return step{err: fmt.Errorf("reading the signed chain: %w", err)}
		}
		leaf := chain[0]
		if err := checkIssued(leaf.NotBefore, leaf.NotAfter, maxExpiration(pcr)); err != nil {
			msg := err.Error()
			return step{condition: final(certificatesv1.PodCertificateRequestConditionTypeFailed, ReasonLifetime, msg), result: metrics.ResultFailed,
				event: &podEvent{corev1.EventTypeWarning, ReasonLifetime, "Sign", fmt.Sprintf("signing pod certificate request %s failed: %s", pcr.Name, msg)}}
		}
		return step{
			condition: final(certificatesv1.PodCertificateRequestConditionTypeIssued, ReasonIssued, fmt.Sprintf("signed by %s", issuer.RefFor(iss))),
			issued: &certificatesv1.PodCertificateRequestStatus{
				CertificateChain: string(res.Chain),
				NotBefore:        ptrTime(leaf.NotBefore),
				BeginRefreshAt:   ptrTime(refreshAt(leaf.NotBefore, leaf.NotAfter, renewBefore, pcr.UID)),
				NotAfter:         ptrTime(leaf.NotAfter),
			},
			result: metrics.ResultIssued,
		}
	case issuer.Fail:
		return step{condition: final(certificatesv1.PodCertificateRequestConditionTypeFailed, res.Reason, res.Message), result: metrics.ResultFailed,
			event: &podEvent{corev1.EventTypeWarning, res.Reason, "Sign", fmt.Sprintf("signing pod certificate request %s failed: %s", pcr.Name, res.Message)}}
	case issuer.Wait, issuer.WaitForIssuer:
		return step{requeue: res.RetryAfter}
	}
	return step{err: fmt.Errorf("signing: %w", res.Err)}
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

// apply carries out s on pcr: its one status write, its Event and its
// metric.
func (r *Reconciler) apply(ctx context.Context, pcr *certificatesv1.PodCertificateRequest, pod *corev1.Pod, s step) (reconcile.Result, error) {
	if s.err != nil {
		return reconcile.Result{}, s.err
	}
	logger := log.FromContext(ctx)
	if s.condition != nil {
		c := *s.condition
		c.LastTransitionTime = metav1.NewTime(r.opts.Clock.Now())
		c.ObservedGeneration = pcr.Generation
		if s.issued != nil {
			pcr.Status = *s.issued
		}
		pcr.Status.Conditions = []metav1.Condition{c}
		if err := r.client.Status().Update(ctx, pcr); err != nil {
			if apierrors.IsConflict(err) {
				// Changed since it was read, most likely by this
				// controller's own write that the cache has not shown yet;
				// its watch event brings the request back.
				return reconcile.Result{}, nil
			}
			return reconcile.Result{}, fmt.Errorf("writing the %s condition: %w", c.Type, err)
		}
		if s.issued != nil {
			logger.V(1).Info("pod certificate issued", logkeys.NotAfter, s.issued.NotAfter.Time, logkeys.BeginRefreshAt, s.issued.BeginRefreshAt.Time)
		} else {
			logger.Info("pod certificate request "+strings.ToLower(c.Type), logkeys.Reason, c.Reason, logkeys.Message, c.Message)
		}
	}
	if s.result != "" {
		metrics.PodCertificateRequests.WithLabelValues(pcr.Spec.SignerName, s.result).Inc()
	}
	if e := s.event; e != nil && pod != nil {
		r.recorder.Eventf(pod, pcr, e.eventType, e.reason, e.action, "%s", e.note)
	}
	if s.event != nil && pod == nil {
		logger.Info("pod certificate request not decided", logkeys.Reason, s.event.reason, logkeys.Message, s.event.note)
	}
	return reconcile.Result{RequeueAfter: s.requeue}, nil
}

// gather reads what the decision on pcr depends on from reader: its
// issuer, and the pod, node and ServiceAccount it names.
func (r *Reconciler) gather(ctx context.Context, pcr *certificatesv1.PodCertificateRequest, ref request.IssuerRef, reader client.Reader) (facts, error) {
	f := facts{
		source:        policy.PodCertificateSource{PCR: pcr},
		ref:           ref,
		clusterDomain: r.opts.ClusterDomain,
		trustDomain:   r.opts.TrustDomain,
	}
	spec := pcr.Spec
	if request.ValidatePodReference(pcr.Namespace, spec.PodName, "x") == nil {
		var pod corev1.Pod
		switch err := reader.Get(ctx, types.NamespacedName{Namespace: pcr.Namespace, Name: spec.PodName}, &pod); {
		case err == nil:
			f.source.Pod = &pod
		case !apierrors.IsNotFound(err):
			return facts{}, fmt.Errorf("reading pod %s/%s: %w", pcr.Namespace, spec.PodName, err)
		}
	}
	var err error
	if f.source.NodeUID, err = uidOf(ctx, reader, "Node", "", string(spec.NodeName)); err != nil {
		return facts{}, err
	}
	if f.source.ServiceAccountUID, err = uidOf(ctx, reader, "ServiceAccount", pcr.Namespace, spec.ServiceAccountName); err != nil {
		return facts{}, err
	}
	if _, _, ok := policy.BindPodCertificate(f.source); ok {
		f.boundPod = f.source.Pod
	}
	iss, err := issuer.Get(ctx, reader, ref)
	switch {
	case apierrors.IsNotFound(err):
		f.issuerNotFound = fmt.Sprintf("%s does not exist; create it, or correct the projection's signerName", ref)
	case err != nil:
		return facts{}, err
	default:
		f.issuer = iss
		if k, err := r.opts.Registry.For(iss.GetSpec()); err == nil {
			f.kind = k
		}
	}
	return f, nil
}

// uidOf is the UID of the named object of a core kind, or "" when it does
// not exist.
func uidOf(ctx context.Context, reader client.Reader, kind, namespace, name string) (types.UID, error) {
	if name == "" {
		return "", nil
	}
	m := metadataOf(kind)
	switch err := reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, m); {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("reading %s %s: %w", kind, name, err)
	}
	return m.UID, nil
}

// finished reports whether pcr has its one final condition.
func finished(pcr *certificatesv1.PodCertificateRequest) bool {
	return slices.ContainsFunc(pcr.Status.Conditions, func(c metav1.Condition) bool {
		switch c.Type {
		case certificatesv1.PodCertificateRequestConditionTypeIssued, certificatesv1.PodCertificateRequestConditionTypeDenied, certificatesv1.PodCertificateRequestConditionTypeFailed:
			return c.Status == metav1.ConditionTrue
		}
		return false
	})
}

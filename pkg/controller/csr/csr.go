// Package csr approves, denies, signs and cleans up the
// CertificateSigningRequests addressed to certmint signers.
//
// This is the request source of the CSI driver: node binding
// (policy.BindCSR) establishes whom a request is for, the issuer's policy
// (policy.Allow) what it may say, and the signing path every request
// source shares (issuer.Registry.Issue) signs it.
//
// One reconcile pass takes a new request all the way: decide (policy), write
// the approval, sign, write the certificate. That is two writes per
// issuance; the driver's create and delete make it four. Finished requests
// the driver did not delete are removed after a grace period.
package csr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
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

// ReasonIssuerNotFound is the denial reason of a request to an issuer that
// does not exist; the policy's and the signing path's reasons are the
// others.
const ReasonIssuerNotFound = "IssuerNotFound"

// Defaults for Options.
const (
	DefaultCleanupGrace  = time.Hour
	DefaultPendingMaxAge = 24 * time.Hour
	DefaultWorkers       = 16
)

// ownWriteWait bounds how long a reconcile trusts its own last write over a
// cache that has not caught up with it.
const ownWriteWait = 10 * time.Second

// Options configures the request controller.
type Options struct {
	// DriverNamespace and DriverServiceAccount name the only requester
	// approved. Required.
	DriverNamespace      string
	DriverServiceAccount string
	// DriverDaemonSet is the DaemonSet in DriverNamespace that must control
	// the requesting driver pod. Required.
	DriverDaemonSet string
	// ClusterDomain and TrustDomain fill the policy templates of the same
	// names. Required.
	ClusterDomain string
	TrustDomain   string
	// Registry signs for every kind of issuer spec. Required.
	Registry *issuer.Registry
	// CleanupGrace is how long issued, denied and failed requests are kept
	// before they are deleted. Defaults to DefaultCleanupGrace.
	CleanupGrace time.Duration
	// PendingMaxAge is how long a request may stay undecided before it is
	// deleted. Defaults to DefaultPendingMaxAge.
	PendingMaxAge time.Duration
	// Workers is how many requests are handled at once. Defaults to
	// DefaultWorkers.
	Workers int
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Reconciler handles certmint requests.
type Reconciler struct {
	client   client.Client
	live     client.Reader
	recorder events.EventRecorder
	opts     Options
	driver   string

	// ownWrites maps a request's name to this controller's last write to
	// it, so a reconcile running on a cache that has not seen that write yet
	// does not redo it.
	mu        sync.Mutex
	ownWrites map[string]ownWrite
}

type ownWrite struct {
	uid             types.UID
	resourceVersion string
	until           time.Time
}

// SetupWithManager registers the request controller.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts Options) error {
	switch {
	case opts.DriverNamespace == "" || opts.DriverServiceAccount == "":
		return errors.New("request controller: DriverNamespace and DriverServiceAccount are required")
	case opts.DriverDaemonSet == "":
		return errors.New("request controller: DriverDaemonSet is required")
	case opts.ClusterDomain == "" || opts.TrustDomain == "":
		return errors.New("request controller: ClusterDomain and TrustDomain are required")
	case opts.Registry == nil:
		return errors.New("request controller: Registry is required")
	}
	if opts.CleanupGrace <= 0 {
		opts.CleanupGrace = DefaultCleanupGrace
	}
	if opts.PendingMaxAge <= 0 {
		opts.PendingMaxAge = DefaultPendingMaxAge
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	r := &Reconciler{
		client:    mgr.GetClient(),
		live:      mgr.GetAPIReader(),
		recorder:  mgr.GetEventRecorder("certmint-controller"),
		opts:      opts,
		driver:    "system:serviceaccount:" + opts.DriverNamespace + ":" + opts.DriverServiceAccount,
		ownWrites: map[string]ownWrite{},
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &certificatesv1.CertificateSigningRequest{}, IndexSignerName, func(o client.Object) []string {
		return []string{o.(*certificatesv1.CertificateSigningRequest).Spec.SignerName}
	}); err != nil {
		return fmt.Errorf("indexing requests by signer name: %w", err)
	}
	// Start the pod informer with the others rather than on the first
	// request, which would otherwise wait for a full pod list.
	if _, err := mgr.GetCache().GetInformer(ctx, &corev1.Pod{}); err != nil {
		return fmt.Errorf("starting the pod informer: %w", err)
	}
	if _, err := mgr.GetCache().GetInformer(ctx, &appsv1.DaemonSet{}); err != nil {
		return fmt.Errorf("starting the DaemonSet informer: %w", err)
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		csr, ok := o.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			return false
		}
		_, ok = request.ParseSignerName(csr.Spec.SignerName)
		return ok
	})
	return builder.ControllerManagedBy(mgr).
		Named("certificatesigningrequest").
		For(&certificatesv1.CertificateSigningRequest{}, builder.WithPredicates(ours)).
		Watches(&v1alpha1.Issuer{}, handler.EnqueueRequestsFromMapFunc(r.requestsForIssuer)).
		Watches(&v1alpha1.ClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(r.requestsForIssuer)).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.Workers}).
		Complete(r)
}

// requestsForIssuer wakes the undecided or unsigned requests for an issuer,
// so they go on as soon as it is Ready.
func (r *Reconciler) requestsForIssuer(ctx context.Context, o client.Object) []reconcile.Request {
	iss, ok := o.(v1alpha1.GenericIssuer)
	if !ok || !issuer.IsReady(iss) {
		return nil
	}
	var list certificatesv1.CertificateSigningRequestList
	if err := r.client.List(ctx, &list, client.MatchingFields{IndexSignerName: issuer.RefFor(iss).SignerName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing requests for an issuer", logkeys.Issuer, issuer.RefFor(iss).String())
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if !finished(&list.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
		}
	}
	return out
}

// Reconcile takes one request as far as it can go: an approval and a
// certificate, one write each, or a denial or failure. What to do is
// computed first (decideStep, signStep) and applied in one place (apply).
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var csr certificatesv1.CertificateSigningRequest
	if err := r.client.Get(ctx, req.NamespacedName, &csr); err != nil {
		if apierrors.IsNotFound(err) {
			r.forgetOwnWrite(req.Name)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	ref, ok := request.ParseSignerName(csr.Spec.SignerName)
	if !ok {
		return reconcile.Result{}, nil
	}
	if wait := r.behindOwnWrite(&csr); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	ns, name, _ := policy.PodReference(&csr)
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues(logkeys.SignerName, csr.Spec.SignerName,
		logkeys.PodNamespace, ns, logkeys.PodName, name))

	approved := hasCondition(&csr, certificatesv1.CertificateApproved)
	switch {
	case finished(&csr):
		return r.cleanup(ctx, &csr, r.opts.CleanupGrace)
	case !approved && r.opts.Clock.Since(csr.CreationTimestamp.Time) > r.opts.PendingMaxAge:
		return r.cleanup(ctx, &csr, r.opts.PendingMaxAge)
	}
	// Whoever approved, the policy holds when signing: a request approved
	// by someone else (kubectl certificate approve), or by a pass of this
	// controller that stopped before it signed, is judged again. An
	// approval cannot widen what the issuer grants.
	iss, pod, d, certReq, err := r.evaluate(ctx, &csr, ref)
	if err != nil {
		return reconcile.Result{}, err
	}
	s := decideStep(csr.Name, approved, iss != nil && issuer.IsReady(iss), d, r.opts.CleanupGrace)
	if s.sign {
		if s.condition != nil {
			if _, err := r.apply(ctx, &csr, pod, s); err != nil {
				return reconcile.Result{}, err
			}
		}
		certReq.Duration = d.Duration
		certReq.Owner = &metav1.OwnerReference{
			APIVersion: certificatesv1.SchemeGroupVersion.String(), Kind: "CertificateSigningRequest", Name: csr.Name, UID: csr.UID,
		}
		certReq.Namespace = ns
		start := r.opts.Clock.Now()
		res := r.opts.Registry.Issue(ctx, iss, certReq)
		metrics.SignDuration.WithLabelValues(csr.Spec.SignerName).Observe(r.opts.Clock.Since(start).Seconds())
		if res.Outcome == issuer.WaitForIssuer {
			log.FromContext(ctx).Info("issuer cannot sign yet", logkeys.Issuer, ref.String(), logkeys.Reason, res.Reason, logkeys.Message, res.Message)
		}
		s = signStep(csr.Name, res, r.opts.CleanupGrace)
	}
	return r.apply(ctx, &csr, pod, s)
}

// step is what one pass does to a request: at most one write, an Event on
// its pod, and when to look at it again.
type step struct {
	// condition is added to the request: Approved or Denied through the
	// approval subresource, Failed through status. Nil adds none.
	condition *certificatesv1.CertificateSigningRequestCondition
	// certificate is written into status.certificate; nil writes none.
	certificate []byte
	// sign goes on to sign the request in the same pass, once condition
	// (an approval) is applied.
	sign bool
	// event is recorded on the request's pod; nil records none.
	event *podEvent
	// result names the request's new state in the requests metric.
	result  string
	requeue time.Duration
	// err is a transient error: the request is retried with backoff.
	err error
}

type podEvent struct {
	eventType, reason, action, note string
}

func withCondition(t certificatesv1.RequestConditionType, reason, message string) *certificatesv1.CertificateSigningRequestCondition {
	return &certificatesv1.CertificateSigningRequestCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message}
}

// decideStep is what to do with request name given whether it was approved
// before this pass, whether its issuer exists and is Ready, and the
// policy's decision now. grace is how long a finished request is kept.
func decideStep(name string, approvedBefore, issuerReady bool, d policy.Decision, grace time.Duration) step {
	switch {
	case !d.Allowed && approvedBefore:
		msg := "the request was approved, but the issuer's policy does not allow it: " + d.Message
		return step{condition: withCondition(certificatesv1.CertificateFailed, d.Reason, msg), result: metrics.ResultFailed, requeue: grace,
			event: &podEvent{corev1.EventTypeWarning, d.Reason, "Sign", fmt.Sprintf("signing certificate request %s failed: %s", name, msg)}}
	case !d.Allowed:
		return step{condition: withCondition(certificatesv1.CertificateDenied, d.Reason, d.Message), result: metrics.ResultDenied, requeue: grace,
			event: &podEvent{corev1.EventTypeWarning, d.Reason, "Deny", fmt.Sprintf("certificate request %s denied: %s", name, d.Message)}}
	case !issuerReady && approvedBefore:
		return step{requeue: issuer.IssuerWait}
	case !issuerReady:
		return step{requeue: issuer.IssuerWait,
			event: &podEvent{corev1.EventTypeWarning, issuer.ReasonIssuerNotReady, "Wait", fmt.Sprintf("the issuer is not Ready; the certificate request %s waits for it", name)}}
	case approvedBefore:
		return step{sign: true}
	}
	return step{condition: withCondition(certificatesv1.CertificateApproved, d.Reason, d.Message), result: metrics.ResultApproved, sign: true}
}

// signStep is what to do with request name after the signing path's
// result res.
func signStep(name string, res issuer.Result, grace time.Duration) step {
	switch res.Outcome {
	case issuer.Issued:
		return step{certificate: res.Chain, result: metrics.ResultSigned, requeue: grace}
	case issuer.Fail:
		return step{condition: withCondition(certificatesv1.CertificateFailed, res.Reason, res.Message), result: metrics.ResultFailed, requeue: grace,
			event: &podEvent{corev1.EventTypeWarning, res.Reason, "Sign", fmt.Sprintf("signing certificate request %s failed: %s", name, res.Message)}}
	case issuer.Wait, issuer.WaitForIssuer:
		return step{requeue: res.RetryAfter}
	}
	return step{err: fmt.Errorf("signing: %w", res.Err)}
}

// apply carries out s on csr: its one write, its Event and its metric.
func (r *Reconciler) apply(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, pod *corev1.Pod, s step) (reconcile.Result, error) {
	if s.err != nil {
		return reconcile.Result{}, s.err
	}
	logger := log.FromContext(ctx)
	switch {
	case s.condition != nil:
		c := *s.condition
		c.LastUpdateTime = metav1.NewTime(r.opts.Clock.Now())
		csr.Status.Conditions = append(csr.Status.Conditions, c)
		var err error
		if c.Type == certificatesv1.CertificateFailed {
			err = r.client.Status().Update(ctx, csr)
		} else {
			err = r.client.SubResource("approval").Update(ctx, csr)
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("writing the %s condition: %w", c.Type, err)
		}
		if c.Type != certificatesv1.CertificateApproved {
			logger.Info("certificate request "+strings.ToLower(string(c.Type)), logkeys.Reason, c.Reason, logkeys.Message, c.Message)
		}
	case s.certificate != nil:
		csr.Status.Certificate = s.certificate
		if err := r.client.Status().Update(ctx, csr); err != nil {
			return reconcile.Result{}, fmt.Errorf("writing the certificate: %w", err)
		}
	}
	if s.condition != nil || s.certificate != nil {
		r.rememberOwnWrite(csr)
	}
	if s.result != "" {
		metrics.Requests.WithLabelValues(csr.Spec.SignerName, s.result).Inc()
	}
	if e := s.event; e != nil {
		r.event(pod, csr, e.eventType, e.reason, e.action, "%s", e.note)
	}
	return reconcile.Result{RequeueAfter: s.requeue}, nil
}

// evaluate applies the policy to csr as its issuer and pods are now. It
// returns the issuer (nil when it does not exist, which is a denial), the
// pod the request is for if it exists, the decision, and, when it is
// allowed, what the certificate is to say.
func (r *Reconciler) evaluate(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, ref request.IssuerRef) (v1alpha1.GenericIssuer, *corev1.Pod, policy.Decision, *issuer.Request, error) {
	in := policy.Input{
		CSRSource: policy.CSRSource{
			DriverUsername:  r.driver,
			DriverNamespace: r.opts.DriverNamespace,
			DriverDaemonSet: r.opts.DriverDaemonSet,
			CSR:             csr,
		},
		ClusterDomain: r.opts.ClusterDomain,
		TrustDomain:   r.opts.TrustDomain,
		Issuer:        ref,
	}
	if parsed, err := pki.ParseCertificateRequest(csr.Spec.Request); err == nil {
		in.Request = parsed
	}
	iss, err := issuer.Get(ctx, r.client, ref)
	if apierrors.IsNotFound(err) {
		ns, name, _ := policy.PodReference(csr)
		pod, err := r.getPod(ctx, r.client, ns, name)
		return nil, pod, policy.Decision{Reason: ReasonIssuerNotFound, Message: r.issuerNotFound(ctx, ref, ns)}, nil, err
	}
	if err != nil {
		return nil, nil, policy.Decision{}, nil, err
	}
	in.Policy = iss.GetSpec().Policy

	if err := r.lookupPods(ctx, r.client, &in); err != nil {
		return nil, nil, policy.Decision{}, nil, err
	}
	d := policy.Decide(in)
	if !d.Allowed && podDependent(d.Reason) && csr.Spec.Username == r.driver {
		// The cache may not have seen a pod (or the driver's DaemonSet)
		// that was just created or replaced, or a pod's new address; ask
		// the API server before denying.
		if err := r.lookupPods(ctx, r.live, &in); err != nil {
			return nil, nil, policy.Decision{}, nil, err
		}
		d = policy.Decide(in)
	}
	var req *issuer.Request
	if d.Allowed {
		req = policy.CSRRequest(csr, in.Request)
	}
	return iss, in.Pod, d, req, nil
}

// podDependent reports whether a denial for reason could be an artefact of a
// stale pod cache.
func podDependent(reason string) bool {
	switch reason {
	case policy.ReasonNotDriver, policy.ReasonDriverPodMismatch, policy.ReasonPodNotFound, policy.ReasonPodUIDMismatch, policy.ReasonNodeMismatch, policy.ReasonPodTerminated,
		policy.ReasonPodIPMismatch:
		return true
	}
	return false
}

// cleanup deletes csr once it has been finished (or pending) for longer
// than grace, and otherwise comes back when it will have been.
func (r *Reconciler) cleanup(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, grace time.Duration) (reconcile.Result, error) {
	if wait := lastChange(csr).Add(grace).Sub(r.opts.Clock.Now()); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	err := r.client.Delete(ctx, csr, client.Preconditions{UID: &csr.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("deleting: %w", err)
	}
	log.FromContext(ctx).V(1).Info("deleted finished certificate request", logkeys.CSR, csr.Name)
	return reconcile.Result{}, nil
}

// event records an Event on pod about csr; without a pod there is no one to
// tell but the log. The pod is whatever the request's annotations name, so
// it must be the driver's request and the pod on the node the API server
// stamped on it: otherwise a compromised node, or any other requester, could
// write Events on pods it has nothing to do with.
func (r *Reconciler) event(pod *corev1.Pod, csr *certificatesv1.CertificateSigningRequest, eventType, reason, action, note string, args ...any) {
	if !mayTell(pod, csr, r.driver) {
		return
	}
	r.recorder.Eventf(pod, csr, eventType, reason, action, note, args...)
}

// mayTell reports whether an Event about csr may be recorded on pod.
func mayTell(pod *corev1.Pod, csr *certificatesv1.CertificateSigningRequest, driver string) bool {
	if pod == nil || csr.Spec.Username != driver {
		return false
	}
	node := csr.Spec.Extra[request.ExtraNodeName]
	return len(node) == 1 && node[0] != "" && pod.Spec.NodeName == node[0]
}

// issuerNotFound says that ref does not exist and, when an issuer of the
// other kind has its name, that the volume probably names the wrong kind.
// podNamespace is the namespace of the pod the request is for.
func (r *Reconciler) issuerNotFound(ctx context.Context, ref request.IssuerRef, podNamespace string) string {
	msg := fmt.Sprintf("%s does not exist; create it or correct the volume's issuer attributes", ref)
	other := request.IssuerRef{Kind: request.KindClusterIssuer, Name: ref.Name}
	hint := "; a ClusterIssuer %s exists: set csi.certmint.io/issuer-kind: ClusterIssuer to use it"
	if ref.Kind == request.KindClusterIssuer {
		other = request.IssuerRef{Kind: request.KindIssuer, Namespace: podNamespace, Name: ref.Name}
		hint = "; an Issuer %s exists in the pod's namespace: remove csi.certmint.io/issuer-kind (or set it to Issuer) to use it"
	}
	if other.Kind == request.KindIssuer && request.ValidatePodReference(podNamespace, "x", "x") != nil {
		return msg
	}
	if _, err := issuer.Get(ctx, r.client, other); err == nil {
		msg += fmt.Sprintf(hint, ref.Name)
	}
	return msg
}

// lookupPods fills in.Pod, in.DriverPod and in.DriverDaemonSetUID from
// reader, and the podCIDRs of the pod's node when the policy bounds pod
// addresses by them; a pod that does not exist is left nil, a DaemonSet
// that does not exist leaves the UID empty.
func (r *Reconciler) lookupPods(ctx context.Context, reader client.Reader, in *policy.Input) error {
	var err error
	ns, name, _ := policy.PodReference(in.CSR)
	if in.Pod, err = r.getPod(ctx, reader, ns, name); err != nil {
		return err
	}
	if v := in.CSR.Spec.Extra[request.ExtraPodName]; len(v) == 1 {
		if in.DriverPod, err = r.getPod(ctx, reader, r.opts.DriverNamespace, v[0]); err != nil {
			return err
		}
	}
	var ds appsv1.DaemonSet
	switch err := reader.Get(ctx, types.NamespacedName{Namespace: r.opts.DriverNamespace, Name: r.opts.DriverDaemonSet}, &ds); {
	case apierrors.IsNotFound(err):
		in.DriverDaemonSetUID = ""
	case err != nil:
		return fmt.Errorf("reading the driver's DaemonSet: %w", err)
	default:
		in.DriverDaemonSetUID = ds.UID
	}
	return r.lookupNodePodCIDRs(ctx, in)
}

// lookupNodePodCIDRs fills in.NodePodCIDRs when the request names or asks
// for pod addresses and the issuer certifies only addresses within the
// pod's node's podCIDRs. The node is read from the API server: few
// requests need it, and no cache holds whole Nodes.
func (r *Reconciler) lookupNodePodCIDRs(ctx context.Context, in *policy.Input) error {
	in.NodePodCIDRs = nil
	asks := in.CSR.Annotations[request.AnnotationPodIPs] != "" || in.Request != nil && len(in.Request.IPAddresses) > 0
	pol := in.Policy
	if !asks || pol == nil || pol.PodIPs == nil || !pol.PodIPs.WithinNodePodCIDRs || in.Pod == nil || in.Pod.Spec.NodeName == "" {
		return nil
	}
	var node corev1.Node
	switch err := r.live.Get(ctx, types.NamespacedName{Name: in.Pod.Spec.NodeName}, &node); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading node %s: %w", in.Pod.Spec.NodeName, err)
	default:
		in.NodePodCIDRs = node.Spec.PodCIDRs
	}
	return nil
}

// getPod reads a pod; nil when it does not exist, or when namespace and name
// cannot name a pod at all (the request is denied for that, not retried).
func (r *Reconciler) getPod(ctx context.Context, reader client.Reader, namespace, name string) (*corev1.Pod, error) {
	if request.ValidatePodReference(namespace, name, "x") != nil {
		return nil, nil
	}
	var pod corev1.Pod
	if err := reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading pod %s/%s: %w", namespace, name, err)
	}
	return &pod, nil
}

func (r *Reconciler) rememberOwnWrite(csr *certificatesv1.CertificateSigningRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ownWrites[csr.Name] = ownWrite{uid: csr.UID, resourceVersion: csr.ResourceVersion, until: r.opts.Clock.Now().Add(ownWriteWait)}
}

// behindOwnWrite returns how long to wait when the cached csr predates this
// controller's last write to it. The watch event of that write requeues the
// request sooner; the wait only bounds a missed event.
func (r *Reconciler) behindOwnWrite(csr *certificatesv1.CertificateSigningRequest) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.ownWrites[csr.Name]
	if !ok {
		return 0
	}
	if wait := w.until.Sub(r.opts.Clock.Now()); w.uid == csr.UID && w.resourceVersion != csr.ResourceVersion && wait > 0 {
		return wait
	}
	delete(r.ownWrites, csr.Name)
	return 0
}

// forgetOwnWrite drops the entry of a request that is gone.
func (r *Reconciler) forgetOwnWrite(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ownWrites, name)
}

func hasCondition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) bool {
	return slices.ContainsFunc(csr.Status.Conditions, func(c certificatesv1.CertificateSigningRequestCondition) bool {
		return c.Type == t && c.Status == corev1.ConditionTrue
	})
}

func finished(csr *certificatesv1.CertificateSigningRequest) bool {
	return len(csr.Status.Certificate) > 0 ||
		hasCondition(csr, certificatesv1.CertificateDenied) ||
		hasCondition(csr, certificatesv1.CertificateFailed)
}

// lastChange is when csr last changed state, as its conditions record.
func lastChange(csr *certificatesv1.CertificateSigningRequest) time.Time {
	t := csr.CreationTimestamp.Time
	for _, c := range csr.Status.Conditions {
		if c.LastUpdateTime.After(t) {
			t = c.LastUpdateTime.Time
		}
	}
	return t
}

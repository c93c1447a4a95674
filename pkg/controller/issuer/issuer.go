// Package issuer reconciles Issuers and ClusterIssuers: it asks the issuer's
// backend whether it can sign and publishes the answer (the Ready condition
// and the trust bundle) in the issuer's status, which is what the request
// controller reads before approving and signing. When the CA changes it
// rotates: the old CA stays in the bundle while certificates it signed can
// be valid, and drivers are asked to re-issue (see rotation.go).
package issuer

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/metrics"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/selfsigned"
	"github.com/certmint/certmint/pkg/request"
)

// IndexCASecretName indexes issuers by spec.ca.secretName so a Secret change
// finds the issuers that use it.
const IndexCASecretName = "spec.ca.secretName"

// ReasonNoBackend is the Ready reason of an issuer whose spec selects no
// backend this controller has.
const ReasonNoBackend = "NoBackend"

// Options configures the issuer controllers.
type Options struct {
	// Backends sign for each kind of spec. Required.
	Backends issuer.Backends
	// ClusterResourceNamespace is where ClusterIssuer Secrets and generated
	// roots live. Required.
	ClusterResourceNamespace string
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Reconciler reconciles one kind: Issuer or ClusterIssuer.
type Reconciler struct {
	client    client.Client
	kind      request.IssuerKind
	backends  issuer.Backends
	clusterNS string
	clock     clock.PassiveClock
}

// SetupWithManager registers the Issuer and ClusterIssuer controllers and
// the index they share with the request controller.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts Options) error {
	if opts.ClusterResourceNamespace == "" {
		return errors.New("issuer controller: ClusterResourceNamespace is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	for _, kind := range []request.IssuerKind{request.KindIssuer, request.KindClusterIssuer} {
		r := &Reconciler{client: mgr.GetClient(), kind: kind, backends: opts.Backends, clusterNS: opts.ClusterResourceNamespace, clock: opts.Clock}
		obj := r.newObject()
		if err := mgr.GetFieldIndexer().IndexField(ctx, obj, IndexCASecretName, func(o client.Object) []string {
			if spec := o.(v1alpha1.GenericIssuer).GetSpec(); spec.CA != nil {
				return []string{spec.CA.SecretName}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("indexing %s by CA Secret: %w", kind, err)
		}
		err := builder.ControllerManagedBy(mgr).
			Named(string(kind)).
			For(obj).
			Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.issuersForSecret)).
			Complete(r)
		if err != nil {
			return fmt.Errorf("setting up the %s controller: %w", kind, err)
		}
	}
	return nil
}

func (r *Reconciler) newObject() v1alpha1.GenericIssuer {
	if r.kind == request.KindClusterIssuer {
		return &v1alpha1.ClusterIssuer{}
	}
	return &v1alpha1.Issuer{}
}

// issuersForSecret maps a Secret to the issuers of r's kind that read it:
// the ones whose ca.secretName names it, or the one a generated root is for.
func (r *Reconciler) issuersForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	labels := o.GetLabels()
	if kind := labels[issuer.LabelIssuerKind]; kind != "" {
		if o.GetNamespace() != r.clusterNS || request.IssuerKind(kind) != r.kind {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: labels[issuer.LabelIssuerNamespace], Name: labels[issuer.LabelIssuerName]}}}
	}
	opts := []client.ListOption{client.MatchingFields{IndexCASecretName: o.GetName()}}
	switch {
	case r.kind == request.KindIssuer:
		opts = append(opts, client.InNamespace(o.GetNamespace()))
	case o.GetNamespace() != r.clusterNS:
		return nil
	}
	if r.kind == request.KindIssuer {
		var issuers v1alpha1.IssuerList
		if err := r.client.List(ctx, &issuers, opts...); err != nil {
			log.FromContext(ctx).Error(err, "listing Issuers for a Secret", "secret", client.ObjectKeyFromObject(o))
			return nil
		}
		return requestsFor(issuers.Items)
	}
	var issuers v1alpha1.ClusterIssuerList
	if err := r.client.List(ctx, &issuers, opts...); err != nil {
		log.FromContext(ctx).Error(err, "listing ClusterIssuers for a Secret", "secret", client.ObjectKeyFromObject(o))
		return nil
	}
	return requestsFor(issuers.Items)
}

func requestsFor[T any, P interface {
	*T
	client.Object
}](items []T) []reconcile.Request {
	out := make([]reconcile.Request, 0, len(items))
	for i := range items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(P(&items[i]))})
	}
	return out
}

// Reconcile checks one issuer and records the result in its status.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	iss := r.newObject()
	if err := r.client.Get(ctx, req.NamespacedName, iss); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, r.forget(ctx, req.NamespacedName)
		}
		return reconcile.Result{}, err
	}
	ref := issuer.RefFor(iss)

	st, err := r.check(ctx, iss)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("checking %s: %w", ref, err)
	}
	if st.Ready {
		metrics.IssuerReady.WithLabelValues(ref.SignerName()).Set(1)
	} else {
		metrics.IssuerReady.WithLabelValues(ref.SignerName()).Set(0)
	}

	now := r.clock.Now()
	t, err := nextTrust(iss.GetStatus(), iss.GetSpec(), st, now)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("computing the trust bundle of %s: %w", ref, err)
	}
	if err := r.applyStatus(ctx, iss, st, t); err != nil {
		return reconcile.Result{}, err
	}
	// Readiness changes by itself when the CA expires, and the bundle when
	// a retiring CA's last certificate has expired: look again at the
	// first of those rather than polling.
	next := st.RecheckAt
	if !t.nextExpiry.IsZero() && (next.IsZero() || t.nextExpiry.Before(next)) {
		next = t.nextExpiry
	}
	if next.After(now) {
		return reconcile.Result{RequeueAfter: next.Sub(now)}, nil
	}
	return reconcile.Result{}, nil
}

// check computes the issuer's readiness; it writes nothing but a generated
// root.
func (r *Reconciler) check(ctx context.Context, iss v1alpha1.GenericIssuer) (issuer.Status, error) {
	backend, err := r.backends.For(iss.GetSpec())
	if err != nil {
		return issuer.Status{Reason: ReasonNoBackend, Message: err.Error()}, nil
	}
	return backend.Ready(ctx, iss)
}

// applyStatus writes the Ready condition and the trust when they changed.
// The bundle, the new signing CA and reissueBefore go out in one write, so
// a driver asked to re-issue already has the bundle that trusts the new
// CA. A not-ready issuer keeps its last trust bundle: certificates it
// issued stay valid, so relying parties must go on trusting its CA.
func (r *Reconciler) applyStatus(ctx context.Context, iss v1alpha1.GenericIssuer, st issuer.Status, t trust) error {
	updated := iss.DeepCopyObject().(v1alpha1.GenericIssuer)
	status := updated.GetStatus()
	cond := metav1.Condition{
		Type:               v1alpha1.ConditionReady,
		Status:             metav1.ConditionFalse,
		Reason:             st.Reason,
		Message:            st.Message,
		ObservedGeneration: iss.GetGeneration(),
	}
	if st.Ready {
		cond.Status = metav1.ConditionTrue
	}
	if cond.Reason == "" {
		cond.Reason = v1alpha1.ReasonError
	}
	meta.SetStatusCondition(&status.Conditions, cond)
	status.TrustBundle = t.bundle
	status.Signing = t.signing
	status.RetiringCAs = t.retiring
	status.ReissueBefore = t.reissueBefore
	if equality.Semantic.DeepEqual(status, iss.GetStatus()) {
		return nil
	}
	if err := r.client.Status().Update(ctx, updated); err != nil {
		return fmt.Errorf("updating status of %s: %w", issuer.RefFor(iss), err)
	}
	logger := log.FromContext(ctx)
	switch {
	case t.rotated:
		logger.Info("issuer signs with a new CA; the old one stays trusted while it retires",
			"caFingerprint", t.signing.CAFingerprint, "retiringCAs", len(t.retiring), "reissueBefore", t.reissueBefore.Time)
	case t.reconfigured:
		logger.Info("issuer spec changes what it signs; asking drivers to re-issue", "reissueBefore", t.reissueBefore.Time)
	}
	logger.Info("issuer status", "ready", st.Ready, "reason", cond.Reason, "message", cond.Message, "retiringCAs", len(t.retiring))
	return nil
}

// forget cleans up after a deleted issuer: its generated root, if it had
// one, and its metric.
func (r *Reconciler) forget(ctx context.Context, key types.NamespacedName) error {
	ref := request.IssuerRef{Kind: r.kind, Namespace: key.Namespace, Name: key.Name}
	metrics.IssuerReady.DeleteLabelValues(ref.SignerName())
	root := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.clusterNS, Name: selfsigned.RootSecretName(ref)}}
	if err := r.client.Delete(ctx, root); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the generated root of %s: %w", ref, err)
	}
	return nil
}

// IsReady reports whether iss's status says it can sign for its current
// spec.
func IsReady(iss v1alpha1.GenericIssuer) bool {
	cond := meta.FindStatusCondition(iss.GetStatus().Conditions, v1alpha1.ConditionReady)
	return cond != nil && cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == iss.GetGeneration()
}

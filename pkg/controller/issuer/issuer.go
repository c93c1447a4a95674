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
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// IndexSecrets indexes issuers by the Secrets their backend reads
// ("namespace/name"), so a change of a Secret finds the issuers that use
// it.
const IndexSecrets = "certmint.io/secrets"

// Options configures the issuer controllers.
type Options struct {
	// Registry has every kind of backend. Required.
	Registry *issuer.Registry
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Reconciler reconciles one kind: Issuer or ClusterIssuer.
type Reconciler struct {
	client   client.Client
	kind     request.IssuerKind
	registry *issuer.Registry
	clock    clock.PassiveClock
}

// SetupWithManager registers the Issuer and ClusterIssuer controllers and
// the index they share with the request controller. They watch the
// metadata of Secrets, not their data: a backend reads a Secret itself
// (issuer.Secrets) when the watch shows it changed.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts Options) error {
	if opts.Registry == nil {
		return errors.New("issuer controller: Registry is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	for _, kind := range []request.IssuerKind{request.KindIssuer, request.KindClusterIssuer} {
		r := &Reconciler{client: mgr.GetClient(), kind: kind, registry: opts.Registry, clock: opts.Clock}
		obj := r.newObject()
		if err := mgr.GetFieldIndexer().IndexField(ctx, obj, IndexSecrets, func(o client.Object) []string {
			var keys []string
			for _, ref := range opts.Registry.Secrets(o.(v1alpha1.GenericIssuer)) {
				keys = append(keys, ref.String())
			}
			return keys
		}); err != nil {
			return fmt.Errorf("indexing %s by Secret: %w", kind, err)
		}
		err := builder.ControllerManagedBy(mgr).
			Named(string(kind)).
			For(obj).
			WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.issuersForSecret)).
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

// issuersForSecret maps a Secret to the issuers of r's kind whose backend
// reads it.
func (r *Reconciler) issuersForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	key := client.MatchingFields{IndexSecrets: client.ObjectKeyFromObject(o).String()}
	if r.kind == request.KindIssuer {
		var issuers v1alpha1.IssuerList
		if err := r.client.List(ctx, &issuers, key); err != nil {
			log.FromContext(ctx).Error(err, "listing Issuers for a Secret", logkeys.Secret, client.ObjectKeyFromObject(o).String())
			return nil
		}
		return requestsFor(issuers.Items)
	}
	var issuers v1alpha1.ClusterIssuerList
	if err := r.client.List(ctx, &issuers, key); err != nil {
		log.FromContext(ctx).Error(err, "listing ClusterIssuers for a Secret", logkeys.Secret, client.ObjectKeyFromObject(o).String())
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
	metrics.ObserveIssuer(ref.SignerName(), st.Ready, st.CA)

	now := r.clock.Now()
	t, err := nextTrust(iss.GetStatus(), r.signing(iss), st, now)
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
	kind, err := r.registry.For(iss.GetSpec())
	if err != nil {
		return issuer.Status{Reason: issuer.ReasonNoBackend, Message: err.Error()}, nil
	}
	return kind.Backend.Ready(ctx, iss)
}

// signing is how iss signs, for its trust: which kind of backend, its
// policy, and the longest lifetime a certificate it signs may have (the
// backend's own bound when it chooses lifetimes itself, else the policy's
// maximum).
func (r *Reconciler) signing(iss v1alpha1.GenericIssuer) signer {
	spec := iss.GetSpec()
	s := signer{policy: spec.Policy, maxLifetime: policy.MaxDuration(spec.Policy)}
	if kind, err := r.registry.For(spec); err == nil {
		s.kind = kind.Name
		if kind.MaxLifetime > 0 {
			s.maxLifetime, s.choosesLifetime = kind.MaxLifetime, true
		}
	}
	return s
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
			logkeys.CAFingerprint, t.signing.CAFingerprint, logkeys.RetiringCAs, len(t.retiring), logkeys.ReissueBefore, t.reissueBefore.Time)
	case t.reconfigured:
		logger.Info("issuer spec changes what it signs; asking drivers to re-issue", logkeys.ReissueBefore, t.reissueBefore.Time)
	}
	logger.Info("issuer status", logkeys.Ready, st.Ready, logkeys.Reason, cond.Reason, logkeys.Message, cond.Message, logkeys.RetiringCAs, len(t.retiring))
	return nil
}

// forget cleans up after a deleted issuer: what its backend kept for it,
// and its metrics.
func (r *Reconciler) forget(ctx context.Context, key types.NamespacedName) error {
	ref := request.IssuerRef{Kind: r.kind, Namespace: key.Namespace, Name: key.Name}
	metrics.ForgetIssuer(ref.SignerName())
	return r.registry.Forget(ctx, ref)
}

// Package trustbundle publishes the trust bundle of every Issuer and
// ClusterIssuer as a ClusterTrustBundle for the issuer's signer, so that
// pods can mount it with a clusterTrustBundle projection and anything else
// can read it without reading certmint's own resources.
//
// It does not compute bundles: the issuer controller keeps each issuer's in
// its status.trustBundle, with the CAs a rotation retires, and this
// controller copies it as it is. It knows nothing of backends, signing or
// requests.
//
// Each issuer has one ClusterTrustBundle, named by Name and labelled
// LabelManagedBy=ManagedBy. The controller reconciles by that name, so one
// key stands for an issuer whether it exists or not: the issuer and its
// bundle are both watched, and a bundle deleted or edited by hand, or left
// behind by an issuer deleted while no controller ran, is put right. A
// ClusterTrustBundle without the label is never touched.
package trustbundle

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/request"
)

// Reasons of the Warning Events recorded on an issuer whose bundle cannot
// be published.
const (
	// ReasonTrustBundleInvalid: the API server would refuse (or refused)
	// the bundle or its name. Nothing is retried until the issuer changes.
	ReasonTrustBundleInvalid = "TrustBundleInvalid"
	// ReasonTrustBundleNameTaken: a ClusterTrustBundle without certmint's
	// label has the bundle's name. It is left alone, and the name tried
	// again every ConflictRetry.
	ReasonTrustBundleNameTaken = "TrustBundleNameTaken"
)

// DefaultConflictRetry is the default of Options.ConflictRetry.
const DefaultConflictRetry = 5 * time.Minute

// Options configures the trust bundle controller. The zero value is
// ready to use.
type Options struct {
	// ConflictRetry is how long to wait before trying a bundle's name again
	// while a ClusterTrustBundle certmint does not manage holds it: that
	// object is not watched, so its deletion would go unseen. Defaults to
	// DefaultConflictRetry.
	ConflictRetry time.Duration
}

// Reconciler keeps the ClusterTrustBundle of one issuer, named by the
// request, as that issuer's status says.
type Reconciler struct {
	client client.Client
	// live reads a ClusterTrustBundle the cache cannot hold: one without
	// certmint's label.
	live     client.Reader
	recorder events.EventRecorder
	opts     Options
}

// CacheConfig restricts the manager's ClusterTrustBundle cache to the
// bundles this controller keeps: others (the API server's own, other
// signers') can be large, and are never read from the cache.
func CacheConfig() cache.ByObject {
	return cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})}
}

// SetupWithManager registers the trust bundle controller; the API server
// must serve certificates.k8s.io/v1 ClusterTrustBundles.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts Options) error {
	if opts.ConflictRetry <= 0 {
		opts.ConflictRetry = DefaultConflictRetry
	}
	r := &Reconciler{
		client:   mgr.GetClient(),
		live:     mgr.GetAPIReader(),
		recorder: mgr.GetEventRecorder("certmint-controller"),
		opts:     opts,
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		ctb, ok := o.(*certificatesv1.ClusterTrustBundle)
		return ok && managed(ctb)
	})
	err := builder.ControllerManagedBy(mgr).
		Named("clustertrustbundle").
		For(&certificatesv1.ClusterTrustBundle{}, builder.WithPredicates(ours)).
		Watches(&v1alpha1.Issuer{}, handler.EnqueueRequestsFromMapFunc(bundleOf)).
		Watches(&v1alpha1.ClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(bundleOf)).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the trust bundle controller: %w", err)
	}
	return nil
}

// bundleOf maps an issuer to the name of its ClusterTrustBundle, the
// reconcile key.
func bundleOf(_ context.Context, o client.Object) []reconcile.Request {
	iss, ok := o.(v1alpha1.GenericIssuer)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: Name(issuer.RefFor(iss))}}}
}

// Reconcile makes the ClusterTrustBundle named by req what its issuer's
// status says, in at most one write. What to do is computed first
// (desired, nextStep) and applied in one place (apply).
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	current, err := r.current(ctx, req.Name)
	if err != nil {
		return reconcile.Result{}, err
	}
	ref, ok := refFor(req.Name)
	if !ok {
		// A bundle of a certmint signer, labelled as certmint's, under a
		// name this controller does not give: a leftover (a copy made by
		// hand, say). It would add its CAs to every projection of the
		// signer, so it goes.
		return r.apply(ctx, nil, nextStep(current, nil, nil))
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues(logkeys.Issuer, ref.String()))
	iss, err := r.getIssuer(ctx, ref)
	if err != nil {
		return reconcile.Result{}, err
	}
	want, problem := desired(iss)
	return r.apply(ctx, iss, nextStep(current, want, problem))
}

// current is the managed ClusterTrustBundle called name, nil when there is
// none.
func (r *Reconciler) current(ctx context.Context, name string) (*certificatesv1.ClusterTrustBundle, error) {
	var ctb certificatesv1.ClusterTrustBundle
	if err := r.client.Get(ctx, types.NamespacedName{Name: name}, &ctb); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading ClusterTrustBundle %s: %w", name, err)
	}
	if !managed(&ctb) {
		return nil, nil
	}
	return &ctb, nil
}

// getIssuer reads the issuer ref names; nil when it does not exist.
func (r *Reconciler) getIssuer(ctx context.Context, ref request.IssuerRef) (v1alpha1.GenericIssuer, error) {
	var iss v1alpha1.GenericIssuer = &v1alpha1.Issuer{}
	if ref.Kind == request.KindClusterIssuer {
		iss = &v1alpha1.ClusterIssuer{}
	}
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, iss); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	return iss, nil
}

// step is what one pass does to a ClusterTrustBundle: at most one of
// create, update and delete, or a warning on the issuer.
type step struct {
	create, update, delete *certificatesv1.ClusterTrustBundle
	// warning is why the issuer's bundle cannot be published; empty when
	// it can.
	warning string
}

// nextStep is what to do when current is the managed ClusterTrustBundle
// (nil: none), want the one the issuer calls for (nil: none) and problem
// why the issuer's bundle cannot be published. An unpublishable bundle
// leaves the last published one in place: the certificates its CAs
// signed are still out there, and relying parties must go on trusting
// them, as a not-ready issuer keeps its last trust bundle.
func nextStep(current, want *certificatesv1.ClusterTrustBundle, problem error) step {
	switch {
	case problem != nil:
		return step{warning: problem.Error()}
	case want == nil && current == nil:
		return step{}
	case want == nil:
		return step{delete: current}
	case current == nil:
		return step{create: want}
	case current.Spec.TrustBundle == want.Spec.TrustBundle:
		return step{}
	}
	// Other labels and annotations someone added stay; the cached object
	// is not changed.
	updated := current.DeepCopy()
	updated.Spec.TrustBundle = want.Spec.TrustBundle
	return step{update: updated}
}

// apply carries out s for iss (nil when it does not exist). A write that
// loses a race (the object changed, went or appeared since the cache saw
// it) is not retried here: the watch event of that change brings the
// request back.
func (r *Reconciler) apply(ctx context.Context, iss v1alpha1.GenericIssuer, s step) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	switch {
	case s.warning != "":
		r.warn(ctx, iss, ReasonTrustBundleInvalid, "the trust bundle cannot be published as a ClusterTrustBundle: "+s.warning)
	case s.create != nil:
		err := r.client.Create(ctx, s.create)
		switch {
		case apierrors.IsAlreadyExists(err):
			return r.nameTaken(ctx, iss, s.create.Name)
		case apierrors.IsInvalid(err):
			r.warn(ctx, iss, ReasonTrustBundleInvalid, "the API server refused its ClusterTrustBundle: "+err.Error())
			return reconcile.Result{}, nil
		case err != nil:
			return reconcile.Result{}, fmt.Errorf("creating ClusterTrustBundle %s: %w", s.create.Name, err)
		}
		logger.Info("published the trust bundle", logkeys.ClusterTrustBundle, s.create.Name, logkeys.SignerName, s.create.Spec.SignerName)
	case s.update != nil:
		err := r.client.Update(ctx, s.update)
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			return reconcile.Result{}, nil
		case apierrors.IsInvalid(err):
			r.warn(ctx, iss, ReasonTrustBundleInvalid, "the API server refused the update of its ClusterTrustBundle: "+err.Error())
			return reconcile.Result{}, nil
		case err != nil:
			return reconcile.Result{}, fmt.Errorf("updating ClusterTrustBundle %s: %w", s.update.Name, err)
		}
		logger.Info("updated the published trust bundle", logkeys.ClusterTrustBundle, s.update.Name, logkeys.SignerName, s.update.Spec.SignerName)
	case s.delete != nil:
		// Only the object read, with the label: not one that replaced it
		// since.
		pre := client.Preconditions{UID: &s.delete.UID, ResourceVersion: &s.delete.ResourceVersion}
		err := r.client.Delete(ctx, s.delete, pre)
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			return reconcile.Result{}, nil
		case err != nil:
			return reconcile.Result{}, fmt.Errorf("deleting ClusterTrustBundle %s: %w", s.delete.Name, err)
		}
		logger.Info("deleted a trust bundle no issuer publishes", logkeys.ClusterTrustBundle, s.delete.Name, logkeys.SignerName, s.delete.Spec.SignerName)
	}
	return reconcile.Result{}, nil
}

// nameTaken handles a create refused because name exists. When the object
// is certmint's, an earlier pass created it and the cache has not caught
// up: its watch event comes. Otherwise it belongs to someone else and
// stays; it is not watched, so the name is tried again later.
func (r *Reconciler) nameTaken(ctx context.Context, iss v1alpha1.GenericIssuer, name string) (reconcile.Result, error) {
	var existing certificatesv1.ClusterTrustBundle
	if err := r.live.Get(ctx, types.NamespacedName{Name: name}, &existing); err != nil {
		// Gone again (NotFound) or unreadable: retry with backoff.
		return reconcile.Result{}, fmt.Errorf("reading ClusterTrustBundle %s, which exists: %w", name, err)
	}
	if managed(&existing) {
		return reconcile.Result{}, nil
	}
	r.warn(ctx, iss, ReasonTrustBundleNameTaken, fmt.Sprintf(
		"ClusterTrustBundle %s exists without the label %s=%s, so certmint leaves it alone and does not publish this issuer's trust bundle; delete it, or label it to hand it to certmint",
		name, LabelManagedBy, ManagedBy))
	return reconcile.Result{RequeueAfter: r.opts.ConflictRetry}, nil
}

// maxNoteLength is the most the API server accepts in an Event's note.
const maxNoteLength = 1024

// warn records why iss's bundle is not published, as a Warning Event on
// iss for its owner and in the log.
func (r *Reconciler) warn(ctx context.Context, iss v1alpha1.GenericIssuer, reason, note string) {
	log.FromContext(ctx).Info("cannot publish the trust bundle", logkeys.Reason, reason, logkeys.Message, note)
	if iss != nil {
		r.recorder.Eventf(iss, nil, corev1.EventTypeWarning, reason, "Publish", "%s", truncate(note, maxNoteLength))
	}
}

// truncate shortens s to at most n bytes, marking the cut, so that a long
// list of problems still makes an Event the API server accepts.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "..."
	cut := n - len(mark)
	// Not inside a UTF-8 sequence.
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Package ingress keeps Certificates for annotated Ingresses: one per
// secretName of spec.tls, for its hosts, owned by the Ingress, so that the
// Ingress controller finds the Secret it serves. The Certificate controller
// does the rest.
package ingress

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/request"
)

// The annotations that ask for certificates: the name of an Issuer in the
// Ingress's namespace, or of a ClusterIssuer.
const (
	AnnotationIssuer        = "certmint.io/issuer"
	AnnotationClusterIssuer = "certmint.io/cluster-issuer"
)

// Optional annotations that set the Certificates' lifetime, as Go
// durations.
const (
	AnnotationDuration    = "certmint.io/duration"
	AnnotationRenewBefore = "certmint.io/renew-before"
)

// minLifetime is the least duration and renewBefore a Certificate may
// have, as its API type says.
var minLifetime = [2]time.Duration{10 * time.Minute, time.Minute}

// ReasonBadAnnotations and ReasonNameTaken are the reasons of the Warning
// Events on an Ingress whose Certificates cannot be kept.
const (
	ReasonBadAnnotations = "InvalidCertificateAnnotations"
	ReasonNameTaken      = "CertificateNameTaken"
)

// IndexSecrets indexes annotated Ingresses by the secretNames of their TLS
// entries: the names of the Certificates they ask for.
const IndexSecrets = "certmint.io/tls-secrets"

// Reconciler keeps the Certificates of Ingresses.
type Reconciler struct {
	client   client.Client
	scheme   *runtime.Scheme
	recorder events.EventRecorder
}

// SetupWithManager registers the Ingress controller.
func SetupWithManager(ctx context.Context, mgr manager.Manager) error {
	r := &Reconciler{client: mgr.GetClient(), scheme: mgr.GetScheme(), recorder: mgr.GetEventRecorder("certmint-controller")}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &networkingv1.Ingress{}, IndexSecrets, func(o client.Object) []string {
		ing := o.(*networkingv1.Ingress)
		if !annotated(ing) {
			return nil
		}
		var names []string
		for _, tls := range ing.Spec.TLS {
			if tls.SecretName != "" && !slices.Contains(names, tls.SecretName) {
				names = append(names, tls.SecretName)
			}
		}
		return names
	}); err != nil {
		return fmt.Errorf("indexing Ingresses by TLS Secret: %w", err)
	}
	return builder.ControllerManagedBy(mgr).
		Named("ingress").
		For(&networkingv1.Ingress{}).
		// Every Certificate, not only those an Ingress owns: one whose
		// name an Ingress wanted may go, and the Ingress gets it then.
		Watches(&v1alpha1.Certificate{}, handler.EnqueueRequestsFromMapFunc(r.ingressesFor)).
		Complete(r)
}

func annotated(ing *networkingv1.Ingress) bool {
	_, issuer := ing.Annotations[AnnotationIssuer]
	_, clusterIssuer := ing.Annotations[AnnotationClusterIssuer]
	return issuer || clusterIssuer
}

// ingressesFor is the Ingress that owns cert, and those that ask for a
// Certificate of its name.
func (r *Reconciler) ingressesFor(ctx context.Context, cert client.Object) []reconcile.Request {
	var out []reconcile.Request
	if owner := metav1.GetControllerOf(cert); owner != nil && owner.Kind == "Ingress" {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: cert.GetNamespace(), Name: owner.Name}})
	}
	var ings networkingv1.IngressList
	if err := r.client.List(ctx, &ings, client.InNamespace(cert.GetNamespace()), client.MatchingFields{IndexSecrets: cert.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing the Ingresses of a Certificate")
		return out
	}
	for i := range ings.Items {
		req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ings.Items[i])}
		if !slices.Contains(out, req) {
			out = append(out, req)
		}
	}
	return out
}

// Reconcile makes the Certificates an Ingress owns what its annotations and
// TLS entries ask for: creates and updates the ones it needs, deletes the
// ones it no longer does. Their Secrets stay, so that an Ingress controller
// serving one keeps serving while the Ingress changes hands.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ing networkingv1.Ingress
	if err := r.client.Get(ctx, req.NamespacedName, &ing); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues(logkeys.Ingress, req.String()))
	want, problem, ok := desired(&ing)
	if problem != "" {
		r.recorder.Eventf(&ing, nil, corev1.EventTypeWarning, ReasonBadAnnotations, "Check", "%s", problem)
	}
	if !ok {
		// A mistyped annotation changes nothing: the Certificates stay as
		// they are until it is fixed.
		return reconcile.Result{}, nil
	}
	var owned v1alpha1.CertificateList
	if err := r.client.List(ctx, &owned, client.InNamespace(ing.Namespace)); err != nil {
		return reconcile.Result{}, err
	}
	for i := range owned.Items {
		c := &owned.Items[i]
		if metav1.IsControlledBy(c, &ing) && !slices.ContainsFunc(want, func(w *v1alpha1.Certificate) bool { return w.Name == c.Name }) {
			if err := r.client.Delete(ctx, c, client.Preconditions{UID: &c.UID}); client.IgnoreNotFound(err) != nil {
				return reconcile.Result{}, fmt.Errorf("deleting Certificate %s: %w", c.Name, err)
			}
			log.FromContext(ctx).Info("deleted Certificate the Ingress no longer asks for; its Secret stays", logkeys.Certificate, c.Name)
		}
	}
	for _, w := range want {
		if err := r.apply(ctx, &ing, w); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// apply creates or updates w, the Certificate ing asks for; one of the
// same name that ing does not own is left alone.
func (r *Reconciler) apply(ctx context.Context, ing *networkingv1.Ingress, w *v1alpha1.Certificate) error {
	if err := controllerutil.SetControllerReference(ing, w, r.scheme); err != nil {
		return err
	}
	var existing v1alpha1.Certificate
	err := r.client.Get(ctx, client.ObjectKeyFromObject(w), &existing)
	switch {
	case apierrors.IsNotFound(err):
		return r.refused(ing, w, r.client.Create(ctx, w))
	case err != nil:
		return err
	case !metav1.IsControlledBy(&existing, ing):
		r.recorder.Eventf(ing, &existing, corev1.EventTypeWarning, ReasonNameTaken, "Check",
			"Certificate %s exists and is not this Ingress's; it is left alone, and the Ingress's TLS entry for Secret %s gets no certificate from certmint", existing.Name, w.Spec.SecretName)
		return nil
	case equality.Semantic.DeepEqual(existing.Spec, w.Spec):
		return nil
	}
	existing.Spec = w.Spec
	return r.refused(ing, w, r.client.Update(ctx, &existing))
}

// refused turns the API server's refusal of w, a Certificate the
// annotations and TLS entries of ing describe, into an Event on ing: only
// a change of ing fixes it, so it is not retried.
func (r *Reconciler) refused(ing *networkingv1.Ingress, w *v1alpha1.Certificate, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsInvalid(err):
		r.recorder.Eventf(ing, nil, corev1.EventTypeWarning, ReasonBadAnnotations, "Check",
			"the Certificate for Secret %s cannot be kept as this Ingress describes it: %v", w.Spec.SecretName, err)
		return nil
	}
	return fmt.Errorf("writing Certificate %s: %w", w.Name, err)
}

// desired is the Certificates ing asks for: none without an issuer
// annotation, otherwise one per secretName of its TLS entries, named after
// the Secret, for the hosts of every entry naming it. problem says what of
// the annotations or entries cannot be honoured; ok is false when the
// annotations are such that nothing should change.
func desired(ing *networkingv1.Ingress) (certs []*v1alpha1.Certificate, problem string, ok bool) {
	issuerName, issuerSet := ing.Annotations[AnnotationIssuer]
	clusterIssuerName, clusterSet := ing.Annotations[AnnotationClusterIssuer]
	ref := v1alpha1.IssuerReference{Name: issuerName, Kind: string(request.KindIssuer)}
	switch {
	case !issuerSet && !clusterSet:
		return nil, "", true
	case issuerSet && clusterSet:
		return nil, fmt.Sprintf("both %s and %s are set; set one", AnnotationIssuer, AnnotationClusterIssuer), false
	case clusterSet:
		ref = v1alpha1.IssuerReference{Name: clusterIssuerName, Kind: string(request.KindClusterIssuer)}
	}
	if strings.TrimSpace(ref.Name) == "" {
		return nil, "the issuer annotation is empty; set it to the name of an issuer", false
	}
	var lifetime [2]*metav1.Duration
	for i, key := range []string{AnnotationDuration, AnnotationRenewBefore} {
		v, set := ing.Annotations[key]
		if !set {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < minLifetime[i] {
			return nil, fmt.Sprintf("%s must be a duration of at least %s, such as \"2160h\", not %s", key, minLifetime[i], request.Quote(v)), false
		}
		lifetime[i] = &metav1.Duration{Duration: d}
	}
	if lifetime[0] != nil && lifetime[1] != nil && lifetime[1].Duration >= lifetime[0].Duration {
		return nil, fmt.Sprintf("%s (%s) must be shorter than %s (%s)", AnnotationRenewBefore, lifetime[1].Duration, AnnotationDuration, lifetime[0].Duration), false
	}
	bySecret := map[string]*v1alpha1.Certificate{}
	var skipped []string
	for i, tls := range ing.Spec.TLS {
		if tls.SecretName == "" || len(tls.Hosts) == 0 {
			skipped = append(skipped, fmt.Sprintf("spec.tls[%d]", i))
			continue
		}
		c, ok := bySecret[tls.SecretName]
		if !ok {
			c = &v1alpha1.Certificate{
				ObjectMeta: metav1.ObjectMeta{Namespace: ing.Namespace, Name: tls.SecretName},
				Spec: v1alpha1.CertificateSpec{SecretName: tls.SecretName, IssuerRef: ref,
					Duration: lifetime[0], RenewBefore: lifetime[1]},
			}
			bySecret[tls.SecretName] = c
			certs = append(certs, c)
		}
		for _, h := range tls.Hosts {
			if !slices.Contains(c.Spec.DNSNames, h) {
				c.Spec.DNSNames = append(c.Spec.DNSNames, h)
			}
		}
	}
	if len(skipped) > 0 {
		problem = fmt.Sprintf("%s name no secretName or no hosts and get no certificate", strings.Join(skipped, ", "))
	}
	return certs, problem, true
}

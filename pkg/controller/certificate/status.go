package certificate

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/metrics"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/policy"
)

func condition(cert *v1alpha1.Certificate, t string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: t, Status: status, Reason: reason, Message: message, ObservedGeneration: cert.Generation}
}

// readyCondition is Ready for a Secret holding leaf: the same whether the
// pass issued it or found it, so a pass that finds what the last one
// issued writes no status.
func readyCondition(cert *v1alpha1.Certificate, leaf *x509.Certificate) metav1.Condition {
	return condition(cert, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonReady,
		fmt.Sprintf("Secret %s holds a certificate valid until %s", cert.Spec.SecretName, leaf.NotAfter.UTC().Format(time.RFC3339)))
}

// notReady records that cert cannot be issued as it is, for a reason only
// a change of it, its issuer or its Secret fixes; an Event says so once.
func (r *Reconciler) notReady(cert *v1alpha1.Certificate, reason, message string) {
	if c := meta.FindStatusCondition(cert.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != reason || c.Message != message || c.ObservedGeneration != cert.Generation {
		r.recorder.Eventf(cert, nil, corev1.EventTypeWarning, reason, "Check", "%s", message)
	}
	meta.SetStatusCondition(&cert.Status.Conditions, condition(cert, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, message))
	meta.RemoveStatusCondition(&cert.Status.Conditions, v1alpha1.ConditionIssuing)
}

// recordHeld sets Ready for the certificate held while a new one is
// obtained: True while it still serves the spec (it is only due for
// renewal), False with what is missing otherwise. A failure reason Ready
// already carries stays while nothing serves.
func (r *Reconciler) recordHeld(cert *v1alpha1.Certificate, h held, why string) {
	if why != "" {
		reason := ReasonNotIssued
		if h.secret == nil {
			reason = ReasonDoesNotExist
		}
		if c := meta.FindStatusCondition(cert.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionFalse && c.ObservedGeneration == cert.Generation && failedReason(c.Reason) {
			return
		}
		meta.SetStatusCondition(&cert.Status.Conditions, condition(cert, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, why))
		return
	}
	meta.SetStatusCondition(&cert.Status.Conditions, readyCondition(cert, h.chain[0]))
}

// failedReason reports whether reason is one failed sets on Ready, rather
// than recordHeld's.
func failedReason(reason string) bool {
	return reason != ReasonNotIssued && reason != ReasonDoesNotExist && reason != ReasonReady
}

// blocked records that cert cannot be issued until something outside it
// changes (its issuer is missing, a keystore's password Secret is): Issuing
// says why, and Ready stays True while the Secret's certificate is still
// valid, since nothing is taken from it. An Event says so once.
func (r *Reconciler) blocked(cert *v1alpha1.Certificate, h held, now time.Time, reason, message string) {
	if c := meta.FindStatusCondition(cert.Status.Conditions, v1alpha1.ConditionIssuing); c == nil || c.Reason != reason || c.Message != message || c.ObservedGeneration != cert.Generation {
		r.recorder.Eventf(cert, nil, corev1.EventTypeWarning, reason, "Check", "%s", message)
	}
	meta.SetStatusCondition(&cert.Status.Conditions, condition(cert, v1alpha1.ConditionIssuing, metav1.ConditionFalse, reason, message))
	if h.chain != nil && h.key != nil && now.Before(h.chain[0].NotAfter) && meta.IsStatusConditionTrue(cert.Status.Conditions, v1alpha1.ConditionReady) {
		return
	}
	meta.SetStatusCondition(&cert.Status.Conditions, condition(cert, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, message))
}

// issuing records that a certificate is being obtained.
func (r *Reconciler) issuing(cert *v1alpha1.Certificate, reason, message string) {
	meta.SetStatusCondition(&cert.Status.Conditions, condition(cert, v1alpha1.ConditionIssuing, metav1.ConditionTrue, reason, message))
}

// failed records a failed issuance: its reason on both conditions (Ready
// only when the Secret holds nothing that serves), an Event, and the next
// attempt after the backoff. The Secret is left as it is.
func (r *Reconciler) failed(ctx context.Context, cert *v1alpha1.Certificate, iss v1alpha1.GenericIssuer, reason, message string, now time.Time) reconcile.Result {
	name := client.ObjectKeyFromObject(cert)
	r.mu.Lock()
	f, ok := r.failures[name]
	if !ok {
		f = failureFromStatus(cert, iss)
	}
	if f.uid != cert.UID || f.generation != cert.Generation || f.issuerVersion != iss.GetResourceVersion() {
		f = failure{uid: cert.UID, generation: cert.Generation, issuerVersion: iss.GetResourceVersion()}
	}
	f.inARow++
	f.at = now
	r.failures[name] = f
	r.mu.Unlock()

	wait := backoffAfter(f.inARow)
	cert.Status.FailedIssuanceAttempts = f.inARow
	cert.Status.LastFailureTime = &metav1.Time{Time: now}
	msg := fmt.Sprintf("%s (attempt %d; next in %s)", message, f.inARow, wait)
	meta.SetStatusCondition(&cert.Status.Conditions, condition(cert, v1alpha1.ConditionIssuing, metav1.ConditionFalse, reason, msg))
	if !meta.IsStatusConditionTrue(cert.Status.Conditions, v1alpha1.ConditionReady) {
		meta.SetStatusCondition(&cert.Status.Conditions, condition(cert, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, message))
	}
	result := metrics.ResultFailed
	if policyReason(reason) {
		result = metrics.ResultDenied
	}
	metrics.Certificates.WithLabelValues(issuerRef(cert).SignerName(), result).Inc()
	r.recorder.Eventf(cert, nil, corev1.EventTypeWarning, reason, "Issue", "%s", msg)
	log.FromContext(ctx).Info("issuing failed", logkeys.Reason, reason, logkeys.Message, message, logkeys.RetryIn, wait)
	return reconcile.Result{RequeueAfter: wait}
}

// policyReason reports whether reason is one of the policy's denials.
func policyReason(reason string) bool { return isPolicyReason[reason] }

var isPolicyReason = map[string]bool{
	policy.ReasonWrongNamespace: true, policy.ReasonCANotAllowed: true, policy.ReasonUsageNotAllowed: true,
	policy.ReasonKeyTypeNotAllowed: true, policy.ReasonDurationTooLong: true, policy.ReasonNoIdentity: true,
	policy.ReasonNameNotAllowed: true, policy.ReasonIPAddressForbidden: true, policy.ReasonEmailForbidden: true,
	policy.ReasonSubjectNotAllowed: true,
}

// backoffAfter is the wait after n failures in a row.
func backoffAfter(n int32) time.Duration {
	wait := BackoffBase
	for i := int32(1); i < n && wait < BackoffMax; i++ {
		wait *= 2
	}
	return min(wait, BackoffMax)
}

// backoff is how long cert must still wait after its last failure; zero
// when it may try now, or when its spec or issuer changed since.
func (r *Reconciler) backoff(cert *v1alpha1.Certificate, iss v1alpha1.GenericIssuer, now time.Time) time.Duration {
	r.mu.Lock()
	f, ok := r.failures[client.ObjectKeyFromObject(cert)]
	if !ok {
		// A restarted controller backs off as its predecessor did.
		f = failureFromStatus(cert, iss)
		r.failures[client.ObjectKeyFromObject(cert)] = f
	}
	r.mu.Unlock()
	if f.inARow == 0 || f.uid != cert.UID || f.generation != cert.Generation || f.issuerVersion != iss.GetResourceVersion() {
		return 0
	}
	return max(f.at.Add(backoffAfter(f.inARow)).Sub(now), 0)
}

// failureFromStatus is the failure cert's status records, for its current
// spec and iss as they are: what a controller that did not see it happen
// knows of it.
func failureFromStatus(cert *v1alpha1.Certificate, iss v1alpha1.GenericIssuer) failure {
	f := failure{uid: cert.UID, generation: cert.Generation, issuerVersion: iss.GetResourceVersion()}
	c := meta.FindStatusCondition(cert.Status.Conditions, v1alpha1.ConditionIssuing)
	if cert.Status.LastFailureTime == nil || c == nil || c.Status != metav1.ConditionFalse || c.ObservedGeneration != cert.Generation {
		return f
	}
	f.inARow, f.at = cert.Status.FailedIssuanceAttempts, cert.Status.LastFailureTime.Time
	return f
}

func setValidity(cert *v1alpha1.Certificate, leaf *x509.Certificate, renewAt time.Time) {
	cert.Status.NotBefore = &metav1.Time{Time: leaf.NotBefore}
	cert.Status.NotAfter = &metav1.Time{Time: leaf.NotAfter}
	cert.Status.RenewalTime = &metav1.Time{Time: renewAt.Truncate(time.Second)}
}

// passwords reads the passwords of the keystores cert asks for. A missing
// Secret or key is a message naming the field, not an error.
func (r *Reconciler) passwords(ctx context.Context, cert *v1alpha1.Certificate) (keystorePasswords, string, error) {
	var p keystorePasswords
	ks := cert.Spec.Keystores
	if ks == nil {
		return p, "", nil
	}
	read := func(field string, k *v1alpha1.Keystore) (*string, string, error) {
		if k == nil {
			return nil, "", nil
		}
		key := k.PasswordSecretRef.Key
		if key == "" {
			key = "password"
		}
		ref := types.NamespacedName{Namespace: cert.Namespace, Name: k.PasswordSecretRef.Name}
		secret, err := r.opts.Secrets.Get(ctx, ref)
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Sprintf("spec.keystores.%s.passwordSecretRef: Secret %s does not exist", field, ref.Name), nil
		case err != nil:
			return nil, "", err
		}
		v, ok := secret.Data[key]
		if !ok {
			return nil, fmt.Sprintf("spec.keystores.%s.passwordSecretRef: Secret %s has no key %q", field, ref.Name, key), nil
		}
		s := string(v)
		return &s, "", nil
	}
	var msg string
	var err error
	if p.PKCS12, msg, err = read("pkcs12", ks.PKCS12); msg != "" || err != nil {
		return p, msg, err
	}
	p.JKS, msg, err = read("jks", ks.JKS)
	return p, msg, err
}

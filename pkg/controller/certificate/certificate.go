// Package certificate keeps the Secrets of Certificates: a private key the
// controller generates, a certificate from an Issuer or ClusterIssuer and
// the issuer's trust bundle, renewed before expiry. It is the request
// source of what reads Secrets (an Ingress controller).
//
// A Certificate is signed in-process, through the signing path every
// request source shares: it is bound to its namespace and no pod
// (policy.Binding), the issuer's policy judges what it asks for
// (policy.Allow), and issuer.Registry.Issue signs. No CertificateSigningRequest
// is made: the CSR path approves only the node driver's requests, bound to
// a node, and stays so; a Certificate's requester is its namespace, which
// the policy's templates see as ${POD_NAMESPACE} with no pod, so a pod's
// default names never apply to it.
package certificate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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
	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/policy"
	"github.com/certmint/certmint/pkg/request"
)

// Indexes of Certificates: by the signer name of their issuer, so an
// issuer's change finds them, and by the Secrets they read or write
// ("namespace/name").
const (
	IndexIssuer  = "certmint.io/issuer"
	IndexSecrets = "certmint.io/secrets"
)

// Reasons of a Certificate's conditions and Events besides the policy's and
// the signing path's.
const (
	// ReasonReady is Ready's reason when True; ReasonIssued an Event's.
	ReasonReady           = "Ready"
	ReasonIssued          = "Issued"
	ReasonInvalidSpec     = "InvalidSpec"
	ReasonIssuerNotFound  = "IssuerNotFound"
	ReasonSecretNotUsable = "SecretNotUsable"
	ReasonPasswordMissing = "KeystorePasswordNotFound"
	ReasonIssuing         = "Issuing"
	ReasonDoesNotExist    = "DoesNotExist"
	ReasonNotIssued       = "NotIssued"
	// ReasonIssuerError is a failure of the issuer that may pass, such as
	// an ACME or Vault server that cannot be reached.
	ReasonIssuerError = "IssuerError"
)

// minReissueInterval is the least time between two certificates of a
// Certificate for its renewal: see held.renewalTime.
const minReissueInterval = time.Minute

// Backoff bounds the wait between failed issuances: it doubles from
// BackoffBase with every failure in a row, up to BackoffMax.
const (
	BackoffBase = 30 * time.Second
	BackoffMax  = time.Hour
)

// DefaultWorkers is how many Certificates are handled at once by default.
const DefaultWorkers = 8

// Options configures the Certificate controller.
type Options struct {
	// ClusterDomain and TrustDomain fill the policy templates of the same
	// names. Required.
	ClusterDomain string
	TrustDomain   string
	// Registry signs for every kind of issuer spec, and Secrets reads
	// Secrets as the backends do. Required.
	Registry *issuer.Registry
	Secrets  *issuer.Secrets
	// Workers defaults to DefaultWorkers.
	Workers int
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Reconciler keeps Certificates' Secrets.
type Reconciler struct {
	client   client.Client
	live     client.Reader
	recorder events.EventRecorder
	opts     Options

	mu sync.Mutex
	// pending holds the key and request of an issuance a backend is still
	// working on (an ACME order), so that the next pass asks for the same:
	// a request signed again differs (ECDSA signatures are randomized),
	// and the backend would start over.
	pending map[types.NamespacedName]pendingRequest
	// failures holds the last failed issuance of each Certificate, for the
	// backoff; a new spec or a changed issuer starts afresh.
	failures map[types.NamespacedName]failure
	// secretNames holds the Secret each Certificate names, to forget the
	// copy of the last one when that changes.
	secretNames map[types.NamespacedName]string
}

type pendingRequest struct {
	uid        types.UID
	generation int64
	key        crypto.Signer
	csr        []byte
}

type failure struct {
	uid           types.UID
	generation    int64
	issuerVersion string
	at            time.Time
	inARow        int32
}

// SetupWithManager registers the Certificate controller.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts Options) error {
	switch {
	case opts.ClusterDomain == "" || opts.TrustDomain == "":
		return errors.New("certificate controller: ClusterDomain and TrustDomain are required")
	case opts.Registry == nil || opts.Secrets == nil:
		return errors.New("certificate controller: Registry and Secrets are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	r := &Reconciler{
		client:      mgr.GetClient(),
		live:        mgr.GetAPIReader(),
		recorder:    mgr.GetEventRecorder("certmint-controller"),
		opts:        opts,
		pending:     map[types.NamespacedName]pendingRequest{},
		failures:    map[types.NamespacedName]failure{},
		secretNames: map[types.NamespacedName]string{},
	}
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(ctx, &v1alpha1.Certificate{}, IndexIssuer, func(o client.Object) []string {
		return []string{issuerRef(o.(*v1alpha1.Certificate)).SignerName()}
	}); err != nil {
		return fmt.Errorf("indexing Certificates by issuer: %w", err)
	}
	if err := indexer.IndexField(ctx, &v1alpha1.Certificate{}, IndexSecrets, func(o client.Object) []string {
		return secretsOf(o.(*v1alpha1.Certificate))
	}); err != nil {
		return fmt.Errorf("indexing Certificates by Secret: %w", err)
	}
	return builder.ControllerManagedBy(mgr).
		Named("certificate").
		// Its own status writes do not wake a Certificate.
		For(&v1alpha1.Certificate{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.certificatesForSecret)).
		Watches(&v1alpha1.Issuer{}, handler.EnqueueRequestsFromMapFunc(r.certificatesForIssuer)).
		Watches(&v1alpha1.ClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(r.certificatesForIssuer)).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.Workers}).
		Complete(r)
}

// issuerRef is the issuer cert names; an Issuer is in cert's namespace.
func issuerRef(cert *v1alpha1.Certificate) request.IssuerRef {
	if cert.Spec.IssuerRef.Kind == string(request.KindClusterIssuer) {
		return request.IssuerRef{Kind: request.KindClusterIssuer, Name: cert.Spec.IssuerRef.Name}
	}
	return request.IssuerRef{Kind: request.KindIssuer, Namespace: cert.Namespace, Name: cert.Spec.IssuerRef.Name}
}

// secretsOf names the Secrets cert writes or reads ("namespace/name").
func secretsOf(cert *v1alpha1.Certificate) []string {
	names := []string{cert.Spec.SecretName}
	if ks := cert.Spec.Keystores; ks != nil {
		for _, k := range []*v1alpha1.Keystore{ks.PKCS12, ks.JKS} {
			if k != nil {
				names = append(names, k.PasswordSecretRef.Name)
			}
		}
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = types.NamespacedName{Namespace: cert.Namespace, Name: n}.String()
	}
	return out
}

func (r *Reconciler) certificatesForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	return r.list(ctx, client.MatchingFields{IndexSecrets: client.ObjectKeyFromObject(o).String()}, client.InNamespace(o.GetNamespace()))
}

// certificatesForIssuer wakes an issuer's Certificates when it changes:
// it became Ready, its trust bundle changed or it asks for re-issuance.
func (r *Reconciler) certificatesForIssuer(ctx context.Context, o client.Object) []reconcile.Request {
	iss, ok := o.(v1alpha1.GenericIssuer)
	if !ok {
		return nil
	}
	return r.list(ctx, client.MatchingFields{IndexIssuer: issuer.RefFor(iss).SignerName()})
}

func (r *Reconciler) list(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var certs v1alpha1.CertificateList
	if err := r.client.List(ctx, &certs, opts...); err != nil {
		log.FromContext(ctx).Error(err, "listing Certificates")
		return nil
	}
	out := make([]reconcile.Request, len(certs.Items))
	for i := range certs.Items {
		out[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&certs.Items[i])}
	}
	return out
}

// Reconcile brings one Certificate's Secret in line with its spec and
// issuer: nothing when it is current, one Secret write when it is not, and
// a status write when what the status says changed.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cert v1alpha1.Certificate
	if err := r.client.Get(ctx, req.NamespacedName, &cert); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			r.forgetSecret(req.NamespacedName, "")
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	r.forgetSecret(req.NamespacedName, cert.Spec.SecretName)
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues(logkeys.Certificate, req.String()))
	before := cert.Status.DeepCopy()
	res, err := r.reconcile(ctx, &cert)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !equality.Semantic.DeepEqual(before, &cert.Status) {
		if err := r.client.Status().Update(ctx, &cert); err != nil {
			if apierrors.IsConflict(err) {
				return reconcile.Result{RequeueAfter: time.Second}, nil
			}
			return reconcile.Result{}, fmt.Errorf("writing status: %w", err)
		}
	}
	return res, nil
}

// forgetSecret drops the copy of the Secret a Certificate wrote, private
// key and all, once the Certificate names another one (secretName) or is
// gone (""): nothing asks for it again, and the copy would stay for good.
func (r *Reconciler) forgetSecret(cert types.NamespacedName, secretName string) {
	r.mu.Lock()
	last, ok := r.secretNames[cert]
	if secretName == "" {
		delete(r.secretNames, cert)
	} else {
		r.secretNames[cert] = secretName
	}
	r.mu.Unlock()
	if ok && last != secretName {
		r.opts.Secrets.Forget(types.NamespacedName{Namespace: cert.Namespace, Name: last})
	}
}

// reconcile does the work of one pass and records its outcome in
// cert.Status.
func (r *Reconciler) reconcile(ctx context.Context, cert *v1alpha1.Certificate) (reconcile.Result, error) {
	now := r.opts.Clock.Now()
	w, err := parseSpec(cert)
	if err != nil {
		r.notReady(cert, ReasonInvalidSpec, err.Error())
		return reconcile.Result{}, nil
	}
	secret, err := r.readSecret(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: cert.Spec.SecretName})
	if err != nil {
		return reconcile.Result{}, err
	}
	if msg := checkOwnership(secret, cert); msg != "" {
		r.notReady(cert, ReasonSecretNotUsable, msg)
		return reconcile.Result{}, nil
	}
	h := readHeld(secret)
	if h.revision > cert.Status.Revision {
		cert.Status.Revision = h.revision
	}
	ref := w.cert.Issuer
	iss, err := issuer.Get(ctx, r.client, ref)
	if apierrors.IsNotFound(err) {
		r.blocked(cert, h, now, ReasonIssuerNotFound, fmt.Sprintf("%s does not exist; create it or correct spec.issuerRef", ref))
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	passwords, msg, err := r.passwords(ctx, cert)
	if err != nil {
		return reconcile.Result{}, err
	}
	if msg != "" {
		r.blocked(cert, h, now, ReasonPasswordMissing, msg)
		return reconcile.Result{}, nil
	}

	pol := iss.GetSpec().Policy
	expected := w.cert.Duration
	if expected == 0 {
		expected = min(policy.DefaultDuration, policy.MaxDuration(pol))
	}
	// A backend that chooses the lifetime itself, as an ACME server does,
	// is held to its own bound instead.
	if kind, err := r.opts.Registry.For(iss.GetSpec()); err == nil && kind.MaxLifetime > 0 {
		expected = kind.MaxLifetime
	}
	var reissueBefore time.Time
	if t := iss.GetStatus().ReissueBefore; t != nil {
		reissueBefore = t.Time
	}
	bundlePEM := []byte(iss.GetStatus().TrustBundle)
	anchors, err := pki.ParseCertificates(bundlePEM)
	if err != nil && len(bundlePEM) > 0 {
		return reconcile.Result{}, fmt.Errorf("reading the trust bundle of %s: %w", ref, err)
	}
	hash, err := specHash(&cert.Spec)
	if err != nil {
		return reconcile.Result{}, err
	}
	why := reissueReason(h, hash, w, expected, anchors, reissueBefore, now)
	if why == "" {
		return r.keep(ctx, cert, w, h, bundlePEM, anchors, passwords, now)
	}
	// The certificate held is still good to serve while a new one is
	// obtained; Ready says so.
	r.recordHeld(cert, h, mismatch(h, hash, w, expected, anchors, now))
	return r.issue(ctx, cert, w, iss, h, hash, passwords, expected, why, now)
}

// readSecret reads a Certificate's Secret; nil when it does not exist. The
// cache of Secrets' metadata may not show a Secret this controller has just
// created, so its absence is checked with the API server: issuing again for
// a Secret that exists would waste a certificate.
func (r *Reconciler) readSecret(ctx context.Context, ref types.NamespacedName) (*corev1.Secret, error) {
	secret, err := r.opts.Secrets.Get(ctx, ref)
	if !apierrors.IsNotFound(err) {
		return secret, err
	}
	var live corev1.Secret
	switch err := r.live.Get(ctx, ref, &live); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading Secret %s: %w", ref, err)
	}
	return &live, nil
}

// keep is a pass over a Certificate whose certificate is current: the
// Secret's ca.crt, keystores and metadata follow the issuer, the passwords
// and the template, and the next pass is due at renewal time.
func (r *Reconciler) keep(ctx context.Context, cert *v1alpha1.Certificate, w *wanted, h held, bundlePEM []byte, anchors []*x509.Certificate, passwords keystorePasswords, now time.Time) (reconcile.Result, error) {
	r.forget(client.ObjectKeyFromObject(cert))
	secret := h.secret.DeepCopy()
	labels, annotations := withMetadata(secret, cert)
	changed := !maps.Equal(labels, secret.Labels) || !maps.Equal(annotations, secret.Annotations)
	keystores, err := keystoresHash(h.key, passwords)
	if err != nil {
		return reconcile.Result{}, err
	}
	// The issuer's trust changed (a CA rotation), or a keystore's
	// password: the certificate stays, the files carry the new CAs and
	// passwords.
	if (len(bundlePEM) > 0 && string(secret.Data[KeyCA]) != string(bundlePEM)) || annotations[AnnotationKeystores] != keystores {
		if len(bundlePEM) == 0 {
			bundlePEM = secret.Data[KeyCA]
			if anchors, err = pki.ParseCertificates(bundlePEM); err != nil {
				return reconcile.Result{}, fmt.Errorf("reading the Secret's ca.crt: %w", err)
			}
		}
		data, err := secretData(w, h.key, secret.Data[corev1.TLSCertKey], h.chain, anchors, bundlePEM, passwords, now)
		if err != nil {
			return reconcile.Result{}, err
		}
		secret.Data = data
		annotations[AnnotationKeystores] = keystores
		changed = true
	}
	if changed {
		secret.Labels, secret.Annotations = labels, annotations
		if err := r.client.Update(ctx, secret); err != nil {
			return reconcile.Result{}, fmt.Errorf("updating Secret %s: %w", secret.Name, err)
		}
		r.opts.Secrets.Keep(secret)
	}
	leaf := h.chain[0]
	renewAt := h.renewalTime(w)
	setValidity(cert, leaf, renewAt)
	meta.SetStatusCondition(&cert.Status.Conditions, readyCondition(cert, leaf))
	meta.RemoveStatusCondition(&cert.Status.Conditions, v1alpha1.ConditionIssuing)
	cert.Status.FailedIssuanceAttempts, cert.Status.LastFailureTime = 0, nil
	return reconcile.Result{RequeueAfter: max(renewAt.Sub(now), time.Second)}, nil
}

// issue obtains a new certificate for cert and writes it into its Secret in
// one update, or records why it could not and when to try again.
func (r *Reconciler) issue(ctx context.Context, cert *v1alpha1.Certificate, w *wanted, iss v1alpha1.GenericIssuer, h held, hash string, passwords keystorePasswords, expected time.Duration, why string, now time.Time) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	if wait := r.backoff(cert, iss, now); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	if !issuer.IsReady(iss) {
		r.issuing(cert, issuer.ReasonIssuerNotReady, fmt.Sprintf("%s is not Ready; the certificate is issued once it is", w.cert.Issuer))
		return reconcile.Result{RequeueAfter: issuer.IssuerWait}, nil
	}
	pol := iss.GetSpec().Policy
	allowed := func(req *issuer.Request) policy.Decision {
		return policy.Allow(policy.Allowed{
			Issuer: w.cert.Issuer, Policy: pol, ClusterDomain: r.opts.ClusterDomain, TrustDomain: r.opts.TrustDomain,
			Binding: policy.Binding{Namespace: cert.Namespace}, Request: req,
		})
	}
	// Judged before a key is made: a large RSA key takes seconds of CPU,
	// which a request the policy refuses must not cost.
	if d := allowed(w.request(standInKey(w.cert.Key))); !d.Allowed {
		return r.failed(ctx, cert, iss, d.Reason, specField(d.Part)+": "+d.Message, now), nil
	}
	if !meta.IsStatusConditionTrue(cert.Status.Conditions, v1alpha1.ConditionIssuing) {
		r.recorder.Eventf(cert, nil, corev1.EventTypeNormal, ReasonIssuing, "Issue", "issuing a certificate: %s", why)
	}
	key, der, err := r.requestFor(cert, w, h)
	if err != nil {
		return reconcile.Result{}, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return reconcile.Result{}, err
	}
	certReq := issuer.RequestFromCSR(csr, w.cert.Usages, w.cert.Duration)
	d := allowed(certReq)
	if !d.Allowed {
		return r.failed(ctx, cert, iss, d.Reason, specField(d.Part)+": "+d.Message, now), nil
	}
	certReq.Duration = d.Duration
	certReq.Owner = &metav1.OwnerReference{
		APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Certificate", Name: cert.Name, UID: cert.UID,
	}
	certReq.Namespace = cert.Namespace
	start := r.opts.Clock.Now()
	res := r.opts.Registry.Issue(ctx, iss, certReq)
	metrics.SignDuration.WithLabelValues(w.cert.Issuer.SignerName()).Observe(r.opts.Clock.Since(start).Seconds())
	switch res.Outcome {
	case issuer.Wait, issuer.WaitForIssuer:
		r.keepPending(cert, key, der)
		reason, msg := res.Reason, res.Message
		if reason == "" {
			reason, msg = ReasonIssuing, "the issuer is working on the request"
		}
		r.issuing(cert, reason, msg)
		return reconcile.Result{RequeueAfter: res.RetryAfter}, nil
	case issuer.Fail:
		return r.failed(ctx, cert, iss, res.Reason, res.Message, now), nil
	case issuer.Retry:
		// The issuer could not be reached or failed for now: the same key
		// is asked for again after the backoff, and the status says why.
		r.keepPending(cert, key, der)
		return r.failed(ctx, cert, iss, ReasonIssuerError, res.Err.Error(), now), nil
	}

	chain, err := pki.ParseCertificates(res.Chain)
	if err != nil {
		return r.failed(ctx, cert, iss, issuer.ReasonSigningFailed, "the issuer returned no valid chain: "+err.Error(), now), nil
	}
	check := w.cert
	// expected is longer only for a backend that chooses the lifetime.
	check.Duration = max(d.Duration, expected)
	if err := check.Verify(key.Public(), chain, now); err != nil {
		return r.failed(ctx, cert, iss, issuer.ReasonSigningFailed, "the issuer returned a certificate other than the one asked for: "+err.Error(), now), nil
	}
	bundlePEM := []byte(iss.GetStatus().TrustBundle)
	anchors, err := pki.ParseCertificates(bundlePEM)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("reading the issuer's trust bundle: %w", err)
	}
	data, err := secretData(w, key, res.Chain, chain, anchors, bundlePEM, passwords, now)
	if err != nil {
		return reconcile.Result{}, err
	}
	keystores, err := keystoresHash(key, passwords)
	if err != nil {
		return reconcile.Result{}, err
	}
	revision := max(cert.Status.Revision, h.revision) + 1
	own := map[string]string{
		AnnotationSpecHash:  hash,
		AnnotationIssuedAt:  now.UTC().Format(time.RFC3339),
		AnnotationRevision:  strconv.FormatInt(revision, 10),
		AnnotationKeystores: keystores,
	}
	if t := iss.GetStatus().ReissueBefore; t != nil {
		own[AnnotationReissueBefore] = t.UTC().Format(time.RFC3339)
	}
	if err := r.writeSecret(ctx, cert, h.secret, data, own); err != nil {
		// The certificate is for this request: a conflicting write of
		// the Secret is followed by a pass that asks with the same one.
		r.keepPending(cert, key, der)
		return reconcile.Result{}, err
	}
	r.forget(client.ObjectKeyFromObject(cert))
	leaf := chain[0]
	renewAt := held{chain: chain, issuedAt: now}.renewalTime(w)
	cert.Status.Revision = revision
	cert.Status.FailedIssuanceAttempts, cert.Status.LastFailureTime = 0, nil
	setValidity(cert, leaf, renewAt)
	meta.SetStatusCondition(&cert.Status.Conditions, readyCondition(cert, leaf))
	meta.RemoveStatusCondition(&cert.Status.Conditions, v1alpha1.ConditionIssuing)
	metrics.Certificates.WithLabelValues(w.cert.Issuer.SignerName(), metrics.ResultIssued).Inc()
	r.recorder.Eventf(cert, nil, corev1.EventTypeNormal, ReasonIssued, "Issue", "certificate %d issued by %s, valid until %s, renewal at %s",
		revision, w.cert.Issuer, leaf.NotAfter.UTC().Format(time.RFC3339), renewAt.UTC().Format(time.RFC3339))
	logger.Info("certificate issued", logkeys.Secret, cert.Spec.SecretName, logkeys.NotAfter, leaf.NotAfter, logkeys.RenewAt, renewAt)
	return reconcile.Result{RequeueAfter: max(renewAt.Sub(now), time.Second)}, nil
}

// specField is the field of a Certificate's spec a part of its request
// comes from.
func specField(p policy.Part) string {
	switch p {
	case policy.PartIssuer:
		return "spec.issuerRef"
	case policy.PartKey:
		return "spec.privateKey"
	case policy.PartIdentity, "":
		return "spec"
	}
	return "spec." + string(p)
}

// writeSecret writes data into cert's Secret, creating it when old is nil,
// with the controller's annotations: key and certificate change together,
// in one write.
func (r *Reconciler) writeSecret(ctx context.Context, cert *v1alpha1.Certificate, old *corev1.Secret, data map[string][]byte, own map[string]string) error {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: cert.Namespace, Name: cert.Spec.SecretName},
		Type:       corev1.SecretTypeTLS,
	}
	if old != nil {
		secret = old.DeepCopy()
	}
	secret.Labels, secret.Annotations = withMetadata(secret, cert)
	maps.Copy(secret.Annotations, own)
	secret.Data = data
	var err error
	if old == nil {
		err = r.client.Create(ctx, secret)
	} else {
		err = r.client.Update(ctx, secret)
	}
	if err != nil {
		return fmt.Errorf("writing Secret %s: %w", secret.Name, err)
	}
	r.opts.Secrets.Keep(secret)
	return nil
}

// requestFor is the key to certify and the request (DER) to ask with: those
// of a pending issuance, or a request for the Secret's key when the spec
// keeps it and it fits, or for a new one.
func (r *Reconciler) requestFor(cert *v1alpha1.Certificate, w *wanted, h held) (crypto.Signer, []byte, error) {
	r.mu.Lock()
	p, ok := r.pending[client.ObjectKeyFromObject(cert)]
	r.mu.Unlock()
	if ok && p.uid == cert.UID && p.generation == cert.Generation {
		return p.key, p.csr, nil
	}
	key := h.key
	if !w.reuseKey || key == nil || !keyFits(key, w.cert.Key) {
		var err error
		if key, err = keystore.Generate(w.cert.Key.Algorithm, w.cert.Key.Size); err != nil {
			return nil, nil, err
		}
	}
	der, err := w.cert.CertificateRequest(key)
	return key, der, err
}

func (r *Reconciler) keepPending(cert *v1alpha1.Certificate, key crypto.Signer, csr []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[client.ObjectKeyFromObject(cert)] = pendingRequest{uid: cert.UID, generation: cert.Generation, key: key, csr: csr}
}

// forget drops the pending key and the failures kept for a Certificate
// that is gone or issued.
func (r *Reconciler) forget(name types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pending, name)
	delete(r.failures, name)
}

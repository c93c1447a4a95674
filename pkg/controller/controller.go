// Package controller wires the certmint controller together: one manager
// (leader election, caches, probes, metrics) running the issuer controllers
// and the request sources (the driver's CSRs, Certificates and the Ingresses
// that ask for them, the kubelet's PodCertificateRequests) with the issuer
// backends.
package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/acmesolver"
	"github.com/certmint/certmint/pkg/controller/certificate"
	csrcontroller "github.com/certmint/certmint/pkg/controller/csr"
	"github.com/certmint/certmint/pkg/controller/ingress"
	issuercontroller "github.com/certmint/certmint/pkg/controller/issuer"
	"github.com/certmint/certmint/pkg/controller/metrics"
	"github.com/certmint/certmint/pkg/controller/podcertificate"
	"github.com/certmint/certmint/pkg/controller/trustbundle"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/acme"
	"github.com/certmint/certmint/pkg/issuer/ca"
	"github.com/certmint/certmint/pkg/issuer/selfsigned"
	"github.com/certmint/certmint/pkg/issuer/vault"
)

// Defaults for Options.
const (
	DefaultClusterDomain    = "cluster.local"
	DefaultDriverDaemonSet  = "certmint-driver"
	DefaultLeaderElectionID = "certmint-controller"
	DefaultLeaseDuration    = 15 * time.Second
	DefaultRenewDeadline    = 10 * time.Second
	DefaultRetryPeriod      = 2 * time.Second
	DefaultACMEHTTP01Addr   = ":8089"
	// DefaultACMEHTTP01Service is the solver Service of the manifests.
	DefaultACMEHTTP01Service = acmesolver.DefaultService
)

// userAgent names the controller to ACME servers.
const userAgent = "certmint-controller"

// Options configures Run.
type Options struct {
	// Config is how to reach the API server. Required.
	Config *rest.Config
	// Logger is used for everything the controller logs. Required.
	Logger logr.Logger

	// DriverNamespace and DriverServiceAccount are the only requester whose
	// requests are approved. Required.
	DriverNamespace      string
	DriverServiceAccount string
	// DriverDaemonSet is the DaemonSet in DriverNamespace whose pods alone
	// may request; defaults to certmint-driver.
	DriverDaemonSet string
	// ClusterResourceNamespace holds the Secrets of ClusterIssuers and the
	// generated roots of selfSigned issuers. Required.
	ClusterResourceNamespace string

	// ClusterDomain fills ${CLUSTER_DOMAIN}; defaults to cluster.local.
	ClusterDomain string
	// TrustDomain fills ${TRUST_DOMAIN}; defaults to ClusterDomain.
	TrustDomain string

	// LeaderElect makes only one replica at a time act.
	LeaderElect bool
	// LeaderElectionNamespace defaults to ClusterResourceNamespace.
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election;
	// zero means the defaults above.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration

	// MetricsAddr serves /metrics; "0" disables it. ProbeAddr serves
	// /healthz and /readyz; "0" disables it.
	MetricsAddr string
	ProbeAddr   string

	// CleanupGrace, PendingMaxAge and Workers tune the request controller;
	// zero means its defaults.
	CleanupGrace  time.Duration
	PendingMaxAge time.Duration
	Workers       int

	// ACMEHTTP01Addr serves ACME HTTP-01 challenges on every replica;
	// defaults to :8089, and "0" disables it. The leader publishes the
	// challenges in ConfigMaps in ClusterResourceNamespace.
	ACMEHTTP01Addr string
	// ACMEHTTP01Service is the Service in front of ACMEHTTP01Addr, which
	// challenge Ingresses route to from its namespace: "name" in
	// ClusterResourceNamespace or "namespace/name"; defaults to
	// certmint-acme-http01.
	ACMEHTTP01Service string

	// ACMEHTTP01TrustedProxies are the addresses (CIDRs) of the proxies in
	// front of the solver Service, usually the Ingress controllers' pods,
	// whose X-Forwarded-For names the client: the challenge server limits
	// the API reads a client may cause per client, and without them every
	// request through a proxy counts as the proxy's.
	ACMEHTTP01TrustedProxies []netip.Prefix

	// RequireSecretsPolicy refuses to run while the API server would let
	// the controller create a ServiceAccount token Secret; see
	// checkSecretsPolicy.
	RequireSecretsPolicy bool
}

func (o *Options) defaultAndValidate() error {
	switch {
	case o.Config == nil:
		return errors.New("a REST config is required")
	case o.Logger.GetSink() == nil:
		return errors.New("a logger is required")
	case o.DriverNamespace == "" || o.DriverServiceAccount == "":
		return errors.New("the driver namespace and ServiceAccount are required")
	case o.ClusterResourceNamespace == "":
		return errors.New("the cluster resource namespace is required")
	}
	if o.DriverDaemonSet == "" {
		o.DriverDaemonSet = DefaultDriverDaemonSet
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.TrustDomain == "" {
		o.TrustDomain = o.ClusterDomain
	}
	if o.LeaderElectionNamespace == "" {
		o.LeaderElectionNamespace = o.ClusterResourceNamespace
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.RenewDeadline == 0 {
		o.RenewDeadline = DefaultRenewDeadline
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = DefaultRetryPeriod
	}
	if o.ACMEHTTP01Addr == "" {
		o.ACMEHTTP01Addr = DefaultACMEHTTP01Addr
	}
	return nil
}

// Run runs the controller until ctx is done or it fails. Losing the leader
// lease ends it with an error, so the process restarts as a standby.
func Run(ctx context.Context, opts Options) error {
	if err := opts.defaultAndValidate(); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}

	mgr, err := manager.New(opts.Config, manager.Options{
		Scheme: scheme,
		Logger: opts.Logger,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				// Every pod is cached, so keep only what policy reads.
				&corev1.Pod{}: {Transform: slimPod},
				// Node binding checks that the requesting driver pod is the
				// live DaemonSet's, which is all of them the controller needs.
				&appsv1.DaemonSet{}: {
					Namespaces: map[string]cache.Config{opts.DriverNamespace: {}},
					Field:      fields.OneTermEqualSelector("metadata.name", opts.DriverDaemonSet),
				},
				// Only the HTTP-01 challenges the leader publishes.
				&corev1.ConfigMap{}: acmesolver.CacheConfig(opts.ClusterResourceNamespace),
				// Only the ClusterTrustBundles certmint publishes.
				&certificatesv1.ClusterTrustBundle{}: trustbundle.CacheConfig(),
			},
		},
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              DefaultLeaderElectionID,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 ptr.To(opts.LeaseDuration),
		RenewDeadline:                 ptr.To(opts.RenewDeadline),
		RetryPeriod:                   ptr.To(opts.RetryPeriod),
		Metrics:                       metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:        opts.ProbeAddr,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	if opts.RequireSecretsPolicy {
		uncached, err := client.New(opts.Config, client.Options{Scheme: scheme})
		if err != nil {
			return err
		}
		if err := checkSecretsPolicy(ctx, uncached, opts.ClusterResourceNamespace); err != nil {
			return err
		}
	}
	secrets, err := newSecrets(ctx, mgr)
	if err != nil {
		return err
	}
	registry, challenges, err := newRegistry(mgr, opts, secrets)
	if err != nil {
		return err
	}
	if err := addACMESolver(mgr, opts, challenges); err != nil {
		return err
	}

	if err := issuercontroller.SetupWithManager(ctx, mgr, issuercontroller.Options{Registry: registry}); err != nil {
		return err
	}
	if err := csrcontroller.SetupWithManager(ctx, mgr, csrcontroller.Options{
		DriverNamespace:      opts.DriverNamespace,
		DriverServiceAccount: opts.DriverServiceAccount,
		DriverDaemonSet:      opts.DriverDaemonSet,
		ClusterDomain:        opts.ClusterDomain,
		TrustDomain:          opts.TrustDomain,
		Registry:             registry,
		CleanupGrace:         opts.CleanupGrace,
		PendingMaxAge:        opts.PendingMaxAge,
		Workers:              opts.Workers,
	}); err != nil {
		return err
	}
	if err := certificate.SetupWithManager(ctx, mgr, certificate.Options{
		ClusterDomain: opts.ClusterDomain,
		TrustDomain:   opts.TrustDomain,
		Registry:      registry,
		Secrets:       secrets,
	}); err != nil {
		return err
	}
	if err := ingress.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := addNativePath(ctx, mgr, opts, registry); err != nil {
		return err
	}

	certificateMetrics, err := metrics.NewCertificates(metrics.CertificatesOptions{
		Reader: mgr.GetCache(), Elected: mgr.Elected(), Logger: opts.Logger.WithName("metrics"),
	})
	if err != nil {
		return err
	}
	if err := ctrlmetrics.Registry.Register(certificateMetrics); err != nil {
		return fmt.Errorf("registering the Certificates' metrics: %w", err)
	}
	// The registry is the process's; a later Run in the same process
	// registers its own collector.
	defer ctrlmetrics.Registry.Unregister(certificateMetrics)

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready once the caches are filled: a standby replica is ready too, so
	// it can take over without a cold start.
	if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// newSecrets is the reader of Secrets for backends and Certificates, which
// learns of changes from the cache of Secrets' metadata.
func newSecrets(ctx context.Context, mgr manager.Manager) (*issuer.Secrets, error) {
	secrets := issuer.NewSecrets(mgr.GetClient(), mgr.GetAPIReader())
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	informer, err := mgr.GetCache().GetInformer(ctx, meta)
	if err != nil {
		return nil, fmt.Errorf("starting the informer of Secrets' metadata: %w", err)
	}
	return secrets, secrets.ForgetDeleted(informer)
}

// newRegistry makes every kind of backend the controller has. They read
// Secrets through secrets, as the Certificate controller does: the
// manager's cache keeps only the metadata of Secrets, and a Secret is read
// from the API server when it changed.
func newRegistry(mgr manager.Manager, opts Options, secrets *issuer.Secrets) (*issuer.Registry, *acmesolver.Challenges, error) {
	loader := ca.NewLoader(secrets)
	caBackend, err := ca.New(ca.Options{Loader: loader, ClusterResourceNamespace: opts.ClusterResourceNamespace})
	if err != nil {
		return nil, nil, err
	}
	selfSignedBackend, err := selfsigned.New(selfsigned.Options{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Loader: loader, Namespace: opts.ClusterResourceNamespace})
	if err != nil {
		return nil, nil, err
	}
	service, err := solverService(opts.ACMEHTTP01Service, opts.ClusterResourceNamespace)
	if err != nil {
		return nil, nil, err
	}
	challenges, err := acmesolver.NewChallenges(acmesolver.ChallengesOptions{
		Client:    mgr.GetClient(),
		Reader:    mgr.GetCache(),
		Namespace: opts.ClusterResourceNamespace,
		Service:   service,
	})
	if err != nil {
		return nil, nil, err
	}
	acmeBackend, err := acme.New(acme.Options{
		Client:                   mgr.GetClient(),
		Secrets:                  secrets,
		Solver:                   challenges,
		ClusterResourceNamespace: opts.ClusterResourceNamespace,
		UserAgent:                userAgent,
	})
	if err != nil {
		return nil, nil, err
	}
	vaultBackend, err := vault.New(vault.Options{
		Secrets:                  secrets,
		Tokens:                   vault.ServiceAccountTokens(mgr.GetClient()),
		ClusterResourceNamespace: opts.ClusterResourceNamespace,
	})
	if err != nil {
		return nil, nil, err
	}
	// Collects idle orders and withdraws challenges left behind, on the
	// leader.
	if err := mgr.Add(acmeBackend); err != nil {
		return nil, nil, err
	}
	registry, err := issuer.NewRegistry(selfSignedBackend.Kind(), caBackend.Kind(), acmeBackend.Kind(), vaultBackend.Kind())
	return registry, challenges, err
}

// solverService reads the --acme-http01-service flag: "name", in
// namespace, or "namespace/name".
func solverService(flag, namespace string) (types.NamespacedName, error) {
	ref := types.NamespacedName{Namespace: namespace, Name: flag}
	if ns, name, ok := strings.Cut(flag, "/"); ok {
		ref = types.NamespacedName{Namespace: ns, Name: name}
	}
	for _, part := range []string{ref.Namespace, ref.Name} {
		if part != "" && len(validation.IsDNS1123Label(part)) > 0 {
			return ref, fmt.Errorf("--acme-http01-service %q: want a Service name or namespace/name", flag)
		}
	}
	return ref, nil
}

// addNativePath signs the kubelet's PodCertificateRequests and publishes
// issuers' trust bundles as ClusterTrustBundles, on API servers that serve
// them (Kubernetes 1.37 and later); the CSI path works without them.
func addNativePath(ctx context.Context, mgr manager.Manager, opts Options, registry *issuer.Registry) error {
	served, err := serves(mgr, certificatesv1.SchemeGroupVersion.WithKind("ClusterTrustBundle"))
	if err != nil {
		return err
	}
	if !served {
		opts.Logger.Info("the API server does not serve ClusterTrustBundles (certificates.k8s.io/v1, Kubernetes 1.37 and later); issuers' trust bundles are not published as ClusterTrustBundles")
	} else if err := trustbundle.SetupWithManager(ctx, mgr, trustbundle.Options{}); err != nil {
		return err
	}
	if served, err = serves(mgr, certificatesv1.SchemeGroupVersion.WithKind("PodCertificateRequest")); err != nil {
		return err
	}
	if !served {
		opts.Logger.Info("the API server does not serve PodCertificateRequests (certificates.k8s.io/v1, Kubernetes 1.37 and later); podCertificate projections are not signed")
		return nil
	}
	return podcertificate.SetupWithManager(ctx, mgr, podcertificate.Options{
		ClusterDomain: opts.ClusterDomain,
		TrustDomain:   opts.TrustDomain,
		Registry:      registry,
		Workers:       opts.Workers,
	})
}

// serves reports whether the API server serves gvk.
func serves(mgr manager.Manager, gvk schema.GroupVersionKind) (bool, error) {
	_, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	switch {
	case meta.IsNoMatchError(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("discovering %s: %w", gvk, err)
	}
	return true, nil
}

// addACMESolver serves HTTP-01 challenges on every replica and, on the
// leader, sweeps the ones a former leader left behind.
func addACMESolver(mgr manager.Manager, opts Options, challenges *acmesolver.Challenges) error {
	log := opts.Logger.WithName("acme-http01")
	if opts.ACMEHTTP01Addr != "0" {
		srv, err := acmesolver.NewServer(acmesolver.ServerOptions{
			Addr:           opts.ACMEHTTP01Addr,
			Cache:          mgr.GetCache(),
			APIReader:      mgr.GetAPIReader(),
			Namespace:      opts.ClusterResourceNamespace,
			TrustedProxies: opts.ACMEHTTP01TrustedProxies,
			Logger:         log,
		})
		if err != nil {
			return err
		}
		if err := mgr.Add(srv); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("acme-http01", srv.Check); err != nil {
			return err
		}
	}
	return mgr.Add(acmesolver.NewJanitor(challenges, clock.RealClock{}, 0, log))
}

// slimPod keeps the fields of a Pod that node binding and policy read.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         pod.Namespace,
			Name:              pod.Name,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			CreationTimestamp: pod.CreationTimestamp,
			DeletionTimestamp: pod.DeletionTimestamp,
			// Node binding checks that the driver pod is its DaemonSet's.
			OwnerReferences: pod.OwnerReferences,
		},
		Spec: corev1.PodSpec{
			NodeName:           pod.Spec.NodeName,
			ServiceAccountName: pod.Spec.ServiceAccountName,
			Volumes:            podCertificateVolumes(pod.Spec.Volumes),
			// A host-network pod's addresses are its node's.
			HostNetwork: pod.Spec.HostNetwork,
		},
		// The addresses a pod may have certified (policy.podIPs) are those
		// its status has now.
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIPs: pod.Status.PodIPs},
	}
	// Mirror pods get no identity; their annotation is how policy knows
	// them. No other annotation is kept.
	if v, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		slim.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: v}
	}
	return slim, nil
}

// podCertificateVolumes keeps of volumes the signer names of their
// podCertificate projections: a pod certificate is signed only for a pod
// that asks for its signer.
func podCertificateVolumes(volumes []corev1.Volume) []corev1.Volume {
	var out []corev1.Volume
	for _, v := range volumes {
		if v.Projected == nil {
			continue
		}
		var sources []corev1.VolumeProjection
		for _, src := range v.Projected.Sources {
			if pc := src.PodCertificate; pc != nil {
				sources = append(sources, corev1.VolumeProjection{PodCertificate: &corev1.PodCertificateProjection{SignerName: pc.SignerName}})
			}
		}
		if sources != nil {
			out = append(out, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}}})
		}
	}
	return out
}

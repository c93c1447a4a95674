// Package trust keeps, on the node, each issuer's trust bundle and its
// request to re-issue early (status.trustBundle, status.reissueBefore),
// from one watch on Issuers and one on ClusterIssuers, so a publish costs
// no API request for them. It knows nothing of volumes.
package trust

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

// ErrNoTrustBundle means the issuer's trust bundle cannot be had now. The
// issuer does not exist, has not published a bundle yet, or the driver has
// not loaded the issuers yet; a later attempt may succeed.
var ErrNoTrustBundle = errors.New("no trust bundle")

// The issuer resources the controller publishes trust bundles on.
var (
	issuersResource        = v1alpha1.SchemeGroupVersion.WithResource("issuers")
	clusterIssuersResource = v1alpha1.SchemeGroupVersion.WithResource("clusterissuers")
)

// IssuerTrust serves each issuer's status.trustBundle from a cache kept by
// one watch on Issuers and one on ClusterIssuers, so a publish costs no API
// request.
type IssuerTrust struct {
	issuers, clusterIssuers cache.SharedIndexInformer
}

// NewIssuerTrust returns an IssuerTrust reading through client; call Run
// before CABundle.
func NewIssuerTrust(client dynamic.Interface) (*IssuerTrust, error) {
	t := &IssuerTrust{
		issuers:        newDynamicInformer(client, issuersResource),
		clusterIssuers: newDynamicInformer(client, clusterIssuersResource),
	}
	for _, inf := range []cache.SharedIndexInformer{t.issuers, t.clusterIssuers} {
		if err := inf.SetTransform(trustOnly); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// newDynamicInformer returns an informer on every object of resource. It is
// what client-go's dynamicinformer package builds, without that package's
// link to the typed clients of every API group.
func newDynamicInformer(client dynamic.Interface, resource schema.GroupVersionResource) cache.SharedIndexInformer {
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.Resource(resource).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.Resource(resource).Watch(ctx, o)
		},
	}, client)
	return cache.NewSharedIndexInformerWithOptions(lw, &unstructured.Unstructured{},
		cache.SharedIndexInformerOptions{ObjectDescription: resource.String()})
}

// OnChange has changed called with every issuer whose trust bundle or
// reissueBefore changes, and with every issuer the watch loads (the first
// time, or again after a relist), from the watch's goroutine: changed must
// not block. Call it before Run.
func (t *IssuerTrust) OnChange(changed func(request.IssuerRef)) error {
	notify := func(obj any) {
		if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		if gi, ok := obj.(v1alpha1.GenericIssuer); ok {
			changed(refOf(gi))
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc: notify,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(v1alpha1.GenericIssuer)
			n, ok2 := obj.(v1alpha1.GenericIssuer)
			if ok1 && ok2 && o.GetStatus().TrustBundle == n.GetStatus().TrustBundle &&
				reissueTime(o.GetStatus().ReissueBefore).Equal(reissueTime(n.GetStatus().ReissueBefore)) {
				return
			}
			notify(obj)
		},
		DeleteFunc: notify,
	}
	for _, inf := range []cache.SharedIndexInformer{t.issuers, t.clusterIssuers} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	return nil
}

func refOf(gi v1alpha1.GenericIssuer) request.IssuerRef {
	if gi.GetNamespace() == "" {
		return request.IssuerRef{Kind: request.KindClusterIssuer, Name: gi.GetName()}
	}
	return request.IssuerRef{Kind: request.KindIssuer, Namespace: gi.GetNamespace(), Name: gi.GetName()}
}

func reissueTime(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

// trustOnly keeps of an issuer only what the driver reads, so the cache of
// every issuer in the cluster stays small on each node. It is called again
// on objects it already transformed, and passes those through.
func trustOnly(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	// The CRD's schema makes the bundle a string and reissueBefore a
	// date-time. Anything else counts as absent, rather than an error that
	// would stop the whole watch.
	bundle, _, _ := unstructured.NestedString(u.Object, "status", "trustBundle")
	status := v1alpha1.IssuerStatus{TrustBundle: bundle}
	if s, _, _ := unstructured.NestedString(u.Object, "status", "reissueBefore"); s != "" {
		var before metav1.Time
		if err := before.UnmarshalQueryParameter(s); err == nil {
			status.ReissueBefore = &before
		}
	}
	if u.GetNamespace() == "" {
		c := &v1alpha1.ClusterIssuer{Status: status}
		c.Name = u.GetName()
		return c, nil
	}
	i := &v1alpha1.Issuer{Status: status}
	i.Name, i.Namespace = u.GetName(), u.GetNamespace()
	return i, nil
}

// Run keeps the cache until ctx ends.
func (t *IssuerTrust) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { t.clusterIssuers.RunWithContext(ctx) })
	t.issuers.RunWithContext(ctx)
	wg.Wait()
}

// HasSynced reports whether both watches are established.
func (t *IssuerTrust) HasSynced() bool {
	return t.issuers.HasSynced() && t.clusterIssuers.HasSynced()
}

// CABundle returns the issuer's trust bundle, never empty. A miss (an
// unknown issuer, or one without a bundle) is an error wrapping
// ErrNoTrustBundle that names the issuer.
func (t *IssuerTrust) CABundle(_ context.Context, issuer request.IssuerRef) ([]*x509.Certificate, error) {
	if !t.HasSynced() {
		return nil, fmt.Errorf("%w for %s: the driver has not loaded the issuers yet", ErrNoTrustBundle, issuer)
	}
	gi, err := t.get(issuer)
	if err != nil {
		return nil, err
	}
	if gi == nil {
		return nil, fmt.Errorf("%w for %s: the issuer does not exist%s", ErrNoTrustBundle, issuer, t.kindHint(issuer))
	}
	return parseBundle(issuer, gi.GetStatus().TrustBundle)
}

// kindHint points a volume that names a missing Issuer at the ClusterIssuer
// of the same name, if there is one: its author probably left out
// issuer-kind.
func (t *IssuerTrust) kindHint(missing request.IssuerRef) string {
	if missing.Kind != request.KindIssuer {
		return ""
	}
	if gi, err := t.get(request.IssuerRef{Kind: request.KindClusterIssuer, Name: missing.Name}); err != nil || gi == nil {
		return ""
	}
	return fmt.Sprintf("; a ClusterIssuer %s exists: set csi.certmint.io/issuer-kind: ClusterIssuer to use it", missing.Name)
}

// ReissueBefore is the issuer's status.reissueBefore: certificates whose
// request was created before it are to be re-issued. Zero if the issuer
// asks for none, or is unknown.
func (t *IssuerTrust) ReissueBefore(issuer request.IssuerRef) time.Time {
	gi, err := t.get(issuer)
	if err != nil || gi == nil {
		return time.Time{}
	}
	return reissueTime(gi.GetStatus().ReissueBefore)
}

// get returns the cached issuer, nil if it does not exist.
func (t *IssuerTrust) get(issuer request.IssuerRef) (v1alpha1.GenericIssuer, error) {
	inf := t.issuers
	if issuer.Kind == request.KindClusterIssuer {
		inf = t.clusterIssuers
	}
	obj, exists, err := inf.GetIndexer().GetByKey(cache.NewObjectName(issuer.Namespace, issuer.Name).String())
	if err != nil || !exists {
		return nil, err
	}
	gi, ok := obj.(v1alpha1.GenericIssuer)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in the cache of issuers", obj)
	}
	return gi, nil
}

// parseBundle decodes a status.trustBundle: PEM CA certificates, at least
// one.
func parseBundle(issuer request.IssuerRef, bundle string) ([]*x509.Certificate, error) {
	if strings.TrimSpace(bundle) == "" {
		return nil, fmt.Errorf("%w for %s: its status.trustBundle is empty (the controller publishes it once the issuer is Ready)", ErrNoTrustBundle, issuer)
	}
	certs, err := pki.ParseCertificates([]byte(bundle))
	if err != nil {
		return nil, fmt.Errorf("%w for %s: status.trustBundle: %w", ErrNoTrustBundle, issuer, err)
	}
	return certs, nil
}

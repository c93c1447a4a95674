package issuer

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Secrets reads the Secrets backends use, of any type: CA key pairs,
// account keys, credentials. The controller watches only the metadata of
// Secrets (which change and when), so it holds no Secret's data but those a
// backend read, and a read reaches the API server only when the Secret
// changed since: each copy kept is good while the watch shows the
// resourceVersion it showed when the copy was read.
//
// It is safe for concurrent use. Secrets it returns are shared: callers must
// not modify them.
type Secrets struct {
	meta client.Reader
	live client.Reader

	mu   sync.Mutex
	kept map[types.NamespacedName]keptSecret
}

type keptSecret struct {
	// seen is the resourceVersion the watch showed when secret was read.
	seen   string
	secret *corev1.Secret
}

// NewSecrets returns a Secrets that learns of changes through meta, a
// reader of the Secrets' metadata (the manager's cache holding
// metav1.PartialObjectMetadata), and reads the Secrets themselves through
// live, typically the manager's API reader.
func NewSecrets(meta, live client.Reader) *Secrets {
	return &Secrets{meta: meta, live: live, kept: map[types.NamespacedName]keptSecret{}}
}

// Get returns the Secret ref. A Secret that does not exist, as the watch
// shows it, is an error satisfying apierrors.IsNotFound.
func (s *Secrets) Get(ctx context.Context, ref types.NamespacedName) (*corev1.Secret, error) {
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := s.meta.Get(ctx, ref, &m); err != nil {
		s.Forget(ref)
		return nil, err
	}
	s.mu.Lock()
	k, ok := s.kept[ref]
	s.mu.Unlock()
	if ok && k.seen == m.ResourceVersion {
		return k.secret, nil
	}
	var secret corev1.Secret
	if err := s.live.Get(ctx, ref, &secret); err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", ref, err)
	}
	s.mu.Lock()
	s.kept[ref] = keptSecret{seen: m.ResourceVersion, secret: &secret}
	s.mu.Unlock()
	return &secret, nil
}

// Forget drops the copy of ref, if one is kept.
func (s *Secrets) Forget(ref types.NamespacedName) {
	s.mu.Lock()
	delete(s.kept, ref)
	s.mu.Unlock()
}

// Keep keeps secret, as the API server returned it from a write, as the
// copy of its name: the watch shows that resourceVersion soon, and no read
// is needed for it.
func (s *Secrets) Keep(secret *corev1.Secret) {
	s.mu.Lock()
	s.kept[client.ObjectKeyFromObject(secret)] = keptSecret{seen: secret.ResourceVersion, secret: secret.DeepCopy()}
	s.mu.Unlock()
}

// ForgetDeleted drops the copy of every Secret the informer of Secrets'
// metadata, informer, reports deleted, so that copies (private keys among
// them) do not outlive their Secrets.
func (s *Secrets) ForgetDeleted(informer interface {
	AddEventHandler(toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}) error {
	_, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if o, ok := obj.(client.Object); ok {
				s.Forget(client.ObjectKeyFromObject(o))
			}
		},
	})
	return err
}

package issuer

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

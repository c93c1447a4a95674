package issuer

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// versions answers Gets of Secrets' metadata with the resourceVersion it
// holds for the name, and not found without one.
type versions map[client.ObjectKey]string

func (v versions) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	rv, ok := v[key]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	obj.SetResourceVersion(rv)
	return nil
}

func (v versions) List(context.Context, client.ObjectList, ...client.ListOption) error { return nil }

// reads counts the Gets of Secrets from the API server.
type reads struct {
	versions
	n int
}

func (r *reads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.n++
	return r.versions.Get(ctx, key, obj, opts...)
}

// informer hands its handler to the test.
type informer struct {
	handler toolscache.ResourceEventHandler
}

func (i *informer) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	i.handler = h
	return nil, nil
}

func TestSecretsReadsOnlyWhatChanged(t *testing.T) {
	key := client.ObjectKey{Namespace: "ns", Name: "s"}
	meta := versions{key: "1"}
	live := &reads{versions: versions{key: "1"}}
	s := NewSecrets(meta, live)
	ctx := context.Background()
	for range 3 {
		if _, err := s.Get(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if live.n != 1 {
		t.Fatalf("%d reads of an unchanged Secret, want 1", live.n)
	}
	meta[key], live.versions[key] = "2", "2"
	if _, err := s.Get(ctx, key); err != nil || live.n != 2 {
		t.Fatalf("a changed Secret was read %d times in all (%v), want 2", live.n, err)
	}

	// What this process wrote is kept as written: no read once the watch
	// shows its version.
	s.Keep(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", ResourceVersion: "3"}, Data: map[string][]byte{"k": []byte("v")}})
	meta[key] = "3"
	got, err := s.Get(ctx, key)
	if err != nil || live.n != 2 || string(got.Data["k"]) != "v" {
		t.Fatalf("a kept Secret: %v reads %d, data %v", err, live.n, got.Data)
	}

	inf := &informer{}
	if err := s.ForgetDeleted(inf); err != nil {
		t.Fatal(err)
	}
	inf.handler.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "ns/s", Obj: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}}})
	s.mu.Lock()
	left := len(s.kept)
	s.mu.Unlock()
	if left != 0 {
		t.Errorf("%d copies kept after the Secret was deleted", left)
	}
}

package acmesolver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

const ns = "certmint"

func TestHandler(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	challenges, err := NewChallenges(c, c, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := challenges.Present(ctx, "Tok-En_1", "Tok-En_1.thumbprint"); err != nil {
		t.Fatal(err)
	}
	// Presenting again, as a retried order pass does, is not an error.
	if err := challenges.Present(ctx, "Tok-En_1", "Tok-En_1.thumbprint"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(c, c, ns, logr.Discard()))
	defer srv.Close()

	tests := []struct {
		name     string
		method   string
		path     string
		wantCode int
		wantBody string
	}{
		{name: "a published token is answered with its key authorization", method: http.MethodGet, path: PathPrefix + "Tok-En_1", wantCode: http.StatusOK, wantBody: "Tok-En_1.thumbprint"},
		{name: "tokens are case-sensitive", method: http.MethodGet, path: PathPrefix + "tok-en_1", wantCode: http.StatusNotFound},
		{name: "an unknown token is not found", method: http.MethodGet, path: PathPrefix + "other", wantCode: http.StatusNotFound},
		{name: "paths outside the challenge directory are not found", method: http.MethodGet, path: "/healthz", wantCode: http.StatusNotFound},
		{name: "only GET and HEAD are answered", method: http.MethodPost, path: PathPrefix + "Tok-En_1", wantCode: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectAnswer(t, tt.method, srv.URL+tt.path, tt.wantCode, tt.wantBody)
		})
	}
}

func TestHandlerReadsAChallengeItsCacheDoesNotHoldYet(t *testing.T) {
	challenge := func(token string, labels map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ObjectName(token), Labels: labels},
			Data:       map[string]string{KeyToken: token, KeyKeyAuthorization: token + ".thumbprint"},
		}
	}
	published := map[string]string{LabelChallenge: "true"}
	// The cache has seen nothing yet; the API server has what the leader
	// published, and a ConfigMap of the same shape it did not.
	cached := fake.NewClientBuilder().Build()
	api := fake.NewClientBuilder().WithObjects(
		challenge("published", published),
		challenge("unlabelled", nil),
		&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ObjectName("other-token"), Labels: published},
			Data:       map[string]string{KeyToken: "colliding", KeyKeyAuthorization: "colliding.thumbprint"},
		},
	).Build()
	srv := httptest.NewServer(Handler(cached, api, ns, logr.Discard()))
	defer srv.Close()

	tests := []struct {
		name     string
		token    string
		wantCode int
		wantBody string
	}{
		{name: "a published challenge is answered", token: "published", wantCode: http.StatusOK, wantBody: "published.thumbprint"},
		{name: "a ConfigMap without the challenge label is not answered", token: "unlabelled", wantCode: http.StatusNotFound},
		{name: "a ConfigMap holding another token is not answered", token: "other-token", wantCode: http.StatusNotFound},
		{name: "an unknown token is not found", token: "unknown", wantCode: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectAnswer(t, http.MethodGet, srv.URL+PathPrefix+tt.token, tt.wantCode, tt.wantBody)
		})
	}
}

func TestChallengesLifecycle(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	challenges, err := NewChallenges(c, c, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if served, err := challenges.Served(ctx, "tok", "tok.thumb"); err != nil || served {
		t.Fatalf("before Present: served = %t, err = %v", served, err)
	}
	if err := challenges.Present(ctx, "tok", "tok.thumb"); err != nil {
		t.Fatal(err)
	}
	if served, err := challenges.Served(ctx, "tok", "tok.thumb"); err != nil || !served {
		t.Fatalf("after Present: served = %t, err = %v", served, err)
	}
	if served, _ := challenges.Served(ctx, "tok", "another.thumb"); served {
		t.Error("a different key authorization counts as served")
	}
	if err := challenges.CleanUp(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	if err := challenges.CleanUp(ctx, "tok"); err != nil {
		t.Fatalf("cleaning up twice: %v", err)
	}
	if served, _ := challenges.Served(ctx, "tok", "tok.thumb"); served {
		t.Error("served after CleanUp")
	}
}

func TestSweepRemovesOnlyOldChallenges(t *testing.T) {
	now := time.Now()
	challenge := func(name string, created time.Time) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, Labels: map[string]string{LabelChallenge: "true"},
			CreationTimestamp: metav1.NewTime(created),
		}}
	}
	unrelated := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated", CreationTimestamp: metav1.NewTime(now.Add(-48 * time.Hour))}}
	c := fake.NewClientBuilder().WithObjects(
		challenge("old", now.Add(-2*time.Hour)),
		challenge("fresh", now.Add(-time.Minute)),
		unrelated,
	).Build()
	challenges, err := NewChallenges(c, c, ns)
	if err != nil {
		t.Fatal(err)
	}
	if err := challenges.Sweep(context.Background(), now.Add(-DefaultMaxAge)); err != nil {
		t.Fatal(err)
	}
	var left corev1.ConfigMapList
	if err := c.List(context.Background(), &left, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, cm := range left.Items {
		names = append(names, cm.Name)
	}
	if len(names) != 2 || names[0] != "fresh" || names[1] != "unrelated" {
		t.Errorf("left %v, want [fresh unrelated]", names)
	}
}

// expectAnswer asks url with method and checks the status code and, unless
// wantBody is empty, the body.
func expectAnswer(t *testing.T, method, url string, wantCode int, wantBody string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantCode {
		t.Fatalf("status = %d, want %d", resp.StatusCode, wantCode)
	}
	if wantBody != "" && string(body) != wantBody {
		t.Errorf("body = %q, want %q", body, wantBody)
	}
}

package acmesolver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer/acme"
)

const ns = "certmint"

func TestHandler(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	challenges := newChallenges(t, c)
	ctx := context.Background()
	ch := acme.Challenge{DNSName: "web.example.com", Token: "Tok-En_1", KeyAuthorization: "Tok-En_1.thumbprint"}
	if err := challenges.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	// Presenting again, as a retried order pass does, is not an error.
	if err := challenges.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(c, c, ns, nil, logr.Discard()))
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
	srv := httptest.NewServer(Handler(cached, api, ns, nil, logr.Discard()))
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

func newChallenges(t *testing.T, c client.Client) *Challenges {
	t.Helper()
	challenges, err := NewChallenges(ChallengesOptions{Client: c, Reader: c, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return challenges
}

func TestChallengesLifecycle(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	challenges := newChallenges(t, c)
	ctx := context.Background()
	ch := acme.Challenge{DNSName: "web.example.com", Token: "tok", KeyAuthorization: "tok.thumb"}
	if served, err := challenges.Served(ctx, "tok", "tok.thumb"); err != nil || served {
		t.Fatalf("before Present: served = %t, err = %v", served, err)
	}
	if err := challenges.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if served, err := challenges.Served(ctx, "tok", "tok.thumb"); err != nil || !served {
		t.Fatalf("after Present: served = %t, err = %v", served, err)
	}
	if served, _ := challenges.Served(ctx, "tok", "another.thumb"); served {
		t.Error("a different key authorization counts as served")
	}
	var ingresses networkingv1.IngressList
	if err := c.List(ctx, &ingresses); err != nil || len(ingresses.Items) != 0 {
		t.Errorf("Ingresses of a challenge that asks for none: %d, %v", len(ingresses.Items), err)
	}
	if err := challenges.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := challenges.CleanUp(ctx, ch); err != nil {
		t.Fatalf("cleaning up twice: %v", err)
	}
	if served, _ := challenges.Served(ctx, "tok", "tok.thumb"); served {
		t.Error("served after CleanUp")
	}
}

func TestARoutedChallengeHasAnIngressForItsURLOnly(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	challenges := newChallenges(t, c)
	ctx := context.Background()
	class := "traefik"
	ch := acme.Challenge{DNSName: "web.example.com", Token: "Tok-En", KeyAuthorization: "Tok-En.thumb", Ingress: &v1alpha1.ACMEHTTP01Ingress{IngressClassName: &class}}
	if err := challenges.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := challenges.Present(ctx, ch); err != nil {
		t.Fatalf("presenting again: %v", err)
	}
	var ing networkingv1.Ingress
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ObjectName("Tok-En")}, &ing); err != nil {
		t.Fatal(err)
	}
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != class {
		t.Errorf("class = %v, want %s", ing.Spec.IngressClassName, class)
	}
	if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "web.example.com" || len(ing.Spec.Rules[0].HTTP.Paths) != 1 {
		t.Fatalf("rules = %+v, want one for web.example.com with one path", ing.Spec.Rules)
	}
	path := ing.Spec.Rules[0].HTTP.Paths[0]
	if path.Path != PathPrefix+"Tok-En" || *path.PathType != networkingv1.PathTypeExact {
		t.Errorf("path = %s (%s), want exactly %sTok-En", path.Path, *path.PathType, PathPrefix)
	}
	if svc := path.Backend.Service; svc == nil || svc.Name != DefaultService || svc.Port.Name != ServicePort {
		t.Errorf("backend = %+v, want Service %s port %s", path.Backend, DefaultService, ServicePort)
	}
	if err := challenges.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ObjectName("Tok-En")}, &ing); !apierrors.IsNotFound(err) {
		t.Errorf("the Ingress after CleanUp: %v, want it gone", err)
	}
}

func TestReachableAsksTheChallengeURL(t *testing.T) {
	answer := "tok.thumb"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != PathPrefix+"tok" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, answer+"\n")
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	challenges := newChallenges(t, fake.NewClientBuilder().Build())
	ctx := context.Background()
	if err := challenges.Reachable(ctx, acme.Challenge{DNSName: host, Token: "tok", KeyAuthorization: "tok.thumb"}); err != nil {
		t.Errorf("a URL answering the key authorization: %v", err)
	}
	if err := challenges.Reachable(ctx, acme.Challenge{DNSName: host, Token: "tok", KeyAuthorization: "tok.other"}); err == nil {
		t.Error("a URL answering another key authorization counts as reachable")
	}
	if err := challenges.Reachable(ctx, acme.Challenge{DNSName: host, Token: "missing", KeyAuthorization: "missing.thumb"}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a URL answering 404: %v, want an error naming the status", err)
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
	route := func(name string, created time.Time) *networkingv1.Ingress {
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, Labels: map[string]string{LabelChallenge: "true"},
			CreationTimestamp: metav1.NewTime(created),
		}}
	}
	c := fake.NewClientBuilder().WithObjects(
		challenge("old", now.Add(-2*time.Hour)),
		challenge("fresh", now.Add(-time.Minute)),
		unrelated,
		route("old", now.Add(-2*time.Hour)),
		route("fresh", now.Add(-time.Minute)),
	).Build()
	challenges := newChallenges(t, c)
	if err := challenges.Sweep(context.Background(), now.Add(-DefaultMaxAge)); err != nil {
		t.Fatal(err)
	}
	var routes networkingv1.IngressList
	if err := c.List(context.Background(), &routes, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(routes.Items) != 1 || routes.Items[0].Name != "fresh" {
		t.Errorf("Ingresses left: %+v, want only fresh", routes.Items)
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

func TestOneSourceCannotSpendTheUncachedReadsOfOthers(t *testing.T) {
	ingressControllers := netip.MustParsePrefix("10.244.1.0/24")
	budget := newReadBudget([]netip.Prefix{ingressControllers})
	ask := func(remote, forwarded string) bool {
		r := httptest.NewRequest(http.MethodGet, PathPrefix+"token", nil)
		r.RemoteAddr = remote
		if forwarded != "" {
			r.Header.Set("X-Forwarded-For", forwarded)
		}
		return budget.allow(r)
	}
	spent := 0
	for ask("10.0.0.9:4711", "") {
		spent++
	}
	if spent != sourceReadBurst {
		t.Errorf("one source got %d uncached reads at once, want %d", spent, sourceReadBurst)
	}
	t.Run("a client of its own cannot get more by naming others in X-Forwarded-For", func(t *testing.T) {
		for i := range 10 {
			if ask("10.0.0.9:4711", fmt.Sprintf("198.51.100.%d", i)) {
				t.Fatal("a forged X-Forwarded-For bought another read")
			}
		}
	})
	t.Run("behind a trusted proxy, the address it added is the client's", func(t *testing.T) {
		for range sourceReadBurst {
			ask("10.244.1.5:5000", "forged, 203.0.113.7")
		}
		if ask("10.244.1.5:5000", "other-forgery, 203.0.113.7") {
			t.Error("a client behind the Ingress controller got more reads by forging X-Forwarded-For")
		}
		if !ask("10.244.1.5:5000", "198.51.100.2") {
			t.Error("the ACME server, behind the same Ingress controller, got no read")
		}
	})
	t.Run("a source refused spends nothing of the budget of all", func(t *testing.T) {
		for range 100 {
			ask("10.0.0.9:4711", "")
		}
		if !ask("10.0.0.10:4711", "") {
			t.Error("another source got no read after one source was refused many times")
		}
	})
}

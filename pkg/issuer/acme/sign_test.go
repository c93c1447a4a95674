package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/issuertest"
)

// memorySolver answers from memory; with servesEverything it claims to
// serve every token already, as when an earlier order published it. Its
// routes are unreachable while unreachable is set.
type memorySolver struct {
	servesEverything bool

	mu          sync.Mutex
	published   map[string]Challenge
	withdrawn   []Challenge
	unreachable error
	checks      int
}

func (s *memorySolver) Present(_ context.Context, ch Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.published == nil {
		s.published = map[string]Challenge{}
	}
	s.published[ch.Token] = ch
	return nil
}

func (s *memorySolver) Served(_ context.Context, token, keyAuth string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.servesEverything || s.published[token].KeyAuthorization == keyAuth, nil
}

func (s *memorySolver) Reachable(_ context.Context, ch Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks++
	if s.published[ch.Token].Ingress == nil {
		return errors.New("no route published")
	}
	return s.unreachable
}

func (s *memorySolver) CleanUp(_ context.Context, ch Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.published, ch.Token)
	s.withdrawn = append(s.withdrawn, ch)
	return nil
}

func (s *memorySolver) withdrawnTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var tokens []string
	for _, ch := range s.withdrawn {
		tokens = append(tokens, ch.Token)
	}
	return tokens
}

// testScheme knows the core types and certmint's.
func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return scheme
}

type signFixture struct {
	server  *fakeServer
	backend *Backend
	kube    client.Client
	clock   *clocktesting.FakePassiveClock
	issuer  *v1alpha1.ClusterIssuer
}

func newSignFixture(t *testing.T, solver Solver) *signFixture {
	t.Helper()
	server := newFakeServer(t)
	kube := fake.NewClientBuilder().WithScheme(testScheme(t)).WithStatusSubresource(&v1alpha1.Order{}, &v1alpha1.Challenge{}).Build()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	b, err := New(Options{Client: kube, Secrets: issuer.NewSecrets(kube, kube), Solver: solver, ClusterResourceNamespace: "certmint", Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return &signFixture{
		server:  server,
		backend: b,
		kube:    kube,
		clock:   clk,
		issuer: &v1alpha1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: "fake"},
			Spec: v1alpha1.IssuerSpec{ACME: &v1alpha1.ACMEIssuer{
				Server: server.directoryURL(), AccountKeySecretName: "fake-account", TrustBundle: server.rootPEM(),
				Solvers: []v1alpha1.ACMESolver{{HTTP01: &v1alpha1.ACMEHTTP01Solver{}}},
			}},
		},
	}
}

func newRequest(t *testing.T, name string) *issuer.Request {
	t.Helper()
	return issuertest.Request(newCSR(t, &x509.CertificateRequest{DNSNames: []string{name}}, newKey(t)), issuertest.Options{})
}

// signUntilIssued calls Sign as the controller does until it returns the
// chain.
func (f *signFixture) signUntilIssued(t *testing.T, req *issuer.Request) []byte {
	t.Helper()
	for range 10 {
		chain, err := f.backend.Sign(t.Context(), f.issuer, req)
		var pending *issuer.PendingError
		if errors.As(err, &pending) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return chain
	}
	t.Fatal("no certificate after 10 passes")
	return nil
}

func TestSignHandsOutAnIssuedCertificateAgainUntilTheRequestStopsAsking(t *testing.T) {
	f := newSignFixture(t, &memorySolver{})
	req := newRequest(t, "web.example.com")
	first := f.signUntilIssued(t, req)

	// The controller may fail to store the chain (its status update
	// conflicts, or the trust bundle is not published yet) and ask again.
	again, err := f.backend.Sign(t.Context(), f.issuer, req)
	if err != nil {
		t.Fatalf("signing again: %v", err)
	}
	if !bytes.Equal(again, first) {
		t.Error("signing again returned another chain")
	}
	if n := f.server.orderCount(); n != 1 {
		t.Fatalf("orders created: %d, want 1: the issued certificate was ordered again", n)
	}

	f.clock.SetTime(f.clock.Now().Add(orderIdle + time.Minute))
	f.signUntilIssued(t, req)
	if n := f.server.orderCount(); n != 2 {
		t.Errorf("orders created: %d, want 2: a certificate nobody asked for within %s is not kept", n, orderIdle)
	}
}

func TestSignWithdrawsAChallengeThatWasAlreadyServed(t *testing.T) {
	solver := &memorySolver{servesEverything: true}
	f := newSignFixture(t, solver)
	f.signUntilIssued(t, newRequest(t, "web.example.com"))
	if want := []string{fakeToken(0, 0)}; !slices.Equal(solver.withdrawnTokens(), want) {
		t.Errorf("withdrawn challenges = %v, want %v", solver.withdrawnTokens(), want)
	}
}

func TestSignRoutesChallengesThroughAnIngressAndAcceptsOnceTheyAnswer(t *testing.T) {
	solver := &memorySolver{unreachable: errors.New("GET answered 404 Not Found")}
	f := newSignFixture(t, solver)
	class := "traefik"
	f.issuer.Spec.ACME.Solvers[0].HTTP01.Ingress = &v1alpha1.ACMEHTTP01Ingress{IngressClassName: &class}
	req := newRequest(t, "web.example.com")

	for range 3 {
		_, err := f.backend.Sign(t.Context(), f.issuer, req)
		var pending *issuer.PendingError
		if !errors.As(err, &pending) {
			t.Fatalf("Sign while the route does not answer: %v, want pending", err)
		}
	}
	if f.server.accepted() != 0 {
		t.Fatal("the server was told to validate a challenge whose route does not answer")
	}
	ch, ok := solver.published[fakeToken(0, 0)]
	if !ok || ch.Ingress == nil || *ch.Ingress.IngressClassName != class || ch.DNSName != "web.example.com" {
		t.Fatalf("published challenge = %+v, want one routed through class %s for web.example.com", ch, class)
	}

	solver.mu.Lock()
	solver.unreachable = nil
	solver.mu.Unlock()
	f.signUntilIssued(t, req)
	if got := solver.withdrawn; len(got) != 1 || got[0].Ingress == nil {
		t.Errorf("withdrawn = %+v, want the one challenge with its route", got)
	}
}

func TestSignAcceptsARouteItCannotReachItselfAfterAWhile(t *testing.T) {
	solver := &memorySolver{unreachable: errors.New("dial tcp: no route to host")}
	f := newSignFixture(t, solver)
	f.issuer.Spec.ACME.Solvers[0].HTTP01.Ingress = &v1alpha1.ACMEHTTP01Ingress{}
	req := newRequest(t, "shop.example.com")
	if _, err := f.backend.Sign(t.Context(), f.issuer, req); err == nil {
		t.Fatal("issued at once although the route does not answer")
	}
	if f.server.accepted() != 0 {
		t.Fatal("accepted before the wait")
	}
	f.clock.SetTime(f.clock.Now().Add(reachableWait))
	f.signUntilIssued(t, req)
}

func TestReadyPublishesAnEditedTrustBundle(t *testing.T) {
	f := newSignFixture(t, &memorySolver{})
	st, err := f.backend.Ready(t.Context(), f.issuer)
	if err != nil || !st.Ready {
		t.Fatalf("Ready = %+v, %v", st, err)
	}
	other := newCA(t, "another root", nil)
	edited := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw}))
	f.issuer.Spec.ACME.TrustBundle = edited
	st, err = f.backend.Ready(t.Context(), f.issuer)
	if err != nil || !st.Ready {
		t.Fatalf("Ready after the edit = %+v, %v", st, err)
	}
	if string(st.TrustBundle) != edited {
		t.Errorf("trust bundle after the edit:\n%s\nwant\n%s", st.TrustBundle, edited)
	}
}

func TestANamespacedIssuerNeitherRegistersNorSigns(t *testing.T) {
	f := newSignFixture(t, &memorySolver{})
	iss := &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "acme"}, Spec: f.issuer.Spec}

	st, err := f.backend.Ready(t.Context(), iss)
	if err != nil || st.Ready || st.Reason != ReasonNamespacedIssuer {
		t.Errorf("Ready = %+v, %v; want not ready with reason %s", st, err, ReasonNamespacedIssuer)
	}
	_, err = f.backend.Sign(t.Context(), iss, newRequest(t, "web.example.com"))
	var notReady *issuer.NotReadyError
	if !errors.As(err, &notReady) || notReady.Reason != ReasonNamespacedIssuer {
		t.Errorf("Sign error = %v, want not ready with reason %s", err, ReasonNamespacedIssuer)
	}
	if f.server.registrations != 0 || f.server.orderCount() != 0 {
		t.Errorf("the ACME server saw %d registrations and %d orders, want none", f.server.registrations, f.server.orderCount())
	}
	var secrets corev1.SecretList
	if err := f.kube.List(t.Context(), &secrets); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 0 {
		t.Error("an account key Secret was created")
	}
}

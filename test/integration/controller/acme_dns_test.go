package controller_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/acme"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/certificate"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/test/bind"
	"github.com/certmint/certmint/test/pebble"
)

// acmeEnv is an ACME server and an authoritative DNS server for one test:
// BIND serves the zone example.test., takes dynamic updates signed with its
// TSIG key, and is the DNS server Pebble resolves through, so every
// validation asks the real zone. The controller answers HTTP-01 on
// solverPort of 127.0.0.1, where the zone's A records point.
type acmeEnv struct {
	ns         string
	dns        *bind.Server
	pebble     *pebble.Server
	solverAddr string
	tsigSecret string
}

// newACMEEnv starts BIND with A records for hosts (names under
// <namespace>.example.test, answered over HTTP-01), Pebble resolving
// through it, a controller, and a namespace for Certificates.
func newACMEEnv(t *testing.T, hosts []string, pebbleOpts pebble.Options) *acmeEnv {
	t.Helper()
	e := requireEnv(t)
	a := &acmeEnv{ns: uniqueName("acme-dns"), solverAddr: freeAddr(t)}
	if err := e.ensureServiceAccount(t.Context(), a.ns, "default"); err != nil {
		t.Fatal(err)
	}
	var records []string
	for _, h := range hosts {
		records = append(records, a.name(h)+". A 127.0.0.1")
	}
	a.dns = bind.Start(t, bind.Options{Zones: []string{"example.test."}, Records: records})
	_, port, err := net.SplitHostPort(a.solverAddr)
	if err != nil {
		t.Fatal(err)
	}
	pebbleOpts.HTTPPort, err = strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	if pebbleOpts.DNSServer == "" {
		pebbleOpts.DNSServer = a.dns.Addr
	}
	a.pebble = pebble.Start(t, pebbleOpts)
	a.tsigSecret = uniqueName("tsig")
	err = e.admin.Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: certmintNS, Name: a.tsigSecret},
		StringData: map[string]string{"secret": a.dns.Key.Secret},
	})
	if err != nil {
		t.Fatal(err)
	}
	startController(t, a.ns, "--acme-http01-address="+a.solverAddr)
	return a
}

// name is the DNS name host stands for in the test's namespace.
func (a *acmeEnv) name(host string) string { return host + "." + a.ns + ".example.test" }

// dns01 is a dns01 solver writing to the test's BIND with secret (the
// name of a Secret whose key "secret" holds the TSIG secret).
func (a *acmeEnv) dns01(secret string, sel *v1alpha1.ACMESolverSelector) v1alpha1.ACMESolver {
	return v1alpha1.ACMESolver{Selector: sel, DNS01: &v1alpha1.ACMEDNS01Solver{RFC2136: &v1alpha1.ACMERFC2136{
		Nameserver:    a.dns.Addr,
		TSIGKeyName:   a.dns.Key.Name,
		TSIGAlgorithm: a.dns.Key.Algorithm,
		TSIGSecretRef: v1alpha1.IssuerSecretKeySelector{Name: secret, Key: "secret"},
	}}}
}

// issuer creates an ACME ClusterIssuer for the test's Pebble with solvers,
// granting the names under the Certificates' namespace, and returns it once
// it is Ready, or as it is when ready is false.
func (a *acmeEnv) issuer(t *testing.T, ready bool, change func(*v1alpha1.ACMEIssuer), solvers ...v1alpha1.ACMESolver) *v1alpha1.ClusterIssuer {
	t.Helper()
	name := uniqueName("pebble")
	spec := &v1alpha1.ACMEIssuer{
		Server:               a.pebble.DirectoryURL,
		Email:                "certs@certmint.test",
		AccountKeySecretName: name + "-account",
		CABundle:             string(a.pebble.TLSCA),
		TrustBundle:          string(a.pebble.Root),
		Solvers:              solvers,
	}
	if change != nil {
		change(spec)
	}
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.IssuerSpec{ACME: spec, Policy: &v1alpha1.Policy{AllowedDNSNames: []string{
			"*.${POD_NAMESPACE}.example.test", "*.dns.${POD_NAMESPACE}.example.test",
		}}},
	}
	if err := env.admin.Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.admin.Delete(context.Background(), iss)
		_ = env.admin.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: certmintNS, Name: spec.AccountKeySecretName}})
	})
	if ready {
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
	}
	return iss
}

// certificate creates a Certificate name in the test's namespace for hosts.
func (a *acmeEnv) certificate(t *testing.T, name, issuer string, hosts ...string) *v1alpha1.Certificate {
	t.Helper()
	var names []string
	for _, h := range hosts {
		names = append(names, a.name(h))
	}
	cert := newCert(a.ns, name, issuer, names...)
	if err := env.admin.Create(t.Context(), cert); err != nil {
		t.Fatal(err)
	}
	return cert
}

// orderOf is the Order of cert's latest issuance and its Challenges.
func (a *acmeEnv) orderOf(t *testing.T, cert *v1alpha1.Certificate) (*v1alpha1.Order, []v1alpha1.Challenge) {
	t.Helper()
	var orders v1alpha1.OrderList
	if err := env.admin.List(t.Context(), &orders, client.InNamespace(a.ns)); err != nil {
		t.Fatal(err)
	}
	for i := range orders.Items {
		o := &orders.Items[i]
		if o.Spec.Request.Kind != "Certificate" || o.Spec.Request.Name != cert.Name {
			continue
		}
		var challenges v1alpha1.ChallengeList
		if err := env.admin.List(t.Context(), &challenges, client.InNamespace(a.ns)); err != nil {
			t.Fatal(err)
		}
		return o, slices.DeleteFunc(challenges.Items, func(c v1alpha1.Challenge) bool { return c.Spec.Order != o.Name })
	}
	t.Fatalf("no Order for Certificate %s among %d", cert.Name, len(orders.Items))
	return nil, nil
}

// txtRecords are the values BIND answers for the TXT records of the DNS-01
// challenges of name.
func (a *acmeEnv) txtRecords(t *testing.T, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("_acme-challenge."+strings.TrimPrefix(name, "*.")+".", dns.TypeTXT)
	r, err := dns.Exchange(m, a.dns.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, txt.Txt...)
		}
	}
	return values
}

// TestACMEDNS01AndSolverSelectors gets certificates from Pebble through real
// DNS-01 validations against BIND: a wildcard name, and a Certificate whose
// names one issuer solves by HTTP-01 and by DNS-01, as its selectors say.
// Each issuance shows itself in an Order and Challenges, and leaves no TXT
// record behind.
func TestACMEDNS01AndSolverSelectors(t *testing.T) {
	a := newACMEEnv(t, []string{"web"}, pebble.Options{})
	zone := "dns." + a.ns + ".example.test"
	iss := a.issuer(t, true, nil,
		v1alpha1.ACMESolver{HTTP01: &v1alpha1.ACMEHTTP01Solver{}},
		a.dns01(a.tsigSecret, &v1alpha1.ACMESolverSelector{DNSZones: []string{zone}}),
	)

	t.Run("a wildcard name and its domain are validated by DNS-01", func(t *testing.T) {
		cert := a.certificate(t, "wild", iss.Name, "*.dns", "dns")
		cert = waitCert(t, cert, "to be issued by Pebble", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
		secret := readySecret(t, a.ns, "wild-tls")
		leafOf(t, secret, a.pebble.Root, "anything."+zone)
		leafOf(t, secret, a.pebble.Root, zone)
		order, challenges := a.orderOf(t, cert)
		if order.Status.State != v1alpha1.ACMEStateValid || order.Status.NotAfter == nil {
			t.Fatalf("Order %s: %+v, want valid with the certificate's validity", order.Name, order.Status)
		}
		// The lifetime asked for (the issuer's default, 24h) is the order's
		// notAfter, which Pebble honours.
		if d := order.Spec.Duration; d == nil || d.Duration != 24*time.Hour {
			t.Errorf("the Order asked for %v, want the default 24h", d)
		}
		if got := order.Status.NotAfter.Sub(order.Status.NotBefore.Time); got > 25*time.Hour {
			t.Errorf("the certificate lives %s, want the 24h asked for", got)
		}
		if o := order.OwnerReferences; len(o) != 1 || o[0].UID != cert.UID || o[0].Kind != "Certificate" {
			t.Errorf("Order owners %+v, want the Certificate", o)
		}
		if len(challenges) != 2 {
			t.Fatalf("%d Challenges, want one per name", len(challenges))
		}
		for _, c := range challenges {
			if c.Spec.Type != "dns-01" || c.Status.State != v1alpha1.ACMEStateValid {
				t.Errorf("Challenge %s for %s: %s, %+v; want a valid dns-01 challenge", c.Name, c.Spec.DNSName, c.Spec.Type, c.Status)
			}
		}
		if left := a.txtRecords(t, zone); len(left) != 0 {
			t.Errorf("TXT records left at _acme-challenge.%s: %q", zone, left)
		}
	})

	t.Run("one issuer solves each name with the solver its selectors choose", func(t *testing.T) {
		watches := watchRecords(t, a.ns)
		cert := a.certificate(t, "mixed", iss.Name, "web", "db.dns")
		waitCert(t, cert, "to be issued by Pebble", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
		leafOf(t, readySecret(t, a.ns, "mixed-tls"), a.pebble.Root, a.name("db.dns"))
		order, challenges := a.orderOf(t, cert)
		types := map[string]string{}
		for _, c := range challenges {
			types[c.Spec.DNSName] = c.Spec.Type
			if c.Status.State != v1alpha1.ACMEStateValid {
				t.Errorf("Challenge for %s: %+v", c.Spec.DNSName, c.Status)
			}
		}
		if types[a.name("web")] != "http-01" || types[a.name("db.dns")] != "dns-01" {
			t.Errorf("challenge types %v, want http-01 for web, dns-01 for the name in the dns01 solver's zone", types)
		}
		writes := watches.writesFor(t, order.Name)
		t.Logf("the Order and Challenges of an issuance with two names took %d writes", writes)
		if writes > 12 {
			t.Errorf("%d writes of Orders and Challenges for one issuance with two names; they are written once per change", writes)
		}
	})
}

// recordWatch counts the writes of Orders and Challenges in a namespace.
type recordWatch struct {
	mu     sync.Mutex
	events map[string]int // by Order name (a Challenge's: its Order's)
	err    error
}

func watchRecords(t *testing.T, ns string) *recordWatch {
	t.Helper()
	rw := &recordWatch{events: map[string]int{}}
	watcher, err := client.NewWithWatch(env.cp.Config, client.Options{Scheme: env.scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, list := range []client.ObjectList{&v1alpha1.OrderList{}, &v1alpha1.ChallengeList{}} {
		// From the watch cache's current state ("0"): a fresher resource
		// version can be refused while that cache has seen no change of
		// the resource.
		w, err := watcher.Watch(t.Context(), list, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		go func() {
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					rw.mu.Lock()
					rw.err = fmt.Errorf("watching Orders and Challenges: %+v", ev.Object)
					rw.mu.Unlock()
				}
				if ev.Type != watch.Added && ev.Type != watch.Modified {
					continue
				}
				var order string
				switch o := ev.Object.(type) {
				case *v1alpha1.Order:
					order = o.Name
				case *v1alpha1.Challenge:
					order = o.Spec.Order
				}
				rw.mu.Lock()
				rw.events[order]++
				rw.mu.Unlock()
			}
		}()
	}
	return rw
}

func (rw *recordWatch) writesFor(t *testing.T, order string) int {
	t.Helper()
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err != nil {
		t.Fatal(rw.err)
	}
	return rw.events[order]
}

// TestACMEChallengeFailuresShowWhy checks that a DNS-01 challenge that
// fails says why where a user looks, in its Challenge, its Order and the
// Certificate, and leaves no record in the zone: once because the
// nameserver refuses the update (a wrong TSIG secret), once because the
// ACME server cannot see the record it was shown.
func TestACMEChallengeFailuresShowWhy(t *testing.T) {
	a := newACMEEnv(t, nil, pebble.Options{})

	t.Run("a TSIG secret the nameserver does not take", func(t *testing.T) {
		wrong := uniqueName("wrong-tsig")
		if err := env.admin.Create(t.Context(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: certmintNS, Name: wrong},
			StringData: map[string]string{"secret": "c2VjcmV0IHRoYXQgYmluZCBkb2VzIG5vdCBrbm93IGF0IGFsbA=="},
		}); err != nil {
			t.Fatal(err)
		}
		iss := a.issuer(t, true, nil, a.dns01(wrong, nil))
		cert := a.certificate(t, "refused", iss.Name, "refused")
		waitCert(t, cert, "to fail", func(c *v1alpha1.Certificate) bool {
			cond := meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionIssuing)
			return cond != nil && cond.Status == metav1.ConditionFalse && strings.Contains(cond.Message, "BADSIG")
		})
		_, challenges := a.orderOf(t, cert)
		if len(challenges) != 1 || challenges[0].Status.State != v1alpha1.ACMEStateInvalid || !strings.Contains(challenges[0].Status.Message, "BADSIG") {
			t.Errorf("Challenges %+v, want one invalid, saying the nameserver refused the key", challenges)
		}
		if left := a.txtRecords(t, a.name("refused")); len(left) != 0 {
			t.Errorf("TXT records left: %q", left)
		}
	})

	t.Run("a record the ACME server cannot see", func(t *testing.T) {
		// This Pebble resolves through a DNS server of its own, which has
		// none of BIND's records.
		blind := pebble.Start(t, pebble.Options{HTTPPort: 1})
		iss := a.issuer(t, true, func(s *v1alpha1.ACMEIssuer) {
			s.Server, s.CABundle, s.TrustBundle = blind.DirectoryURL, string(blind.TLSCA), string(blind.Root)
		}, a.dns01(a.tsigSecret, nil))
		cert := a.certificate(t, "unseen", iss.Name, "unseen")
		got := waitCert(t, cert, "to fail", func(c *v1alpha1.Certificate) bool {
			cond := meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionIssuing)
			return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason != ""
		})
		order, challenges := a.orderOf(t, cert)
		if len(challenges) != 1 {
			t.Fatalf("%d Challenges, want 1", len(challenges))
		}
		serverSaid := challenges[0].Status.Message
		if challenges[0].Status.State != v1alpha1.ACMEStateInvalid || !strings.Contains(serverSaid, "TXT") {
			t.Fatalf("Challenge status %+v, want invalid with the ACME server's words about the TXT record", challenges[0].Status)
		}
		if order.Status.State != v1alpha1.ACMEStateInvalid || !strings.Contains(order.Status.Message, serverSaid) {
			t.Errorf("Order status %+v, want invalid with the server's words", order.Status)
		}
		if cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionIssuing); !strings.Contains(cond.Message, serverSaid) {
			t.Errorf("the Certificate's Issuing condition %q does not give the server's words %q", cond.Message, serverSaid)
		}
		if left := a.txtRecords(t, a.name("unseen")); len(left) != 0 {
			t.Errorf("TXT records left: %q", left)
		}
	})
}

// TestACMERateLimitIsRetriedWhenTheServerSays puts a proxy in front of
// Pebble that answers the first new order with 429 Too Many Requests and a
// Retry-After, and checks that the order is asked for again no sooner,
// that the Order says why it waits, and that the certificate then comes.
func TestACMERateLimitIsRetriedWhenTheServerSays(t *testing.T) {
	a := newACMEEnv(t, []string{"web"}, pebble.Options{})
	const retryAfter = 4 * time.Second
	proxy := newRateLimitingProxy(t, a.pebble, "/order-plz", retryAfter)
	iss := a.issuer(t, true, func(s *v1alpha1.ACMEIssuer) {
		s.Server, s.CABundle = proxy.directoryURL, string(proxy.tlsCA)
	}, v1alpha1.ACMESolver{HTTP01: &v1alpha1.ACMEHTTP01Solver{}})
	cert := a.certificate(t, "limited", iss.Name, "web")
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var orders v1alpha1.OrderList
		if err := env.admin.List(ctx, &orders, client.InNamespace(a.ns)); err != nil {
			return false, err
		}
		for _, o := range orders.Items {
			if o.Status.Reason == "RateLimited" && o.Status.RetryAfter != nil {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no Order says it is rate limited: %v", err)
	}
	waitCert(t, cert, "to be issued after the rate limit", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	times := proxy.requests()
	if len(times) < 2 {
		t.Fatalf("%d new orders, want a refused one and another", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < retryAfter {
		t.Errorf("the order was asked for again %s after the 429, before its Retry-After of %s", gap, retryAfter)
	}
}

// rateLimitingProxy forwards to Pebble, keeping the Host of each request so
// that Pebble's URLs and the JWS it checks name the proxy; it answers the
// first POST to path with 429 and a Retry-After.
type rateLimitingProxy struct {
	directoryURL string
	tlsCA        []byte

	mu    sync.Mutex
	times []time.Time
}

func newRateLimitingProxy(t *testing.T, pb *pebble.Server, path string, retryAfter time.Duration) *rateLimitingProxy {
	t.Helper()
	target, err := url.Parse(pb.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pb.TLSCA)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: target.Scheme, Host: target.Host})
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: target.Hostname()}},
	}
	p := &rateLimitingProxy{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == path {
			p.mu.Lock()
			p.times = append(p.times, time.Now())
			first := len(p.times) == 1
			p.mu.Unlock()
			if first {
				w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders recently"}`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.directoryURL = srv.URL + target.Path
	p.tlsCA = pki.EncodeCertificates(srv.Certificate())
	return p
}

func (p *rateLimitingProxy) requests() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.times)
}

// TestACMEExternalAccountBinding registers with a Pebble that requires
// external account binding: refused without one, registered with it.
func TestACMEExternalAccountBinding(t *testing.T) {
	const keyID = "certmint-kid"
	// base64url of 32 bytes, as CAs hand MAC keys out.
	const macKey = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	a := newACMEEnv(t, []string{"web"}, pebble.Options{EABKeys: map[string]string{keyID: macKey}})
	http01 := v1alpha1.ACMESolver{HTTP01: &v1alpha1.ACMEHTTP01Solver{}}

	t.Run("without a binding the server refuses the account", func(t *testing.T) {
		iss := a.issuer(t, false, nil, http01)
		cond := waitReady(t, iss, metav1.ConditionFalse, "ACMEAccountError")
		if !strings.Contains(strings.ToLower(cond.Message), "externalaccount") {
			t.Errorf("the issuer's Ready message %q does not give the server's reason", cond.Message)
		}
	})

	t.Run("with the binding the account is registered and certificates issued", func(t *testing.T) {
		secret := uniqueName("eab")
		if err := env.admin.Create(t.Context(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: certmintNS, Name: secret},
			StringData: map[string]string{"key": macKey},
		}); err != nil {
			t.Fatal(err)
		}
		iss := a.issuer(t, true, func(s *v1alpha1.ACMEIssuer) {
			s.ExternalAccountBinding = &v1alpha1.ACMEExternalAccountBinding{
				KeyID: keyID, KeySecretRef: v1alpha1.IssuerSecretKeySelector{Name: secret, Key: "key"},
			}
		}, http01)
		cert := a.certificate(t, "bound", iss.Name, "web")
		waitCert(t, cert, "to be issued", readyIs(metav1.ConditionTrue, certificate.ReasonReady))

		// An edited email reaches the account itself.
		iss.Spec.ACME.Email = "new-address@certmint.test"
		if err := env.admin.Update(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
		account := a.accountClient(t, iss)
		err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			acct, err := account.GetReg(ctx, "")
			if err != nil {
				return false, err
			}
			return slices.Equal(acct.Contact, []string{"mailto:new-address@certmint.test"}), nil
		})
		if err != nil {
			t.Errorf("the account's contact did not become the edited email: %v", err)
		}
	})
}

// accountClient is an ACME client of iss's account at the test's Pebble,
// with the key the controller keeps.
func (a *acmeEnv) accountClient(t *testing.T, iss *v1alpha1.ClusterIssuer) *acme.Client {
	t.Helper()
	var secret corev1.Secret
	if err := env.admin.Get(t.Context(), client.ObjectKey{Namespace: certmintNS, Name: iss.Spec.ACME.AccountKeySecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParsePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.pebble.TLSCA)
	c := &acme.Client{Key: key, DirectoryURL: a.pebble.DirectoryURL,
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}}
	// The account exists: registering its key again finds it.
	if _, err := c.Register(t.Context(), &acme.Account{}, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		t.Fatal(err)
	}
	return c
}

// TestACMEPreferredChain checks that spec.acme.preferredChain picks the
// alternate chain Pebble offers to its other root, with a trust bundle
// that holds that root alone, as an issuer that trusts only it would.
func TestACMEPreferredChain(t *testing.T) {
	a := newACMEEnv(t, []string{"web"}, pebble.Options{AlternateRoots: 1})
	alt, err := pki.ParseCertificates(a.pebble.AlternateRoots[0])
	if err != nil {
		t.Fatal(err)
	}
	iss := a.issuer(t, true, func(s *v1alpha1.ACMEIssuer) {
		s.TrustBundle = string(a.pebble.AlternateRoots[0])
		s.PreferredChain = alt[0].Subject.CommonName
	}, v1alpha1.ACMESolver{HTTP01: &v1alpha1.ACMEHTTP01Solver{}})
	cert := a.certificate(t, "preferred", iss.Name, "web")
	waitCert(t, cert, "to be issued", readyIs(metav1.ConditionTrue, certificate.ReasonReady))
	chain, err := pki.ParseCertificates(readySecret(t, a.ns, "preferred-tls").Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	if top := chain[len(chain)-1]; top.Issuer.CommonName != alt[0].Subject.CommonName {
		t.Errorf("the chain leads to %q, want the preferred %q", top.Issuer.CommonName, alt[0].Subject.CommonName)
	}
}

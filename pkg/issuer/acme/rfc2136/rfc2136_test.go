package rfc2136_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certmint/certmint/pkg/issuer/acme/rfc2136"
	"github.com/certmint/certmint/test/bind"
)

// The tests run against a real named: what a dynamic update does to a
// zone, and how a nameserver refuses one, is BIND's to say.

func TestPresentedValueIsAnsweredUntilCleanedUp(t *testing.T) {
	ns := bind.Start(t, bind.Options{})
	c := newClient(t, ns, nil)
	ctx := t.Context()
	name := rfc2136.ChallengeRecord("app.example.test")

	// Twice: a retried Present must not add a second record.
	for range 2 {
		if err := c.Present(ctx, name, "value-1"); err != nil {
			t.Fatal(err)
		}
	}
	if got := txtValues(t, ns, name); !slices.Equal(got, []string{"value-1"}) {
		t.Errorf("TXT %s = %q after presenting value-1 twice, want it once", name, got)
	}
	assertAnswered(t, c, name, "value-1", true)
	assertAnswered(t, c, name, "value-2", false)

	// Twice: a retried CleanUp finds nothing to remove, which is fine.
	for range 2 {
		if err := c.CleanUp(ctx, name, "value-1"); err != nil {
			t.Fatal(err)
		}
	}
	assertAnswered(t, c, name, "value-1", false)
	if got := txtValues(t, ns, name); len(got) != 0 {
		t.Errorf("TXT %s = %q after cleaning up, want none", name, got)
	}
}

// TestNameAndWildcardChallengesShareTheRecord presents the challenges of
// example.test and *.example.test, which have one record name and two
// values, and withdraws them one at a time.
func TestNameAndWildcardChallengesShareTheRecord(t *testing.T) {
	ns := bind.Start(t, bind.Options{})
	c := newClient(t, ns, nil)
	ctx := t.Context()
	name, wildcardName := rfc2136.ChallengeRecord("example.test"), rfc2136.ChallengeRecord("*.example.test")
	if name != wildcardName {
		t.Fatalf("the challenge records of example.test and *.example.test are %s and %s, want one name", name, wildcardName)
	}

	if err := c.Present(ctx, name, "for-the-name"); err != nil {
		t.Fatal(err)
	}
	if err := c.Present(ctx, wildcardName, "for-the-wildcard"); err != nil {
		t.Fatal(err)
	}
	assertAnswered(t, c, name, "for-the-name", true)
	assertAnswered(t, c, name, "for-the-wildcard", true)

	if err := c.CleanUp(ctx, name, "for-the-name"); err != nil {
		t.Fatal(err)
	}
	assertAnswered(t, c, name, "for-the-name", false)
	assertAnswered(t, c, name, "for-the-wildcard", true)
	if got := txtValues(t, ns, name); !slices.Equal(got, []string{"for-the-wildcard"}) {
		t.Errorf("TXT %s = %q after cleaning up the name's value, want the wildcard's only", name, got)
	}
}

// TestRecordGoesIntoTheZoneHoldingIt serves a zone and a child zone of it
// from one nameserver: a record below the zone cut belongs to the child,
// found by SOA queries unless the zone is given.
func TestRecordGoesIntoTheZoneHoldingIt(t *testing.T) {
	ns := bind.Start(t, bind.Options{Zones: []string{"example.test.", "sub.example.test."}})
	for _, tc := range []struct {
		name   string
		zone   string
		record string
	}{
		{name: "a record of the parent zone is found in it", record: "_acme-challenge.app.example.test."},
		{name: "a record below the zone cut is found in the child zone", record: "_acme-challenge.deep.app.sub.example.test."},
		{name: "a record at the child's apex is found in the child zone", record: "_acme-challenge.sub.example.test."},
		{name: "a record goes into the zone given", zone: "sub.example.test", record: "_acme-challenge.app.sub.example.test."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, ns, func(o *rfc2136.Options) { o.Zone = tc.zone })
			if err := c.Present(t.Context(), tc.record, "v"); err != nil {
				t.Fatal(err)
			}
			assertAnswered(t, c, tc.record, "v", true)
			if err := c.CleanUp(t.Context(), tc.record, "v"); err != nil {
				t.Fatal(err)
			}
			assertAnswered(t, c, tc.record, "v", false)
		})
	}
}

// TestRefusedUpdatesArePermanentAndChangeNothing checks that each way of
// getting the key or the zone wrong comes back as a permanent error that
// tells the user what to fix, and leaves the zone as it was.
func TestRefusedUpdatesArePermanentAndChangeNothing(t *testing.T) {
	ns := bind.Start(t, bind.Options{Zones: []string{"example.test.", "other.test."}})
	good := newClient(t, ns, nil)
	const name, value = "_acme-challenge.app.example.test.", "refused"
	for _, tc := range []struct {
		name    string
		opts    func(*rfc2136.Options)
		message string
	}{
		{
			name:    "a wrong secret is refused as BADSIG",
			opts:    func(o *rfc2136.Options) { o.TSIGSecret = wrongSecret(t) },
			message: "the nameserver refused the update: BADSIG, the signature does not match its secret of the TSIG key; check the TSIG secret",
		},
		{
			name:    "an unknown key name is refused as BADKEY",
			opts:    func(o *rfc2136.Options) { o.TSIGKeyName = "someone-else." },
			message: "the nameserver refused the update: BADKEY, it has no TSIG key of that name and algorithm; check the TSIG key name and algorithm",
		},
		{
			name:    "the key's name with another algorithm is refused as BADKEY",
			opts:    func(o *rfc2136.Options) { o.TSIGAlgorithm = "hmac-sha512" },
			message: "the nameserver refused the update: BADKEY",
		},
		{
			name:    "a zone the record is not in is refused as NOTZONE",
			opts:    func(o *rfc2136.Options) { o.Zone = "other.test." },
			message: "the nameserver refused the update: NOTZONE, the record is outside the zone; check the zone",
		},
		{
			name:    "a zone the nameserver does not serve is refused as NOTAUTH",
			opts:    func(o *rfc2136.Options) { o.Zone = "app.example.test." },
			message: "the nameserver refused the update: NOTAUTH",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, ns, tc.opts)
			err := c.Present(t.Context(), name, value)
			assertPermanent(t, err, tc.message)
			assertAnswered(t, good, name, value, false)
			assertPermanent(t, c.CleanUp(t.Context(), name, value), tc.message)
		})
	}
}

func TestRecordInNoZoneOfTheNameserverIsPermanentError(t *testing.T) {
	ns := bind.Start(t, bind.Options{})
	c := newClient(t, ns, nil)
	err := c.Present(t.Context(), rfc2136.ChallengeRecord("app.elsewhere.test"), "v")
	assertPermanent(t, err, "serves no zone holding _acme-challenge.app.elsewhere.test.")
	_, err = c.Answered(t.Context(), rfc2136.ChallengeRecord("app.elsewhere.test"), "v")
	assertPermanent(t, err, "the nameserver answered REFUSED; it serves no zone holding the name")
}

func TestUnreachableNameserverIsRetryableError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := rfc2136.New(rfc2136.Options{Nameserver: addr, TSIGKeyName: "k.", TSIGSecret: wrongSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Present(t.Context(), "_acme-challenge.example.test.", "v")
	var permanent *rfc2136.PermanentError
	if err == nil || errors.As(err, &permanent) {
		t.Fatalf("Present with nothing listening at %s = %v, want a retryable error", addr, err)
	}
}

func TestChallengeRecordIsUnderscoreACMEChallengeOfTheName(t *testing.T) {
	for _, tc := range []struct {
		name, domain, want string
	}{
		{name: "a name gets _acme-challenge prepended and is fully qualified", domain: "app.example.test", want: "_acme-challenge.app.example.test."},
		{name: "a wildcard shares the record of its base name", domain: "*.example.test", want: "_acme-challenge.example.test."},
		{name: "a fully qualified name is not qualified twice", domain: "example.test.", want: "_acme-challenge.example.test."},
		{name: "the name is lowercased", domain: "App.Example.Test", want: "_acme-challenge.app.example.test."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rfc2136.ChallengeRecord(tc.domain); got != tc.want {
				t.Errorf("ChallengeRecord(%q) = %q, want %q", tc.domain, got, tc.want)
			}
		})
	}
}

// newClient returns a Client with ns's key, changed by edit.
func newClient(t *testing.T, ns *bind.Server, edit func(*rfc2136.Options)) *rfc2136.Client {
	t.Helper()
	opts := rfc2136.Options{
		Nameserver:    ns.Addr,
		TSIGKeyName:   ns.Key.Name,
		TSIGAlgorithm: ns.Key.Algorithm,
		TSIGSecret:    ns.Key.Secret,
		// Generous for two shared cores: the tests wait on answers, not
		// on this.
		Timeout: time.Minute,
	}
	if edit != nil {
		edit(&opts)
	}
	c, err := rfc2136.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func assertAnswered(t *testing.T, c *rfc2136.Client, name, value string, want bool) {
	t.Helper()
	got, err := c.Answered(t.Context(), name, value)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Answered(%s, %s) = %t, want %t", name, value, got, want)
	}
}

func assertPermanent(t *testing.T, err error, message string) {
	t.Helper()
	var permanent *rfc2136.PermanentError
	switch {
	case err == nil:
		t.Errorf("got no error, want a permanent one saying %q", message)
	case !errors.As(err, &permanent):
		t.Errorf("got %q (%T), want a permanent error", err, err)
	case !strings.Contains(err.Error(), message):
		t.Errorf("got %q, want it to say %q", err, message)
	}
}

// txtValues asks ns for the TXT records at name, over its own client, as
// a second opinion on Answered.
func txtValues(t *testing.T, ns *bind.Server, name string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r, _, err := new(dns.Client).ExchangeContext(ctx, q, ns.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}
	slices.Sort(values)
	return values
}

// wrongSecret is a well-formed secret that is not the key of any server.
func wrongSecret(t *testing.T) string {
	t.Helper()
	return base64.StdEncoding.EncodeToString([]byte(t.Name() + " is not the key"))
}

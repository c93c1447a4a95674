package bind

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestServerServesItsZonesAndTakesSignedUpdatesOnly starts named with two
// zones and a static record, and checks what the tests built on it rely
// on: the record is served, an update signed with the key is applied (named
// refuses one it cannot write to the zone's journal), and an unsigned one is
// refused.
func TestServerServesItsZonesAndTakesSignedUpdatesOnly(t *testing.T) {
	s := Start(t, Options{
		Zones:        []string{"example.test", "other.test."},
		Records:      []string{"app.other.test. 60 IN A 127.0.0.2"},
		KeyAlgorithm: "hmac-sha512",
	})
	if s.Key.Name != "certmint-test." || s.Key.Algorithm != "hmac-sha512" || s.Key.Secret == "" {
		t.Fatalf("Key = %+v, want certmint-test. with hmac-sha512 and a secret", s.Key)
	}

	if got := query(t, s, "app.other.test.", dns.TypeA); len(got) != 1 || got[0].(*dns.A).A.String() != "127.0.0.2" {
		t.Errorf("A app.other.test. = %v, want 127.0.0.2", got)
	}

	add := func(signed bool) int {
		m := new(dns.Msg)
		m.SetUpdate("example.test.")
		m.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "signed.example.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"v"}}})
		c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
		if signed {
			m.SetTsig(s.Key.Name, dns.HmacSHA512, 300, time.Now().Unix())
			c.TsigSecret = map[string]string{s.Key.Name: s.Key.Secret}
		}
		r, _, err := c.ExchangeContext(t.Context(), m, s.Addr)
		if err != nil {
			t.Fatalf("update (signed: %t): %v", signed, err)
		}
		return r.Rcode
	}
	if rcode := add(false); rcode != dns.RcodeRefused {
		t.Errorf("an unsigned update got %s, want REFUSED", dns.RcodeToString[rcode])
	}
	if rcode := add(true); rcode != dns.RcodeSuccess {
		t.Fatalf("a signed update got %s, want NOERROR", dns.RcodeToString[rcode])
	}
	if got := query(t, s, "signed.example.test.", dns.TypeTXT); len(got) != 1 {
		t.Errorf("TXT signed.example.test. = %v after the signed update, want one record", got)
	}
}

func query(t *testing.T, s *Server, name string, qtype uint16) []dns.RR {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	r, _, err := (&dns.Client{Timeout: 10 * time.Second}).ExchangeContext(t.Context(), q, s.Addr)
	if err != nil {
		t.Fatalf("asking for %s %s: %v", dns.TypeToString[qtype], name, err)
	}
	return r.Answer
}

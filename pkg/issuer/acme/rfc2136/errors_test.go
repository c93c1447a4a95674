package rfc2136

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestUpdateOutcomesAreClassified(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name string
		// answer and err are what the exchange returned.
		answer *dns.Msg
		err    error
		// message is part of the error; empty for none.
		message   string
		permanent bool
	}{
		{
			name:   "an update answered NOERROR succeeded",
			answer: answer(dns.RcodeSuccess, 0),
		},
		{
			name:      "a signature with the wrong secret, BADSIG, is permanent and says to check the secret",
			answer:    answer(dns.RcodeNotAuth, dns.RcodeBadSig),
			err:       dns.ErrSig,
			message:   "the nameserver refused the update: BADSIG, the signature does not match its secret of the TSIG key; check the TSIG secret",
			permanent: true,
		},
		{
			name:      "a key the nameserver does not know, BADKEY, is permanent and says to check its name and algorithm",
			answer:    answer(dns.RcodeNotAuth, dns.RcodeBadKey),
			err:       dns.ErrSig,
			message:   "the nameserver refused the update: BADKEY, it has no TSIG key of that name and algorithm; check the TSIG key name and algorithm",
			permanent: true,
		},
		{
			name:      "a signing time out of the window, BADTIME, is permanent and says the clocks are apart",
			answer:    answer(dns.RcodeNotAuth, dns.RcodeBadTime),
			err:       dns.ErrSig,
			message:   "the nameserver refused the update: BADTIME; the clocks of this host and the nameserver are more than 300 seconds apart",
			permanent: true,
		},
		{
			name:      "another TSIG error is permanent and named",
			answer:    answer(dns.RcodeNotAuth, dns.RcodeBadTrunc),
			message:   "the nameserver refused the update's TSIG signature: BADTRUNC",
			permanent: true,
		},
		{
			name:      "NOTAUTH is permanent and says to check the zone, the key's name and secret",
			answer:    answer(dns.RcodeNotAuth, 0),
			message:   "the nameserver refused the update: NOTAUTH, it is not authoritative for the zone or does not take the TSIG key; check the zone and the TSIG key name and secret",
			permanent: true,
		},
		{
			name:      "REFUSED is permanent and says to check that the key may update the zone",
			answer:    answer(dns.RcodeRefused, 0),
			message:   "the nameserver refused the update: REFUSED; check that it allows the TSIG key to update the zone",
			permanent: true,
		},
		{
			name:      "NOTZONE is permanent and says to check the zone",
			answer:    answer(dns.RcodeNotZone, 0),
			message:   "the nameserver refused the update: NOTZONE, the record is outside the zone; check the zone",
			permanent: true,
		},
		{
			name:      "another refusal is permanent and named",
			answer:    answer(dns.RcodeNotImplemented, 0),
			message:   "the nameserver refused the update: NOTIMP",
			permanent: true,
		},
		{
			name:    "SERVFAIL is worth a retry",
			answer:  answer(dns.RcodeServerFailure, 0),
			message: "the nameserver failed the update: SERVFAIL",
		},
		{
			name:      "an answer that fails TSIG verification is permanent and says to check the secret",
			answer:    answer(dns.RcodeSuccess, 0),
			err:       dns.ErrSig,
			message:   "the nameserver's answer fails TSIG verification (dns: bad signature); check the TSIG secret",
			permanent: true,
		},
		{
			name:    "a network timeout is worth a retry",
			err:     timeout,
			message: "i/o timeout",
		},
		{
			name:    "the end of the context is worth a retry",
			err:     context.DeadlineExceeded,
			message: "context deadline exceeded",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := updateError(tc.answer, tc.err)
			checkClassified(t, err, tc.message, tc.permanent)
			if tc.err != nil && !tc.permanent && !errors.Is(err, tc.err) {
				t.Errorf("got %v, want it to wrap %v", err, tc.err)
			}
		})
	}
}

func TestQueryOutcomesAreClassified(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rcode     int
		message   string
		permanent bool
	}{
		{name: "SERVFAIL is worth a retry", rcode: dns.RcodeServerFailure, message: "the nameserver answered SERVFAIL"},
		{name: "REFUSED is permanent and says the nameserver serves no zone for the name", rcode: dns.RcodeRefused, message: "the nameserver answered REFUSED; it serves no zone holding the name", permanent: true},
		{name: "NOTAUTH is permanent and says the nameserver serves no zone for the name", rcode: dns.RcodeNotAuth, message: "the nameserver answered NOTAUTH; it serves no zone holding the name", permanent: true},
		{name: "FORMERR is permanent and named", rcode: dns.RcodeFormatError, message: "the nameserver answered FORMERR", permanent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkClassified(t, queryError(tc.rcode), tc.message, tc.permanent)
		})
	}
}

func checkClassified(t *testing.T, err error, message string, permanent bool) {
	t.Helper()
	if message == "" {
		if err != nil {
			t.Fatalf("got %v, want no error", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), message) {
		t.Fatalf("got %v, want an error saying %q", err, message)
	}
	var p *PermanentError
	if got := errors.As(err, &p); got != permanent {
		t.Errorf("%q is permanent: %t, want %t", err, got, permanent)
	}
}

// answer is a nameserver's answer with rcode and, when tsigError is not
// zero, an unsigned TSIG record carrying it: a nameserver cannot sign an
// answer to a request it could not verify (RFC 8945 §5.2).
func answer(rcode, tsigError int) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate("example.test.")
	m.Response = true
	m.Rcode = rcode
	if tsigError != 0 {
		m.Extra = append(m.Extra, &dns.TSIG{
			Hdr:       dns.RR_Header{Name: "key.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: dns.HmacSHA256,
			Error:     uint16(tsigError),
		})
	}
	return m
}

// Package rfc2136 publishes and withdraws the TXT records of ACME DNS-01
// challenges (RFC 8555 §8.4) on an authoritative nameserver by dynamic
// update (RFC 2136) signed with a TSIG key (RFC 8945). It knows nothing of
// ACME orders, of Kubernetes, or of where the key is kept.
package rfc2136

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// challengeTTL is short: the record lives for one validation, and a
	// resolver should not keep answering a withdrawn value.
	challengeTTL = 60
	// defaultTimeout bounds one exchange with the nameserver.
	defaultTimeout = 10 * time.Second
	// fudge is how far apart, in seconds, the clocks of this host and the
	// nameserver may be; 300 is what RFC 8945 recommends.
	fudge = 300
)

// algorithms are the TSIG algorithms a key may use, by the names BIND and
// RFC 8945 give them. HMAC-MD5 is left out: it is deprecated and the DNS
// library no longer signs with it.
var algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// Options configures a Client.
type Options struct {
	// Nameserver is the host:port of the authoritative nameserver that
	// takes the updates, usually the zone's primary; port 53 when
	// missing. Required.
	Nameserver string
	// TSIGKeyName is the name of the TSIG key, as the nameserver knows
	// it. Required.
	TSIGKeyName string
	// TSIGAlgorithm is one of hmac-sha256, hmac-sha384, hmac-sha512 and
	// hmac-sha1. Defaults to hmac-sha256.
	TSIGAlgorithm string
	// TSIGSecret is the base64 of the key. Required.
	TSIGSecret string
	// Zone is the zone the records go into. Empty means the zone that
	// holds each record, found by asking Nameserver for the SOA of the
	// record's name and then of each of its parents.
	Zone string
	// Timeout bounds each exchange with Nameserver, within the deadline
	// of the context. Defaults to 10 seconds.
	Timeout time.Duration
}

// MarshalLog keeps the TSIG secret out of logs.
func (o Options) MarshalLog() any {
	type redacted Options
	if o.TSIGSecret != "" {
		o.TSIGSecret = "<redacted>"
	}
	return redacted(o)
}

// Client publishes DNS-01 TXT records on one nameserver. It is safe for
// concurrent use.
type Client struct {
	nameserver string
	keyName    string
	algorithm  string
	zone       string
	client     *dns.Client
}

// New returns a Client, or every problem with opts at once.
func New(opts Options) (*Client, error) {
	var errs []error
	nameserver, err := nameserverAddr(opts.Nameserver)
	if err != nil {
		errs = append(errs, err)
	}
	if opts.TSIGKeyName == "" {
		errs = append(errs, errors.New("rfc2136: TSIGKeyName is required"))
	} else if _, ok := dns.IsDomainName(opts.TSIGKeyName); !ok {
		errs = append(errs, fmt.Errorf("rfc2136: TSIGKeyName %q is not a domain name", opts.TSIGKeyName))
	}
	if opts.TSIGAlgorithm == "" {
		opts.TSIGAlgorithm = "hmac-sha256"
	}
	algorithm, ok := algorithms[strings.TrimSuffix(strings.ToLower(opts.TSIGAlgorithm), ".")]
	if !ok {
		errs = append(errs, fmt.Errorf("rfc2136: TSIGAlgorithm %q is not supported: use hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1", opts.TSIGAlgorithm))
	}
	if opts.TSIGSecret == "" {
		errs = append(errs, errors.New("rfc2136: TSIGSecret is required"))
	} else if _, err := base64.StdEncoding.DecodeString(opts.TSIGSecret); err != nil {
		errs = append(errs, errors.New("rfc2136: TSIGSecret is not base64"))
	}
	if opts.Zone != "" {
		if _, ok := dns.IsDomainName(opts.Zone); !ok {
			errs = append(errs, fmt.Errorf("rfc2136: Zone %q is not a domain name", opts.Zone))
		}
	}
	if opts.Timeout < 0 {
		errs = append(errs, fmt.Errorf("rfc2136: Timeout %s is negative", opts.Timeout))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opts.Timeout == 0 {
		opts.Timeout = defaultTimeout
	}
	keyName := dns.CanonicalName(opts.TSIGKeyName)
	zone := ""
	if opts.Zone != "" {
		zone = dns.CanonicalName(opts.Zone)
	}
	return &Client{
		nameserver: nameserver,
		keyName:    keyName,
		algorithm:  algorithm,
		zone:       zone,
		client: &dns.Client{
			// TCP: an update cannot be lost silently as a datagram can,
			// and no answer is truncated.
			Net:        "tcp",
			Timeout:    opts.Timeout,
			TsigSecret: map[string]string{keyName: opts.TSIGSecret},
		},
	}, nil
}

// nameserverAddr is s as host:port, with port 53 when s has none.
func nameserverAddr(s string) (string, error) {
	if s == "" {
		return "", errors.New("rfc2136: Nameserver is required")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a host name, or an IP address, an IPv6 one bracketed
		// or not.
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "53"
	}
	_, portErr := strconv.ParseUint(port, 10, 16)
	if portErr != nil || host == "" || strings.ContainsAny(host, "[]/ ") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
		return "", fmt.Errorf("rfc2136: Nameserver %q is not a host or host:port", s)
	}
	return net.JoinHostPort(host, port), nil
}

// ChallengeRecord is the name of the TXT record of the DNS-01 challenge
// for domain: _acme-challenge.<domain>. (RFC 8555 §8.4), a wildcard's "*."
// removed as in its authorization's identifier (§7.1.4), so that the
// challenges of example.test and *.example.test share one name.
func ChallengeRecord(domain string) string {
	return "_acme-challenge." + dns.CanonicalName(strings.TrimPrefix(domain, "*."))
}

// Present adds value to the TXT records at fqdn. Other values there stay:
// the challenges of a name and of its wildcard share fqdn. Presenting a
// value already there is not an error, and leaves one record of it.
func (c *Client) Present(ctx context.Context, fqdn, value string) error {
	return c.update(ctx, fqdn, value, true)
}

// CleanUp removes value from the TXT records at fqdn, leaving the others; a
// value that is not there is not an error.
func (c *Client) CleanUp(ctx context.Context, fqdn, value string) error {
	return c.update(ctx, fqdn, value, false)
}

func (c *Client) update(ctx context.Context, fqdn, value string, add bool) error {
	fqdn = dns.CanonicalName(fqdn)
	zone, err := c.zoneOf(ctx, fqdn)
	if err != nil {
		return err
	}
	rr := []dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: challengeTTL},
		Txt: []string{value},
	}}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	what := "adding"
	if add {
		// RFC 2136 §3.4.2.2: a record already there is not added twice.
		m.Insert(rr)
	} else {
		what = "removing"
		m.Remove(rr)
	}
	m.SetTsig(c.keyName, c.algorithm, fudge, time.Now().Unix())
	r, _, err := c.client.ExchangeContext(ctx, m, c.nameserver)
	if err := updateError(r, err); err != nil {
		return fmt.Errorf("%s the TXT record %s in zone %s at %s: %w", what, fqdn, zone, c.nameserver, err)
	}
	return nil
}

// Answered reports whether the nameserver itself, not a resolver with a
// cache, answers value among the TXT records at fqdn. It asks Nameserver
// only: secondaries of the zone may answer later.
func (c *Client) Answered(ctx context.Context, fqdn, value string) (bool, error) {
	fqdn = dns.CanonicalName(fqdn)
	r, err := c.query(ctx, fqdn, dns.TypeTXT)
	if err == nil && r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		err = queryError(r.Rcode)
	}
	if err != nil {
		return false, fmt.Errorf("asking %s for the TXT records of %s: %w", c.nameserver, fqdn, err)
	}
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok && strings.EqualFold(txt.Hdr.Name, fqdn) && strings.Join(txt.Txt, "") == value {
			return true, nil
		}
	}
	return false, nil
}

// zoneOf returns the configured zone, or else the zone holding fqdn: the
// closest enclosing name the nameserver answers an SOA for.
func (c *Client) zoneOf(ctx context.Context, fqdn string) (string, error) {
	if c.zone != "" {
		return c.zone, nil
	}
	for off, end := 0, false; !end; off, end = dns.NextLabel(fqdn, off) {
		name := fqdn[off:]
		r, err := c.query(ctx, name, dns.TypeSOA)
		if err == nil && r.Rcode == dns.RcodeServerFailure {
			// Perhaps the zone of name itself, failing to load: going on
			// up would find its parent instead.
			err = queryError(r.Rcode)
		}
		if err != nil {
			return "", fmt.Errorf("finding the zone of %s: asking %s for the SOA of %s: %w", fqdn, c.nameserver, name, err)
		}
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
			continue
		}
		for _, rr := range r.Answer {
			if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, name) {
				return name, nil
			}
		}
	}
	return "", &PermanentError{Err: fmt.Errorf("the nameserver %s serves no zone holding %s; check that it is the primary nameserver of that zone", c.nameserver, fqdn)}
}

// query asks the nameserver about its own data, not for recursion.
func (c *Client) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = false
	// Unsigned: answers are public, and the question is what anyone asking
	// the nameserver sees.
	r, _, err := c.client.ExchangeContext(ctx, q, c.nameserver)
	return r, err
}

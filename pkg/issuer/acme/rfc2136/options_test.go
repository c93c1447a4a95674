package rfc2136

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestNewDefaultsAndCanonicalizesOptions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       Options
		nameserver string
		keyName    string
		algorithm  string
		zone       string
	}{
		{
			name:       "an IPv4 address without a port gets port 53, and the algorithm defaults to hmac-sha256",
			opts:       Options{Nameserver: "192.0.2.1", TSIGKeyName: "acme-update", TSIGSecret: "c2VjcmV0"},
			nameserver: "192.0.2.1:53", keyName: "acme-update.", algorithm: dns.HmacSHA256,
		},
		{
			name:       "a host name with a port keeps it",
			opts:       Options{Nameserver: "ns1.example.test:5353", TSIGKeyName: "k.", TSIGSecret: "c2VjcmV0"},
			nameserver: "ns1.example.test:5353", keyName: "k.", algorithm: dns.HmacSHA256,
		},
		{
			name:       "an IPv6 address without a port gets port 53",
			opts:       Options{Nameserver: "2001:db8::1", TSIGKeyName: "k", TSIGSecret: "c2VjcmV0"},
			nameserver: "[2001:db8::1]:53", keyName: "k.", algorithm: dns.HmacSHA256,
		},
		{
			name:       "a bracketed IPv6 address without a port gets port 53",
			opts:       Options{Nameserver: "[2001:db8::1]", TSIGKeyName: "k", TSIGSecret: "c2VjcmV0"},
			nameserver: "[2001:db8::1]:53", keyName: "k.", algorithm: dns.HmacSHA256,
		},
		{
			name:       "names are lowercased and fully qualified, and the algorithm read as BIND writes it",
			opts:       Options{Nameserver: "192.0.2.1", TSIGKeyName: "ACME-Update", TSIGAlgorithm: "HMAC-SHA512", TSIGSecret: "c2VjcmV0", Zone: "Example.Test"},
			nameserver: "192.0.2.1:53", keyName: "acme-update.", algorithm: dns.HmacSHA512, zone: "example.test.",
		},
		{
			name:       "an algorithm may be written as a fully qualified name",
			opts:       Options{Nameserver: "192.0.2.1", TSIGKeyName: "k", TSIGAlgorithm: "hmac-sha1.", TSIGSecret: "c2VjcmV0"},
			nameserver: "192.0.2.1:53", keyName: "k.", algorithm: dns.HmacSHA1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("nameserver %s, key %s, algorithm %s, zone %q, timeout %s", c.nameserver, c.keyName, c.algorithm, c.zone, c.client.Timeout)
			want := fmt.Sprintf("nameserver %s, key %s, algorithm %s, zone %q, timeout %s", tc.nameserver, tc.keyName, tc.algorithm, tc.zone, defaultTimeout)
			if got != want {
				t.Errorf("got %s\nwant %s", got, want)
			}
		})
	}
}

func TestNewRejectsOptionsNamingTheField(t *testing.T) {
	valid := Options{Nameserver: "192.0.2.1", TSIGKeyName: "k.", TSIGSecret: "c2VjcmV0"}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want []string
	}{
		{
			name: "nothing set is every required field missing at once",
			edit: func(o *Options) { *o = Options{} },
			want: []string{"rfc2136: Nameserver is required", "rfc2136: TSIGKeyName is required", "rfc2136: TSIGSecret is required"},
		},
		{
			name: "HMAC-MD5 is not supported",
			edit: func(o *Options) { o.TSIGAlgorithm = "hmac-md5" },
			want: []string{`rfc2136: TSIGAlgorithm "hmac-md5" is not supported: use hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1`},
		},
		{
			name: "a secret that is not base64 is refused",
			edit: func(o *Options) { o.TSIGSecret = "not base64!" },
			want: []string{"rfc2136: TSIGSecret is not base64"},
		},
		{
			name: "a nameserver with a port that is not a number is refused",
			edit: func(o *Options) { o.Nameserver = "ns1.example.test:dns" },
			want: []string{`rfc2136: Nameserver "ns1.example.test:dns" is not a host or host:port`},
		},
		{
			name: "a nameserver with colons that is no IPv6 address is refused",
			edit: func(o *Options) { o.Nameserver = "ns1:53:53" },
			want: []string{`rfc2136: Nameserver "ns1:53:53" is not a host or host:port`},
		},
		{
			name: "a key name that is not a domain name is refused",
			edit: func(o *Options) { o.TSIGKeyName = "a..b" },
			want: []string{`rfc2136: TSIGKeyName "a..b" is not a domain name`},
		},
		{
			name: "a zone that is not a domain name is refused",
			edit: func(o *Options) { o.Zone = "example..test" },
			want: []string{`rfc2136: Zone "example..test" is not a domain name`},
		},
		{
			name: "a negative timeout is refused",
			edit: func(o *Options) { o.Timeout = -time.Second },
			want: []string{"rfc2136: Timeout -1s is negative"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := valid
			tc.edit(&opts)
			_, err := New(opts)
			if err == nil {
				t.Fatalf("New(%+v) succeeded, want %q", opts.MarshalLog(), tc.want)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got errors %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOptionsLogWithoutTheSecret(t *testing.T) {
	opts := Options{Nameserver: "192.0.2.1", TSIGKeyName: "k.", TSIGSecret: "c2VjcmV0"}
	logged := fmt.Sprintf("%+v", opts.MarshalLog())
	if strings.Contains(logged, opts.TSIGSecret) || !strings.Contains(logged, "k.") {
		t.Errorf("logged as %s, want the key name without the secret", logged)
	}
}

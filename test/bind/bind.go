// Package bind runs BIND 9's named, from Debian's bind9 package, as the
// authoritative DNS server of a few test zones that take RFC 2136 dynamic
// updates signed with a TSIG key, for the tests that prove DNS-01 against
// real DNS. It knows nothing of certmint or ACME.
package bind

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certmint/certmint/test/testproc"
)

// startTimeout bounds the wait for named to serve its zones.
const startTimeout = time.Minute

// Options configures Start.
type Options struct {
	// IP is the address named listens on, over UDP and TCP. Defaults to
	// 127.0.0.1.
	IP string
	// BasePort, when set, is the one port named listens on, as in a
	// network namespace of the test's own. Zero chooses a port free for
	// both UDP and TCP on IP, which must then be an address of this
	// network namespace.
	BasePort int
	// Command makes the command that runs a program, such as one that
	// runs it inside a network namespace; exec.CommandContext by default.
	Command testproc.Command
	// Zones are the zones named is the primary of. Defaults to
	// example.test.
	Zones []string
	// Records are resource records in zone file syntax with absolute
	// owner names, such as "app.example.test. A 127.0.0.1", each served
	// in the zone holding it.
	Records []string
	// KeyName is the name of the TSIG key that may update the zones.
	// Defaults to certmint-test.
	KeyName string
	// KeyAlgorithm is the TSIG key's algorithm, as BIND names it.
	// Defaults to hmac-sha256.
	KeyAlgorithm string
}

// Server is a running named.
type Server struct {
	// Addr is where named answers, as host:port.
	Addr string
	// Zones are the zones it serves, fully qualified.
	Zones []string
	// Key is the TSIG key that may update them.
	Key TSIGKey
	// LogPath is named's log.
	LogPath string
}

// TSIGKey is a TSIG key as BIND's configuration names it.
type TSIGKey struct {
	// Name is fully qualified.
	Name string
	// Algorithm is such as hmac-sha256.
	Algorithm string
	// Secret is the base64 of the key.
	Secret string
}

// secretSizes are the key sizes of the algorithms Start knows: the hash's
// output size, the least RFC 2104 recommends.
var secretSizes = map[string]int{
	"hmac-sha1":   20,
	"hmac-sha224": 28,
	"hmac-sha256": 32,
	"hmac-sha384": 48,
	"hmac-sha512": 64,
}

// Start runs named, serving opts.Zones, until t ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	namedPath := findNamed(t)
	if opts.IP == "" {
		opts.IP = "127.0.0.1"
	}
	ip := net.ParseIP(opts.IP)
	if ip == nil {
		t.Fatalf("bind: IP %q is not an IP address", opts.IP)
	}
	if len(opts.Zones) == 0 {
		opts.Zones = []string{"example.test."}
	}
	if opts.KeyName == "" {
		opts.KeyName = "certmint-test."
	}
	if opts.KeyAlgorithm == "" {
		opts.KeyAlgorithm = "hmac-sha256"
	}
	size, ok := secretSizes[opts.KeyAlgorithm]
	if !ok {
		t.Fatalf("bind: KeyAlgorithm %q is not one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", opts.KeyAlgorithm)
	}
	port := opts.BasePort
	if port == 0 {
		port = freePort(t, opts.IP)
	}

	s := &Server{
		Addr: net.JoinHostPort(opts.IP, strconv.Itoa(port)),
		Key:  TSIGKey{Name: dns.Fqdn(opts.KeyName), Algorithm: opts.KeyAlgorithm, Secret: newSecret(t, size)},
	}
	for _, z := range opts.Zones {
		s.Zones = append(s.Zones, dns.Fqdn(z))
	}
	dir := workDir(t)
	records := zoneRecords(t, s.Zones, opts.Records)
	for _, zone := range s.Zones {
		writeFile(t, filepath.Join(dir, zoneFile(zone)), zoneData(zone, ip, records[zone]))
	}
	conf := filepath.Join(dir, "named.conf")
	writeFile(t, conf, config(dir, ip, port, s.Key, s.Zones))

	s.LogPath = filepath.Join(dir, "named.log")
	// -g: in the foreground, logging to stderr whatever the configuration
	// says; one worker thread is plenty for a test.
	named := testproc.Start(t, opts.Command, s.LogPath, nil, namedPath, "-g", "-n", "1", "-c", conf)
	if err := s.waitServing(t.Context(), named); err != nil {
		// Its log follows, from the cleanup testproc.Start registered.
		t.Fatalf("waiting for named to answer SOA queries for %s at %s: %v", strings.Join(s.Zones, ", "), s.Addr, err)
	}
	return s
}

// Log returns what named has logged so far.
func (s *Server) Log() string { return testproc.ReadLog(s.LogPath) }

// findNamed returns the path of named, which is in sbin, off the PATH of
// many users.
func findNamed(t testing.TB) string {
	t.Helper()
	if path, err := exec.LookPath("named"); err == nil {
		return path
	}
	const debianPath = "/usr/sbin/named"
	if _, err := os.Stat(debianPath); err != nil {
		t.Fatalf("named is not installed (Debian package bind9; hack/deps.sh installs it): %v", err)
	}
	return debianPath
}

// workDir returns the directory for named's configuration, zones and
// journals. Debian's AppArmor profile for named, where it is enforced,
// allows writing only under /var/cache/bind and /var/lib/bind, so the
// directory is made there instead of in the test's temporary directory.
func workDir(t testing.TB) string {
	t.Helper()
	if !confinedByAppArmor() {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/var/cache/bind", "certmint-test-")
	if err != nil {
		t.Fatalf("AppArmor confines named to /var/cache/bind, where this test cannot make a directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// confinedByAppArmor reports whether AppArmor enforces a profile on named.
func confinedByAppArmor() bool {
	profiles, err := os.ReadFile("/sys/kernel/security/apparmor/profiles")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(profiles)) {
		if strings.TrimSpace(line) == "named (enforce)" {
			return true
		}
	}
	return false
}

// config is a named.conf for a primary of zones that key may update, with
// every file in dir and nothing but DNS on ip:port: no recursion, no rndc
// channel, no notifies, no transfers.
func config(dir string, ip net.IP, port int, key TSIGKey, zones []string) string {
	var b strings.Builder
	listenV4, listenV6 := "none;", "none;"
	if ip.To4() != nil {
		listenV4 = ip.String() + ";"
	} else {
		listenV6 = ip.String() + ";"
	}
	fmt.Fprintf(&b, `options {
	directory %q;
	pid-file none;
	session-keyfile %q;
	listen-on port %d { %s };
	listen-on-v6 port %d { %s };
	recursion no;
	notify no;
	dnssec-validation no;
	allow-transfer { none; };
};
controls { };
key %q {
	algorithm %s;
	secret %q;
};
`, dir, filepath.Join(dir, "session.key"), port, listenV4, port, listenV6, key.Name, key.Algorithm, key.Secret)
	for _, zone := range zones {
		fmt.Fprintf(&b, `zone %q {
	type primary;
	file %q;
	allow-update { key %q; };
};
`, zone, zoneFile(zone), key.Name)
	}
	return b.String()
}

// zoneFile is the name of the file of zone in named's directory; its
// journal is beside it.
func zoneFile(zone string) string { return strings.TrimSuffix(zone, ".") + ".db" }

// zoneData is a zone file for zone with the SOA, an NS named ns.<zone> at
// ip (named refuses a zone whose in-zone name server has no address) and
// the records.
func zoneData(zone string, ip net.IP, records []dns.RR) string {
	addrType := "A"
	if ip.To4() == nil {
		addrType = "AAAA"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `$TTL 60
@ IN SOA ns.%[1]s hostmaster.%[1]s 1 3600 600 86400 60
@ IN NS ns.%[1]s
ns.%[1]s IN %[2]s %[3]s
`, zone, addrType, ip)
	for _, rr := range records {
		fmt.Fprintln(&b, rr.String())
	}
	return b.String()
}

// zoneRecords parses records and sorts them into the zones holding them,
// the innermost when zones nest.
func zoneRecords(t testing.TB, zones, records []string) map[string][]dns.RR {
	t.Helper()
	byZone := map[string][]dns.RR{}
	for _, text := range records {
		rr, err := dns.NewRR(text)
		if err != nil || rr == nil {
			t.Fatalf("bind: record %q: %v", text, err)
		}
		name := rr.Header().Name
		holder := ""
		for _, zone := range zones {
			if dns.IsSubDomain(zone, name) && len(zone) > len(holder) {
				holder = zone
			}
		}
		if holder == "" {
			t.Fatalf("bind: record %q is in none of the zones %s", text, strings.Join(zones, ", "))
		}
		byZone[holder] = append(byZone[holder], rr)
	}
	return byZone
}

// waitServing waits until named answers authoritatively for every zone, or
// exits.
func (s *Server) waitServing(ctx context.Context, named *testproc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	client := &dns.Client{Timeout: 2 * time.Second}
	var lastErr error
	for _, zone := range s.Zones {
		for {
			if lastErr = s.servesSOA(ctx, client, zone); lastErr == nil {
				break
			}
			select {
			case <-named.Done():
				return fmt.Errorf("named exited: %w", named.Err())
			case <-ctx.Done():
				return fmt.Errorf("%w; last answer: %w", ctx.Err(), lastErr)
			case <-tick.C:
			}
		}
	}
	return nil
}

func (s *Server) servesSOA(ctx context.Context, client *dns.Client, zone string) error {
	q := new(dns.Msg)
	q.SetQuestion(zone, dns.TypeSOA)
	q.RecursionDesired = false
	r, _, err := client.ExchangeContext(ctx, q, s.Addr)
	switch {
	case err != nil:
		return err
	case r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) == 0:
		return fmt.Errorf("%s, authoritative %t, %d answers", dns.RcodeToString[r.Rcode], r.Authoritative, len(r.Answer))
	}
	return nil
}

// freePort returns a port nothing listens on at ip over either TCP or UDP,
// in this network namespace.
func freePort(t testing.TB, ip string) int {
	t.Helper()
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("finding a free port on %s: %v", ip, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		l.Close()
		if err == nil {
			pc.Close()
			return port
		}
		lastErr = err
	}
	t.Fatalf("finding a port free for both TCP and UDP on %s: %v", ip, lastErr)
	return 0
}

func newSecret(t testing.TB, size int) string {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

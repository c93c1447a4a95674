// Package pebble runs Pebble, the ACME test server, with
// pebble-challtestsrv as its DNS server, for the tests that prove the ACME
// issuer against a real ACME server. Both come from Debian's pebble package.
// It knows nothing of certmint.
package pebble

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/certmint/certmint/test/testproc"
)

// startTimeout bounds the wait for Pebble to serve its directory.
const startTimeout = time.Minute

// Options configures Start.
type Options struct {
	// IP is the address Pebble, its management API and its DNS server
	// listen on; Pebble's TLS certificate is for it. Defaults to 127.0.0.1.
	IP string
	// BasePort, when set, is the first of the five ports they listen on
	// (the directory, Pebble's management API, DNS, the DNS server's
	// management API, Pebble's unused TLS-ALPN validation port), as in a
	// network namespace of the test's own. Zero chooses free ports on IP,
	// which must then be an address of this network namespace.
	BasePort int
	// HTTPPort is where Pebble validates HTTP-01 challenges. Required.
	HTTPPort int
	// ResolveTo is the IPv4 address the DNS server answers for every
	// name: where HTTP-01 validations go. Defaults to IP.
	ResolveTo string
	// DNSServer, when set, is the host:port of the DNS server Pebble
	// resolves through instead of a pebble-challtestsrv of its own, such
	// as a real authoritative server for DNS-01 (ResolveTo is then unused).
	DNSServer string
	// EABKeys, when set, makes Pebble require external account binding,
	// with these MAC keys (base64url) by key ID.
	EABKeys map[string]string
	// AlternateRoots is how many other roots Pebble also issues chains
	// to, offered as alternates; their PEM is in Server.AlternateRoots.
	AlternateRoots int
	// Command makes the command that runs a program, such as one that
	// runs it inside a network namespace; exec.CommandContext by default.
	Command testproc.Command
}

// Server is a running Pebble.
type Server struct {
	// DirectoryURL is the ACME directory.
	DirectoryURL string
	// TLSCA is the PEM of the CA of Pebble's own TLS certificate, for
	// clients of DirectoryURL.
	TLSCA []byte
	// Root is the PEM of the root Pebble's default chains lead to, and
	// AlternateRoots those of its alternate chains.
	Root           []byte
	AlternateRoots [][]byte
	// LogPath is Pebble's log.
	LogPath string
}

// Start runs pebble-challtestsrv (DNS only) and Pebble until t ends. Pebble
// validates at once, without its usual random delay, and never reuses an
// authorization, so every order is validated afresh.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	for _, bin := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (Debian package pebble; hack/deps.sh installs it): %v", bin, err)
		}
	}
	if opts.HTTPPort == 0 {
		t.Fatal("pebble: HTTPPort is required")
	}
	if opts.IP == "" {
		opts.IP = "127.0.0.1"
	}
	if opts.ResolveTo == "" {
		opts.ResolveTo = opts.IP
	}
	ports := make([]int, 5)
	for i := range ports {
		if opts.BasePort != 0 {
			ports[i] = opts.BasePort + i
		} else {
			ports[i] = FreePort(t, opts.IP)
		}
	}
	directoryPort, managementPort, dnsPort, dnsManagementPort, tlsPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	addr := func(port int) string { return net.JoinHostPort(opts.IP, strconv.Itoa(port)) }
	dir := t.TempDir()
	tlsCA, certFile, keyFile := writeTLS(t, dir, net.ParseIP(opts.IP))

	dnsAddr := opts.DNSServer
	if dnsAddr == "" {
		dnsAddr = addr(dnsPort)
		testproc.Start(t, opts.Command, filepath.Join(dir, "challtestsrv.log"), nil, "pebble-challtestsrv",
			"-dns01", dnsAddr,
			"-defaultIPv4", opts.ResolveTo,
			// No AAAA answers: the solvers listen on IPv4 only.
			"-defaultIPv6", "",
			"-management", addr(dnsManagementPort),
			"-http01", "", "-https01", "", "-tlsalpn01", "",
		)
	}

	config := map[string]any{"pebble": map[string]any{
		"listenAddress":                  addr(directoryPort),
		"managementListenAddress":        addr(managementPort),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       opts.HTTPPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": len(opts.EABKeys) > 0,
		"externalAccountMACKeys":         opts.EABKeys,
		// As public ACME CAs do (Pebble's own default is five years).
		"certificateValidityPeriod": int((90 * 24 * time.Hour).Seconds()),
	}}
	configFile := filepath.Join(dir, "pebble.json")
	data, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{DirectoryURL: "https://" + addr(directoryPort) + "/dir", TLSCA: tlsCA, LogPath: filepath.Join(dir, "pebble.log")}
	testproc.Start(t, opts.Command, s.LogPath, []string{
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_AUTHZREUSE=0",
		"PEBBLE_ALTERNATE_ROOTS=" + strconv.Itoa(opts.AlternateRoots),
	}, "pebble", "-config", configFile, "-dnsserver", dnsAddr)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(tlsCA)
	httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, startTimeout, true, func(ctx context.Context) (bool, error) {
		if _, err := get(ctx, httpClient, s.DirectoryURL); err != nil {
			return false, nil
		}
		root, err := get(ctx, httpClient, "https://"+addr(managementPort)+"/roots/0")
		if err != nil {
			return false, nil
		}
		s.Root, s.AlternateRoots = root, nil
		for i := 1; i <= opts.AlternateRoots; i++ {
			alt, err := get(ctx, httpClient, "https://"+addr(managementPort)+"/roots/"+strconv.Itoa(i))
			if err != nil {
				return false, nil
			}
			s.AlternateRoots = append(s.AlternateRoots, alt)
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for Pebble to serve %s: %v\n%s", s.DirectoryURL, err, testproc.Tail(s.Log(), 40))
	}
	return s
}

// Log returns what Pebble has logged so far.
func (s *Server) Log() string { return testproc.ReadLog(s.LogPath) }

// FreePort returns a TCP port nothing listens on at ip, in this network
// namespace.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("finding a free port on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// writeTLS writes a certificate for ip and its key into dir and returns the
// PEM of the CA that issued it: Debian ships none for Pebble.
func writeTLS(t testing.TB, dir string, ip net.IP) (caPEM []byte, certFile, keyFile string) {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebble test TLS CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "pebble"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{ip},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

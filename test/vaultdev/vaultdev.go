// Package vaultdev runs a HashiCorp Vault dev server, built from the module
// proxy by hack/vault.sh, for the tests and benchmarks that prove the Vault
// issuer against a real Vault: on loopback, over TLS, with an audit log
// that shows what its clients did, and optionally a second listener that
// requires client certificates. It knows nothing of certmint.
package vaultdev

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/certmint/certmint/test/stack"
)

// BinEnv names the environment variable that points at a directory with a
// prebuilt vault binary, skipping hack/vault.sh.
const BinEnv = "CERTMINT_VAULT_BIN"

// startTimeout bounds the wait for the dev server to answer: it starts in
// seconds, but the machine may be busy.
const startTimeout = 2 * time.Minute

// RootToken is the dev server's root token: it lives on loopback only, for
// the length of a test.
const RootToken = "certmint-test-root"

var binary struct {
	sync.Mutex
	path string
}

// Binary returns the path of the pinned vault binary: in $CERTMINT_VAULT_BIN
// when that is set, else where hack/vault.sh builds it (or finds it
// cached). A first build takes many minutes; callers share one.
func Binary(ctx context.Context) (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		bin := filepath.Join(dir, "vault")
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s=%s holds no vault: %w", BinEnv, dir, err)
		}
		return bin, nil
	}
	binary.Lock()
	defer binary.Unlock()
	if binary.path != "" {
		return binary.path, nil
	}
	root, err := stack.RepoRoot()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "vault.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building Vault with hack/vault.sh: %w\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	binary.path = filepath.Join(strings.TrimSpace(lines[len(lines)-1]), "vault")
	return binary.path, nil
}

// Options configures Start.
type Options struct {
	// Dir holds the server's TLS files, log and audit log. Required.
	Dir string
	// MutualTLS adds a listener that requires client certificates, at
	// Server.MutualTLSAddr.
	MutualTLS bool
}

// Server is a running dev server. Its storage is in memory: it starts
// initialized and unsealed, and forgets everything when it stops.
type Server struct {
	// Addr is its URL, https on a loopback port.
	Addr string
	// CACert is the PEM of the CA of its TLS certificates.
	CACert []byte
	// Client is a client with the root token.
	Client *vaultapi.Client
	// MutualTLSAddr is the URL of the listener that requires client
	// certificates, MutualTLSCACert the PEM of the CA of its certificate,
	// and ClientCert and ClientKey the PEM of a client certificate it
	// accepts; empty without Options.MutualTLS.
	MutualTLSAddr         string
	MutualTLSCACert       []byte
	ClientCert, ClientKey []byte

	unsealKey string
	auditPath string
	proc      *stack.Process
}

// unsealKeyLine is how the dev server prints its unseal key.
var unsealKeyLine = regexp.MustCompile(`(?m)^Unseal Key: (\S+)$`)

// Start runs a dev server until Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("vaultdev: Dir is required")
	}
	bin, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	addr, err := stack.FreeAddr()
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(opts.Dir, "tls")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{Addr: "https://" + addr, auditPath: filepath.Join(opts.Dir, "audit.log")}
	args := []string{"server", "-dev",
		"-dev-listen-address=" + addr,
		"-dev-root-token-id=" + RootToken,
		"-dev-tls", "-dev-tls-cert-dir=" + certDir,
		// Not into the home directory.
		"-dev-no-store-token",
	}
	if opts.MutualTLS {
		config, err := s.mutualTLSConfig(opts.Dir)
		if err != nil {
			return nil, err
		}
		args = append(args, "-config="+config)
	}
	logPath := filepath.Join(opts.Dir, "vault.log")
	if s.proc, err = stack.StartBinary("vault", bin, logPath, args...); err != nil {
		return nil, err
	}
	if err := s.waitUp(ctx, certDir, logPath); err != nil {
		s.proc.Kill()
		return nil, err
	}
	// Every request and answer, so tests can count logins; accessors in
	// the clear, to find a token to revoke.
	err = s.Client.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &vaultapi.EnableAuditOptions{
		Type:    "file",
		Options: map[string]string{"file_path": s.auditPath, "hmac_accessor": "false"},
	})
	if err != nil {
		s.proc.Kill()
		return nil, fmt.Errorf("enabling the audit log: %w", err)
	}
	return s, nil
}

// waitUp waits for the CA file and an unsealed answer from sys/health,
// and reads the unseal key from the log.
func (s *Server) waitUp(ctx context.Context, certDir, logPath string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		if err := s.connect(ctx, certDir, logPath); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return fmt.Errorf("vault dev server not up after %s: %w; its log ends:\n%s", startTimeout, err, s.proc.LogTail(30))
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Server) connect(ctx context.Context, certDir, logPath string) error {
	ca, err := os.ReadFile(filepath.Join(certDir, "vault-ca.pem"))
	if err != nil {
		return err
	}
	c, err := NewClient(s.Addr, ca)
	if err != nil {
		return err
	}
	health, err := c.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if !health.Initialized || health.Sealed {
		return errors.New("not unsealed yet")
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		return err
	}
	m := unsealKeyLine.FindSubmatch(log)
	if m == nil {
		return errors.New("no unseal key in the log yet")
	}
	c.SetToken(RootToken)
	s.CACert, s.Client, s.unsealKey = ca, c, string(m[1])
	return nil
}

// NewClient returns a client of the Vault at addr that trusts caPEM and
// carries no token.
func NewClient(addr string, caPEM []byte) (*vaultapi.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate")
	}
	c, err := vaultapi.NewClient(&vaultapi.Config{
		Address:    addr,
		HttpClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
		Timeout:    time.Minute,
	})
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	return c, nil
}

// Stop ends the server.
func (s *Server) Stop() { s.proc.Stop() }

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string { return s.proc.LogTail(n) }

// Seal seals Vault, as an operator or an HA failure would.
func (s *Server) Seal(ctx context.Context) error {
	return s.Client.Sys().SealWithContext(ctx)
}

// Unseal unseals Vault with the key the dev server printed.
func (s *Server) Unseal(ctx context.Context) error {
	st, err := s.Client.Sys().UnsealWithContext(ctx, s.unsealKey)
	if err != nil {
		return err
	}
	if st.Sealed {
		return errors.New("still sealed after the unseal key")
	}
	return nil
}

// AuditEntry is one answer in the audit log.
type AuditEntry struct {
	// Path and Operation are the request's ("auth/approle/login",
	// "update").
	Path, Operation string
	// Error is what Vault answered instead, if it failed (HMAC-ed when a
	// secrets engine refused).
	Error string
	// Accessor is the accessor of the token the request carried, or of
	// the token a login returned.
	Accessor string
}

// Answers returns the answers in the audit log, oldest first.
func (s *Server) Answers() ([]AuditEntry, error) {
	f, err := os.Open(s.auditPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []AuditEntry
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		var line struct {
			Type  string `json:"type"`
			Error string `json:"error"`
			Auth  struct {
				Accessor string `json:"accessor"`
			} `json:"auth"`
			Request struct {
				Path      string `json:"path"`
				Operation string `json:"operation"`
			} `json:"request"`
			Response struct {
				Auth struct {
					Accessor string `json:"accessor"`
				} `json:"auth"`
				// A secrets engine's refusal (a 4xx) is an answer
				// whose data holds the error.
				Data struct {
					Error string `json:"error"`
				} `json:"data"`
			} `json:"response"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("parsing the audit log: %w", err)
		}
		if line.Type != "response" {
			continue
		}
		e := AuditEntry{Path: line.Request.Path, Operation: line.Request.Operation, Error: line.Error, Accessor: line.Auth.Accessor}
		if e.Error == "" {
			e.Error = line.Response.Data.Error
		}
		if a := line.Response.Auth.Accessor; a != "" {
			e.Accessor = a
		}
		out = append(out, e)
	}
	return out, scanner.Err()
}

// Count counts the answers to requests for path that did not fail.
func (s *Server) Count(path string) (int, error) {
	answers, err := s.Answers()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range answers {
		if a.Path == path && a.Error == "" {
			n++
		}
	}
	return n, nil
}

// mutualTLSConfig writes the files of a listener that requires client
// certificates, on a free loopback port, and returns the path of its
// configuration file. One CA signs its server certificate and the client
// certificate it accepts.
func (s *Server) mutualTLSConfig(dir string) (string, error) {
	addr, err := stack.FreeAddr()
	if err != nil {
		return "", err
	}
	ca, caKey, err := newCert(nil, nil, func(c *x509.Certificate) {
		c.Subject.CommonName = "vault mutual TLS test CA"
		c.IsCA, c.BasicConstraintsValid, c.KeyUsage = true, true, x509.KeyUsageCertSign
	})
	if err != nil {
		return "", err
	}
	server, serverKey, err := newCert(ca, caKey, func(c *x509.Certificate) {
		c.Subject.CommonName = "vault"
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	if err != nil {
		return "", err
	}
	client, clientKey, err := newCert(ca, caKey, func(c *x509.Certificate) {
		c.Subject.CommonName = "certmint-controller"
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
	if err != nil {
		return "", err
	}
	serverKeyPEM, err := encodeKey(serverKey)
	if err != nil {
		return "", err
	}
	if s.ClientKey, err = encodeKey(clientKey); err != nil {
		return "", err
	}
	s.MutualTLSCACert, s.ClientCert = encodeCert(ca), encodeCert(client)
	paths := map[string]string{}
	for name, data := range map[string][]byte{"mtls-ca.pem": s.MutualTLSCACert, "mtls-cert.pem": encodeCert(server), "mtls-key.pem": serverKeyPEM} {
		paths[name] = filepath.Join(dir, name)
		if err := os.WriteFile(paths[name], data, 0o600); err != nil {
			return "", err
		}
	}
	config := fmt.Sprintf(`listener "tcp" {
  address = %q
  tls_cert_file = %q
  tls_key_file = %q
  tls_client_ca_file = %q
  tls_require_and_verify_client_cert = true
}
`, addr, paths["mtls-cert.pem"], paths["mtls-key.pem"], paths["mtls-ca.pem"])
	path := filepath.Join(dir, "mtls.hcl")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return "", err
	}
	s.MutualTLSAddr = "https://" + addr
	return path, nil
}

// newCert makes an ECDSA certificate valid for a day, signed by parent
// (self-signed when nil), shaped by tweak.
func newCert(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tweak func(*x509.Certificate)) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	tweak(tmpl)
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

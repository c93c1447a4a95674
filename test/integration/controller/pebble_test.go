package controller_test

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
	"errors"
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
)

// pebble is a running Pebble ACME server with pebble-challtestsrv as its
// DNS server, which resolves every name to 127.0.0.1.
type pebble struct {
	// directoryURL is the ACME directory.
	directoryURL string
	// tlsCA is the PEM of the CA that issued Pebble's own TLS certificate.
	tlsCA []byte
	// root is the PEM of the root Pebble's certificate chains lead to.
	root    []byte
	logPath string
}

// startPebble runs pebble-challtestsrv (DNS only) and Pebble, which
// validates HTTP-01 challenges on httpPort of 127.0.0.1. Both stop when t
// ends.
func startPebble(t *testing.T, httpPort int) *pebble {
	t.Helper()
	for _, bin := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (Debian package pebble; hack/deps.sh installs it): %v", bin, err)
		}
	}
	dir := t.TempDir()
	tlsCA, certFile, keyFile := pebbleTLS(t, dir)

	dnsAddr := freeAddr(t)
	startProcess(t, filepath.Join(dir, "challtestsrv.log"), nil, "pebble-challtestsrv",
		"-dns01", dnsAddr,
		"-defaultIPv4", "127.0.0.1",
		// No AAAA answers: the solver listens on IPv4 only.
		"-defaultIPv6", "",
		"-management", freeAddr(t),
		"-http01", "", "-https01", "", "-tlsalpn01", "",
	)

	listenAddr, managementAddr := freeAddr(t), freeAddr(t)
	_, tlsPort, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	config := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listenAddr,
		"managementListenAddress":        managementAddr,
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       httpPort,
		"tlsPort":                        mustAtoi(t, tlsPort),
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}
	configFile := filepath.Join(dir, "pebble.json")
	data, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pebble{directoryURL: "https://" + listenAddr + "/dir", tlsCA: tlsCA, logPath: filepath.Join(dir, "pebble.log")}
	startProcess(t, p.logPath, []string{
		// Validate at once rather than after a random sleep.
		"PEBBLE_VA_NOSLEEP=1",
		// Every order validates afresh: no reuse of earlier authorizations.
		"PEBBLE_AUTHZREUSE=0",
	}, "pebble", "-config", configFile, "-dnsserver", dnsAddr)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(tlsCA)
	httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if _, err := get(ctx, httpClient, p.directoryURL); err != nil {
			return false, nil
		}
		root, err := get(ctx, httpClient, "https://"+managementAddr+"/roots/0")
		if err != nil {
			return false, nil
		}
		p.root = root
		return true, nil
	})
	if err != nil {
		out, _ := os.ReadFile(p.logPath)
		t.Fatalf("pebble not serving: %v\n%s", err, tail(out, 40))
	}
	return p
}

// log returns what Pebble has logged so far.
func (p *pebble) log(t *testing.T) string {
	t.Helper()
	out, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
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

// pebbleTLS writes a certificate for 127.0.0.1 and its key into dir and
// returns the PEM of the CA that issued it: Debian ships none for Pebble.
func pebbleTLS(t *testing.T, dir string) (caPEM []byte, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "pebble"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
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

// startProcess runs name with args, logging to logPath, until t ends; its
// log is shown when t fails.
func startProcess(t *testing.T, logPath string, env []string, name string, args ...string) {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-exited:
			t.Errorf("%s exited early: %v", name, err)
		default:
			_ = cmd.Process.Kill()
			t.Logf("%s stopped: %v", name, <-exited)
		}
		logFile.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, tail(out, 40))
		}
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(errors.New("not a port: " + s))
	}
	return n
}

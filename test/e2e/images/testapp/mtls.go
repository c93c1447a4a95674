package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The file names of a certmint volume with default attributes.
const (
	certFile = "tls.crt"
	keyFile  = "tls.key"
	caFile   = "ca.crt"
)

// certDir reads a certmint volume. Every handshake reads the files again, so
// a renewed certificate is used without a restart. Within one read all files
// come from the same generation: the volume's ..data symlink is resolved
// once, as docs/attributes.md advises.
type certDir string

func (d certDir) load() (*tls.Certificate, *x509.CertPool, error) {
	dir := string(d)
	if gen, err := filepath.EvalSymlinks(filepath.Join(dir, "..data")); err == nil {
		dir = gen
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("loading key pair: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("no certificates in %s", caFile)
	}
	return &pair, roots, nil
}

// verifyPeer checks the peer's chain against the CA file read in the same
// handshake and requires the peer's certificate to carry the URI SAN want.
// It returns the peer's leaf.
func (d certDir) verifyPeer(cs tls.ConnectionState, usage x509.ExtKeyUsage, want string) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("peer sent no certificate")
	}
	_, roots, err := d.load()
	if err != nil {
		return nil, err
	}
	leaf := cs.PeerCertificates[0]
	intermediates := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, fmt.Errorf("verifying peer certificate: %w", err)
	}
	uris := uriSANs(leaf)
	if !slices.Contains(uris, want) {
		return nil, fmt.Errorf("peer is %v, want %s", uris, want)
	}
	return leaf, nil
}

func uriSANs(c *x509.Certificate) []string {
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	return uris
}

// mtlsServe accepts mutual TLS connections: it presents the certificate from
// its volume, requires a client certificate with the URI SAN --peer-uri, and
// answers each client with the identity it verified. Tests read its log.
func mtlsServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mtls-serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8443", "address to listen on")
	dir := fs.String("cert-dir", "/tls", "certmint volume with tls.crt, tls.key and ca.crt")
	peerURI := fs.String("peer-uri", "", "URI SAN (SPIFFE ID) a client must present (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *peerURI == "" {
		return errors.New("--peer-uri is required")
	}
	certs := certDir(*dir)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			pair, _, err := certs.load()
			return pair, err
		},
		// The chain is verified in VerifyConnection against the CA file of
		// this handshake, so that a renewed CA is used at once.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := certs.verifyPeer(cs, x509.ExtKeyUsageClientAuth, *peerURI)
			return err
		},
	}
	l, err := tls.Listen("tcp", *listen, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("serving mtls on %s\n", l.Addr())
	return acceptUntilDone(ctx, l, func(conn net.Conn) { answer(conn.(*tls.Conn)) })
}

func answer(conn *tls.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		// A TCP readiness probe connects and closes without a handshake;
		// that is no client to report.
		if !errors.Is(err, io.EOF) {
			fmt.Printf("handshake with %s failed: %v\n", conn.RemoteAddr(), err)
		}
		return
	}
	peer := conn.ConnectionState().PeerCertificates[0]
	id := strings.Join(uriSANs(peer), ",")
	fmt.Printf("verified client %s (serial %x) from %s\n", id, peer.SerialNumber, conn.RemoteAddr())
	if _, err := fmt.Fprintf(conn, "verified client %s\n", id); err != nil {
		fmt.Printf("answering %s: %v\n", conn.RemoteAddr(), err)
	}
}

// mtlsCall connects to an mtls-serve server with the certificate from its
// volume, requires the server's certificate to carry --server-name as a DNS
// name (or, for an address, as an IP SAN) and the URI SAN --peer-uri, and
// prints the identity it verified and the server's answer, which names the
// identity the server verified.
func mtlsCall(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mtls-call", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port to dial (required)")
	dir := fs.String("cert-dir", "/tls", "certmint volume with tls.crt, tls.key and ca.crt")
	serverName := fs.String("server-name", "", "DNS name or IP address the server's certificate must hold (required)")
	peerURI := fs.String("peer-uri", "", "URI SAN (SPIFFE ID) the server must present (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a call after this long")
	every := fs.Duration("every", 0, "call again at this interval until terminated, reporting failures instead of exiting; 0 calls once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *serverName == "" || *peerURI == "" {
		return errors.New("--addr, --server-name and --peer-uri are required")
	}
	c := caller{certs: certDir(*dir), addr: *addr, serverName: *serverName, peerURI: *peerURI, timeout: *timeout}
	if *every == 0 {
		return c.call(ctx)
	}
	for {
		if err := c.call(ctx); err != nil {
			fmt.Printf("call failed: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

type caller struct {
	certs                     certDir
	addr, serverName, peerURI string
	timeout                   time.Duration
}

func (c caller) call(ctx context.Context) error {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: c.serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, _, err := c.certs.load()
			return pair, err
		},
		// Verified in VerifyConnection against this handshake's CA file;
		// the host name check is done there too.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := c.certs.verifyPeer(cs, x509.ExtKeyUsageServerAuth, c.peerURI)
			if err != nil {
				return err
			}
			return leaf.VerifyHostname(c.serverName)
		},
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return err
		}
	}
	peer := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading from %s: %w", c.addr, err)
	}
	fmt.Printf("verified server %s %s (serial %x)\n", c.serverName, strings.Join(uriSANs(peer), ","), peer.SerialNumber)
	fmt.Printf("server: %s\n", strings.TrimSpace(reply))
	return nil
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// serveHTTP answers every HTTP request with a message line, as the backend
// of an Ingress. It logs each request, so tests can see what reached it.
func serveHTTP(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve-http", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	message := fs.String("message", "hello", "line to answer every request with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("serving http on %s\n", l.Addr())
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Printf("%s %s%s from %s\n", r.Method, r.Host, r.URL.Path, r.RemoteAddr)
			if _, err := fmt.Fprintln(w, *message); err != nil {
				fmt.Printf("answering %s: %v\n", r.RemoteAddr, err)
			}
		}),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// httpsGet sends one GET over HTTPS to --addr for the host --server-name
// (its SNI and Host header), verifies the server's chain against --ca-file
// and its certificate against that host name, and requires a 200 answer,
// with the body --expect-body if that is set. It prints the server
// certificate's serial and the body:
//
//	verified server app.example.test (serial 5c1f...)
//	body: hello
func httpsGet(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("https-get", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port to dial (required)")
	serverName := fs.String("server-name", "", "host name to ask for and verify (required)")
	caPath := fs.String("ca-file", "", "PEM file of the CA certificates to trust (required)")
	path := fs.String("path", "/", "path to get")
	expectBody := fs.String("expect-body", "", "the body, without surrounding space, the server must answer; any body if empty")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	every := fs.Duration("every", 0, "get again at this interval until terminated, reporting failures instead of exiting; 0 gets once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *serverName == "" || *caPath == "" {
		return errors.New("--addr, --server-name and --ca-file are required")
	}
	caPEM, err := os.ReadFile(*caPath)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificates in %s", *caPath)
	}
	var d net.Dialer
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			// Whatever the URL's host, connect to --addr: there is no DNS.
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, *addr)
			},
			// The standard verification: the chain to roots and the
			// certificate's names against ServerName.
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: *serverName, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
	}
	url := "https://" + *serverName + *path
	get := func() error { return getOnce(ctx, client, url, *serverName, *expectBody) }
	if *every == 0 {
		return get()
	}
	for {
		if err := get(); err != nil {
			fmt.Printf("call failed: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

// getOnce GETs url with client and prints what it verified.
func getOnce(ctx context.Context, client *http.Client, url, serverName, expectBody string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("reading the answer of %s: %w", url, err)
	}
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, text)
	}
	leaf := resp.TLS.PeerCertificates[0]
	fmt.Printf("verified server %s (serial %x)\n", serverName, leaf.SerialNumber)
	fmt.Printf("body: %s\n", text)
	if expectBody != "" && text != expectBody {
		return fmt.Errorf("GET %s answered %q, want %q", url, text, expectBody)
	}
	return nil
}

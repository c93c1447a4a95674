// Command testapp is the end-to-end tests' workload: one static binary with a
// mode per job, so one image serves every test pod.
//
//	testapp serve-tcp --listen :8080 --message "hello from $(NODE_NAME)"
//	testapp connect --addr 10.244.2.5:8080 --timeout 10s
//	testapp sleep
//	testapp whoami
//	testapp mtls-serve --cert-dir /tls --peer-uri spiffe://cluster.local/ns/a/sa/client
//	testapp mtls-call --addr 10.244.2.5:8443 --cert-dir /tls --server-name server.a --peer-uri spiffe://cluster.local/ns/a/sa/server
//	testapp files --dir /tls
//	testapp cat --file /tls/keystore.p12
//	testapp serve-http --listen :8080 --message "hello from the backend"
//	testapp https-get --addr 10.244.2.5:8443 --server-name app.example.test --ca-file /ca/ca.crt --expect-body "hello from the backend"
//
// Each mode parses its own flags; new modes (e.g. TLS serve and call from
// mounted certificate files) are one more entry in modes.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

type mode struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var modes = map[string]mode{
	"serve-tcp":  {"accept TCP connections and answer each with a message", serveTCP},
	"connect":    {"dial a TCP address and print what it answers", connect},
	"sleep":      {"block until terminated", sleep},
	"whoami":     {"ask the API server, as an in-cluster client, who the pod's token is", whoami},
	"mtls-serve": {"serve mutual TLS with a certmint volume's files, verifying clients", mtlsServe},
	"mtls-call":  {"call an mtls-serve server with a certmint volume's files, verifying it", mtlsCall},
	"files":      {"list a directory's files with mode, owner and group", files},
	"cat":        {"copy a file to standard output", cat},
	"serve-http": {"answer every HTTP request with a message", serveHTTP},
	"https-get":  {"GET over HTTPS, verifying the server against a CA file and a host name", httpsGet},
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	m, ok := modes[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "testapp: unknown mode %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := runUntilSignalled(m, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "testapp %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// runUntilSignalled runs m until it ends, SIGTERM or SIGINT.
func runUntilSignalled(m mode, args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return m.run(ctx, args)
}

func usage() {
	names := make([]string, 0, len(modes))
	for n := range modes {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "usage: testapp MODE [flags]; modes:")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, modes[n].summary)
	}
}

func serveTCP(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve-tcp", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	message := fs.String("message", "hello", "line to answer every connection with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// Tests read this line with `kubectl logs` to know the server is up.
	fmt.Printf("serving tcp on %s\n", l.Addr())
	return acceptUntilDone(ctx, l, func(conn net.Conn) {
		defer conn.Close()
		fmt.Printf("connection from %s\n", conn.RemoteAddr())
		if _, err := fmt.Fprintln(conn, *message); err != nil {
			fmt.Printf("answering %s: %v\n", conn.RemoteAddr(), err)
		}
	})
}

// acceptUntilDone hands every connection of l to handle, in its own
// goroutine, until ctx ends; that is a clean stop, not an error.
func acceptUntilDone(ctx context.Context, l net.Listener, handle func(net.Conn)) error {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go handle(conn)
	}
}

func connect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port to dial (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("--addr is required")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", *addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return err
		}
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		return fmt.Errorf("reading from %s: %w", *addr, err)
	}
	fmt.Println(strings.TrimSpace(string(reply)))
	return nil
}

func sleep(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sleep", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Println("sleeping until terminated")
	<-ctx.Done()
	return nil
}

// serviceAccountDir is where the kubelet projects the pod's token and CA.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// whoami does what an in-cluster client does (the Service address from the
// environment, the projected token and CA) and prints the identity the API
// server stamps on the token: "user=NAME node=NODE".
func whoami(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("whoami", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return errors.New("KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is not set")
	}
	token, err := os.ReadFile(serviceAccountDir + "/token")
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("no certificates in ca.crt")
	}
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	url := "https://" + net.JoinHostPort(host, port) + "/apis/authentication.k8s.io/v1/selfsubjectreviews"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string              `json:"username"`
				Extra    map[string][]string `json:"extra"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
		return fmt.Errorf("decoding SelfSubjectReview: %w", err)
	}
	u := review.Status.UserInfo
	fmt.Printf("user=%s node=%s\n", u.Username, strings.Join(u.Extra["authentication.kubernetes.io/node-name"], ","))
	return nil
}

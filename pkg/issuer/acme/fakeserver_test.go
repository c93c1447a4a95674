package acme

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is an ACME server for tests: it trusts every request without
// checking signatures, turns an authorization valid as soon as its
// challenge is accepted, and issues from a root of its own.
type fakeServer struct {
	t    *testing.T
	srv  *httptest.Server
	root *x509.Certificate
	key  *ecdsa.PrivateKey

	mu            sync.Mutex
	nonce         int
	registrations int
	orders        []*fakeOrder
}

type fakeOrder struct {
	names []string
	valid []bool
	cert  []byte
}

// rootPEM is what a trust bundle for the server's chains holds.
func (f *fakeServer) rootPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.root.Raw}))
}

func (f *fakeServer) directoryURL() string { return f.srv.URL + "/dir" }

// accepted is how many challenges the server was told to validate.
func (f *fakeServer) accepted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, o := range f.orders {
		for _, v := range o.valid {
			if v {
				n++
			}
		}
	}
	return n
}

// orderCount is how many orders were created.
func (f *fakeServer) orderCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.orders)
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake ACME root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, root: root, key: key}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nonce++
	w.Header().Set("Replay-Nonce", "nonce-"+strconv.Itoa(f.nonce))
	base := f.srv.URL
	if r.URL.Path == "/dir" {
		f.reply(w, http.StatusOK, map[string]string{"newNonce": base + "/nonce", "newAccount": base + "/account", "newOrder": base + "/order"})
		return
	}
	if r.URL.Path == "/nonce" {
		return
	}
	var jws struct{ Payload string }
	if err := json.NewDecoder(r.Body).Decode(&jws); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	payload, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	index := func(i int) int {
		n, _ := strconv.Atoi(parts[i])
		return n
	}
	switch {
	case parts[0] == "account":
		f.registrations++
		w.Header().Set("Location", base+"/account/1")
		f.reply(w, http.StatusCreated, map[string]string{"status": "valid"})
	case parts[0] == "order" && len(parts) == 1:
		var req struct{ Identifiers []struct{ Value string } }
		if err := json.Unmarshal(payload, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o := &fakeOrder{valid: make([]bool, len(req.Identifiers))}
		for _, id := range req.Identifiers {
			o.names = append(o.names, id.Value)
		}
		f.orders = append(f.orders, o)
		f.replyOrder(w, http.StatusCreated, len(f.orders)-1)
	case parts[0] == "order":
		f.replyOrder(w, http.StatusOK, index(1))
	case parts[0] == "authz":
		f.replyAuthz(w, index(1), index(2))
	case parts[0] == "challenge":
		f.orders[index(1)].valid[index(2)] = true
		f.reply(w, http.StatusOK, f.challenge(index(1), index(2)))
	case parts[0] == "finalize":
		var req struct{ CSR string }
		if err := json.Unmarshal(payload, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := f.issue(index(1), req.CSR); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.replyOrder(w, http.StatusOK, index(1))
	case parts[0] == "cert":
		w.Header().Set("Content-Type", "application/pem-certificate-chain")
		_, _ = w.Write(f.orders[index(1)].cert)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeServer) reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		f.t.Error(err)
	}
}

func (f *fakeServer) replyOrder(w http.ResponseWriter, code, n int) {
	o := f.orders[n]
	base := fmt.Sprintf("%s/%%s/%d", f.srv.URL, n)
	status := "ready"
	for _, v := range o.valid {
		if !v {
			status = "pending"
		}
	}
	body := map[string]any{"finalize": fmt.Sprintf(base, "finalize")}
	if o.cert != nil {
		status = "valid"
		body["certificate"] = fmt.Sprintf(base, "cert")
	}
	body["status"] = status
	var authzs []string
	for i := range o.names {
		authzs = append(authzs, fmt.Sprintf(base, "authz")+"/"+strconv.Itoa(i))
	}
	body["authorizations"] = authzs
	w.Header().Set("Location", fmt.Sprintf(base, "order"))
	f.reply(w, code, body)
}

func (f *fakeServer) challenge(n, i int) map[string]string {
	status := "pending"
	if f.orders[n].valid[i] {
		status = "valid"
	}
	return map[string]string{
		"type":   "http-01",
		"url":    fmt.Sprintf("%s/challenge/%d/%d", f.srv.URL, n, i),
		"token":  fakeToken(n, i),
		"status": status,
	}
}

// fakeToken is the HTTP-01 token of authorization i of order n.
func fakeToken(n, i int) string { return fmt.Sprintf("token-%d-%d", n, i) }

func (f *fakeServer) replyAuthz(w http.ResponseWriter, n, i int) {
	chal := f.challenge(n, i)
	f.reply(w, http.StatusOK, map[string]any{
		"status":     chal["status"],
		"identifier": map[string]string{"type": "dns", "value": f.orders[n].names[i]},
		"challenges": []any{chal},
	})
}

// issue signs the finalized request of order n, valid for a day.
func (f *fakeServer) issue(n int, csrB64 string) error {
	der, err := base64.RawURLEncoding.DecodeString(csrB64)
	if err != nil {
		return err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(n) + 2),
		DNSNames:     csr.DNSNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaf, err := x509.CreateCertificate(rand.Reader, tmpl, f.root, csr.PublicKey, f.key)
	if err != nil {
		return err
	}
	f.orders[n].cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf})
	return nil
}

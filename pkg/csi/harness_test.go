package csi_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/mount-utils"

	"github.com/certmint/certmint/pkg/csi"
	"github.com/certmint/certmint/pkg/csr"
	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
	"github.com/certmint/certmint/pkg/trust"
)

// harness is the real driver (gRPC server, manager, storage, CSR client)
// on a socket in a temporary directory. Only the API server is swapped: a
// fake clientset with the test signer acting on it. As root the volumes are
// real tmpfs and bind mounts; otherwise mounts are recorded, not made.
type harness struct {
	socket   string
	dataRoot string
	signer   *csrtest.Signer
	client   *fake.Clientset
	logs     *syncBuffer
}

// signerTrust stands in for the issuers' published trust bundles: the one
// issuer there is, Issuer shop/ca, trusts the test signer's CA.
type signerTrust struct{ ca *x509.Certificate }

func (s signerTrust) CABundle(_ context.Context, issuer request.IssuerRef) ([]*x509.Certificate, error) {
	if issuer != (request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}) {
		return nil, fmt.Errorf("%w for %s: the issuer does not exist", trust.ErrNoTrustBundle, issuer)
	}
	return []*x509.Certificate{s.ca}, nil
}

var _ manager.TrustSource = signerTrust{}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) write(prefix, args string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(prefix + " " + args + "\n")
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newHarness(t testing.TB, decide func(*certificatesv1.CertificateSigningRequest) csrtest.Decision) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	h := &harness{socket: filepath.Join(dir, "csi.sock"), dataRoot: filepath.Join(dir, "data"), client: fake.NewClientset(), logs: &syncBuffer{}}
	log := funcr.New(h.logs.write, funcr.Options{Verbosity: 10})

	signer, err := csrtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	signer.Decide = decide
	if err := signer.Start(ctx, h.client); err != nil {
		t.Fatal(err)
	}
	h.signer = signer

	requester, err := csr.New(csr.Options{Client: csrtest.CSRs(h.client), NodeName: "node-1", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	go requester.Run(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), requester.HasSynced) {
		t.Fatal("CSR watch not established")
	}

	var mounter mount.Interface = mount.NewFakeMounter(nil)
	if os.Geteuid() == 0 {
		mounter = storage.NewMounter()
	}
	store, err := storage.New(storage.Options{DataRoot: h.dataRoot, StateDir: filepath.Join(dir, "state"), Mounter: mounter})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := manager.New(manager.Options{Storage: store, Requester: requester, Trust: signerTrust{signer.CA}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	driver, err := csi.NewDriver(csi.Options{NodeID: "node-1", Publisher: mgr, Version: "test", Ready: requester.HasSynced})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := csi.Listen("unix://"+h.socket, driver, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(srv.Stop)
	return h
}

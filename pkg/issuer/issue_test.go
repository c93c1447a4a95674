package issuer

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/pki/pkitest"
)

// scriptedBackend signs with a fixed answer and counts its calls.
type scriptedBackend struct {
	chain []byte
	err   error
	calls int
}

func (b *scriptedBackend) Ready(context.Context, v1alpha1.GenericIssuer) (Status, error) {
	return Status{}, nil
}

func (b *scriptedBackend) Sign(context.Context, v1alpha1.GenericIssuer, *Request) ([]byte, error) {
	b.calls++
	return b.chain, b.err
}

// leafOf is a leaf certificate signed by ca.
func leafOf(t *testing.T, ca *x509.Certificate, caKey crypto.Signer) []byte {
	return pki.EncodeCertificates(pkitest.Leaf(t, "leaf", ca, caKey))
}

func TestIssue(t *testing.T) {
	published, publishedKey := pkitest.CA(t, "CA")
	other, otherKey := pkitest.CA(t, "CA")
	readyIssuer := func(pol *v1alpha1.Policy) *v1alpha1.ClusterIssuer {
		return &v1alpha1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: "ca", Generation: 2},
			Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: "ca"}, Policy: pol},
			Status: v1alpha1.IssuerStatus{
				Conditions:  []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 2}},
				TrustBundle: string(pki.EncodeCertificates(published)),
			},
		}
	}
	staleIssuer := readyIssuer(nil)
	staleIssuer.Generation = 3
	noBackend := readyIssuer(nil)
	noBackend.Spec = v1alpha1.IssuerSpec{SelfSigned: &v1alpha1.SelfSignedIssuer{}}
	for _, c := range []struct {
		name        string
		iss         *v1alpha1.ClusterIssuer
		req         Request
		backend     scriptedBackend
		want        Outcome
		wantReason  string
		wantRetry   time.Duration
		wantSigning bool
		needsCSR    bool
	}{
		{name: "a Ready issuer's chain that its bundle trusts is issued", iss: readyIssuer(nil),
			backend: scriptedBackend{chain: leafOf(t, published, publishedKey)}, want: Issued, wantSigning: true},
		{name: "an issuer whose Ready status is for an older spec is waited for", iss: staleIssuer,
			want: WaitForIssuer, wantReason: ReasonIssuerNotReady, wantRetry: IssuerWait},
		{name: "a spec no backend serves fails", iss: noBackend,
			want: Fail, wantReason: ReasonNoBackend},
		{name: "a CA certificate is refused without allowCA, before the backend is asked", iss: readyIssuer(nil), req: Request{IsCA: true},
			want: Fail, wantReason: ReasonCANotAllowed},
		{name: "a CA certificate goes to the backend with allowCA", iss: readyIssuer(&v1alpha1.Policy{AllowCA: true}), req: Request{IsCA: true},
			backend: scriptedBackend{chain: leafOf(t, published, publishedKey)}, want: Issued, wantSigning: true},
		{name: "a request without CSR fails at a backend that needs one, before it is asked", iss: readyIssuer(nil), needsCSR: true,
			want: Fail, wantReason: ReasonCSRRequired},
		{name: "a request with a CSR goes to a backend that needs one", iss: readyIssuer(nil), needsCSR: true, req: Request{CSR: []byte("csr")},
			backend: scriptedBackend{chain: leafOf(t, published, publishedKey)}, want: Issued, wantSigning: true},
		{name: "a backend still working is asked again when it says", iss: readyIssuer(nil),
			backend: scriptedBackend{err: &PendingError{Err: errors.New("validating"), RetryAfter: 3 * time.Second}}, want: Wait, wantRetry: 3 * time.Second, wantSigning: true},
		{name: "a permanent refusal fails the request", iss: readyIssuer(nil),
			backend: scriptedBackend{err: Permanentf("refused")}, want: Fail, wantReason: ReasonSigningFailed, wantSigning: true},
		{name: "a backend that finds its issuer cannot sign has the request wait", iss: readyIssuer(nil),
			backend: scriptedBackend{err: &NotReadyError{Reason: "Sealed", Message: "sealed"}}, want: WaitForIssuer, wantReason: ReasonIssuerNotReady, wantRetry: IssuerWait, wantSigning: true},
		{name: "any other error is retried", iss: readyIssuer(nil),
			backend: scriptedBackend{err: errors.New("connection refused")}, want: Retry, wantSigning: true},
		{name: "a chain from a CA the issuer has not published yet is held back", iss: readyIssuer(nil),
			backend: scriptedBackend{chain: leafOf(t, other, otherKey)}, want: WaitForIssuer, wantReason: ReasonIssuerNotReady, wantRetry: IssuerWait, wantSigning: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			backend := c.backend
			r, err := NewRegistry(Kind{Name: "ca", Selected: func(s *v1alpha1.IssuerSpec) bool { return s.CA != nil }, NeedsCSR: c.needsCSR, Backend: &backend})
			if err != nil {
				t.Fatal(err)
			}
			got := r.Issue(context.Background(), c.iss, &c.req)
			if got.Outcome != c.want || got.Reason != c.wantReason || got.RetryAfter != c.wantRetry {
				t.Errorf("Issue = outcome %v reason %q retry %s (%s), want %v %q %s", got.Outcome, got.Reason, got.RetryAfter, got.Message, c.want, c.wantReason, c.wantRetry)
			}
			if (got.Chain != nil) != (c.want == Issued) {
				t.Errorf("chain %q with outcome %v", got.Chain, got.Outcome)
			}
			if signed := backend.calls > 0; signed != c.wantSigning {
				t.Errorf("the backend was asked to sign: %v, want %v", signed, c.wantSigning)
			}
		})
	}
}

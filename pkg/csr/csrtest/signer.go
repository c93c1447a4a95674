// Package csrtest is a test signer for certmint CertificateSigningRequests:
// it approves and signs them with a throwaway CA, or denies them, the moment
// it sees them. It stands in for the controller in tests of the driver.
package csrtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

// Decision is what the signer does with a request.
type Decision struct {
	// Deny, when true, denies with Reason and Message instead of signing.
	Deny            bool
	Reason, Message string
	// Lifetime, if not zero, signs for this long from now instead of the
	// requested duration, as an issuer may; tests use it to have
	// certificates renewed within seconds.
	Lifetime time.Duration
}

// Signer approves and signs, or denies, every certmint request it sees.
type Signer struct {
	CA    *x509.Certificate
	caKey crypto.Signer
	// Decide chooses per request; nil approves everything.
	Decide func(*certificatesv1.CertificateSigningRequest) Decision

	mu       sync.Mutex
	failures []error
}

// Failures are the requests the signer failed to act on, so far. A test
// that uses the signer checks them when it ends: a request left undecided
// by a broken signer must not pass for one the driver mishandled, or the
// other way round.
func (s *Signer) Failures() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.failures)
}

// NewSigner makes a signer with a fresh self-signed ECDSA CA.
func NewSigner() (*Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certmint test CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Signer{CA: ca, caKey: key}, nil
}

// Start acts on requests until ctx ends; it returns once its watch is
// established. It watches only requests the certmint driver labelled, like
// the real controller.
func (s *Signer) Start(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = request.LabelManagedBy + "=" + request.DriverName
	}))
	inf := factory.Certificates().V1().CertificateSigningRequests().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.handle(ctx, client, obj.(*certificatesv1.CertificateSigningRequest)) },
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return errors.New("test signer: watch not established")
	}
	return nil
}

func (s *Signer) handle(ctx context.Context, client kubernetes.Interface, csr *certificatesv1.CertificateSigningRequest) {
	if len(csr.Status.Conditions) > 0 {
		return
	}
	// A request deleted before the signer got to it (its requester gave
	// up) is no failure of the signer's.
	if err := s.act(ctx, client, csr.DeepCopy()); err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
		s.mu.Lock()
		s.failures = append(s.failures, fmt.Errorf("test signer, CSR %s: %w", csr.Name, err))
		s.mu.Unlock()
	}
}

func (s *Signer) act(ctx context.Context, client kubernetes.Interface, csr *certificatesv1.CertificateSigningRequest) error {
	d := Decision{}
	if s.Decide != nil {
		d = s.Decide(csr)
	}
	csrs := client.CertificatesV1().CertificateSigningRequests()
	cond := certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
		Reason: "TestSigner", Message: "approved by the test signer", LastUpdateTime: metav1.Now(),
	}
	if d.Deny {
		cond.Type, cond.Reason, cond.Message = certificatesv1.CertificateDenied, d.Reason, d.Message
	}
	csr.Status.Conditions = append(csr.Status.Conditions, cond)
	updated, err := csrs.UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
	if err != nil || d.Deny {
		return err
	}
	chain, err := s.sign(csr, time.Now(), d.Lifetime)
	if err != nil {
		return err
	}
	updated.Status.Certificate = chain
	_, err = csrs.UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

// Sign issues the certificate csr asks for, valid from now for its
// expirationSeconds (one hour if unset), and returns the leaf as PEM. Like
// the controller it never sends its root: relying parties get that from the
// issuer's trust bundle (TrustBundle).
func (s *Signer) Sign(csr *certificatesv1.CertificateSigningRequest, now time.Time) ([]byte, error) {
	return s.sign(csr, now, 0)
}

func (s *Signer) sign(csr *certificatesv1.CertificateSigningRequest, now time.Time, lifetime time.Duration) ([]byte, error) {
	req, err := pki.ParseCertificateRequest(csr.Spec.Request)
	if err != nil {
		return nil, err
	}
	switch {
	case lifetime != 0:
	case csr.Spec.ExpirationSeconds == nil:
		lifetime = time.Hour
	default:
		lifetime = time.Duration(*csr.Spec.ExpirationSeconds) * time.Second
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		RawSubject:     req.RawSubject,
		DNSNames:       req.DNSNames,
		IPAddresses:    req.IPAddresses,
		URIs:           req.URIs,
		EmailAddresses: req.EmailAddresses,
		NotBefore:      now.Add(-30 * time.Second),
		NotAfter:       now.Add(lifetime),
	}
	for _, u := range csr.Spec.Usages {
		switch u {
		case certificatesv1.UsageDigitalSignature:
			tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
		case certificatesv1.UsageKeyEncipherment:
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		case certificatesv1.UsageCertSign:
			tmpl.KeyUsage |= x509.KeyUsageCertSign
			tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		case certificatesv1.UsageServerAuth:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		case certificatesv1.UsageClientAuth:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.CA, req.PublicKey, s.caKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// TrustBundle is the signer's CA as PEM, what an issuer publishes in
// status.trustBundle.
func (s *Signer) TrustBundle() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.CA.Raw}))
}

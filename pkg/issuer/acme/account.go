package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/pki"
)

// session is a registered account with what signing for one issuer needs.
type session struct {
	// fingerprint changes with anything the session is built from: the
	// registration's inputs and the trust bundle chains are checked
	// against.
	fingerprint string
	client      *acme.Client
	accountURI  string
	trustPEM    []byte
	trust       *x509.CertPool
	// refusesNotAfter is set once the server refused an order with a
	// notAfter: it chooses lifetimes itself.
	refusesNotAfter atomic.Bool
	// notBefore is when the server may be asked for a new order again, in
	// Unix nanoseconds, after it rate-limited the account's new orders.
	notBefore atomic.Int64
}

// retryAt is when the account may order again; zero when it may now.
func (s *session) retryAt() time.Time {
	if n := s.notBefore.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// session returns the issuer's registered account, registering it (and
// generating its key) when needed. Problems the user must fix are
// *issuer.NotReadyError.
func (b *Backend) session(ctx context.Context, iss v1alpha1.GenericIssuer) (*session, error) {
	spec := iss.GetSpec().ACME
	if spec == nil {
		return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonError, Message: "the spec has no acme section"}
	}
	if iss.GetNamespace() != "" {
		// The API server refuses these; an Issuer stored before that rule
		// must still not sign, as its owner also writes its policy and
		// HTTP-01 cannot tell whose a name is.
		return nil, &issuer.NotReadyError{Reason: ReasonNamespacedIssuer, Message: "acme is available only on ClusterIssuers: an HTTP-01 challenge proves that a name reaches the cluster, not which namespace controls it"}
	}
	trustPEM, trust, err := parseBundle(spec.TrustBundle)
	if err != nil {
		return nil, &issuer.NotReadyError{Reason: ReasonInvalidTrustBundle, Message: "spec.acme.trustBundle: " + err.Error()}
	}
	var serverRoots *x509.CertPool
	if spec.CABundle != "" {
		if _, serverRoots, err = parseBundle(spec.CABundle); err != nil {
			return nil, &issuer.NotReadyError{Reason: ReasonInvalidCABundle, Message: "spec.acme.caBundle: " + err.Error()}
		}
	}
	secretRef := types.NamespacedName{Namespace: b.clusterResourceNamespace, Name: spec.AccountKeySecretName}
	key, secretVersion, err := b.accountKey(ctx, iss, secretRef)
	if err != nil {
		return nil, err
	}
	eab, eabVersion, err := b.externalAccountBinding(ctx, spec.ExternalAccountBinding)
	if err != nil {
		return nil, err
	}

	sum := sha256.New()
	for _, part := range []string{spec.Server, spec.Email, spec.CABundle, spec.TrustBundle, secretVersion, eabVersion} {
		sum.Write([]byte(part))
		sum.Write([]byte{0})
	}
	fingerprint := hex.EncodeToString(sum.Sum(nil))
	issuerKey := issuer.RefFor(iss).String()

	b.mu.Lock()
	cached, ok := b.sessions[issuerKey]
	b.mu.Unlock()
	if ok && cached.fingerprint == fingerprint {
		return cached, nil
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: serverRoots, MinVersion: tls.VersionTLS12}
	client := &acme.Client{
		Key:          key,
		DirectoryURL: spec.Server,
		HTTPClient:   &http.Client{Transport: transport, Timeout: requestTimeout},
		UserAgent:    b.userAgent,
		RetryBackoff: b.retryBackoff,
	}
	acct := &acme.Account{Contact: contact(spec.Email), ExternalAccountBinding: eab}
	// Registering a key that already has an account returns that account;
	// the terms of service are accepted on the user's behalf, as creating
	// the issuer asks for certificates under them.
	registered, err := client.Register(ctx, acct, acme.AcceptTOS)
	accountURI := string(client.KID)
	switch {
	case errors.Is(err, acme.ErrAccountAlreadyExists):
		if err := updateContact(ctx, client, acct.Contact); err != nil {
			return nil, &issuer.NotReadyError{Reason: ReasonAccountError, Message: fmt.Sprintf("updating the account's email at the ACME server %s: %v", spec.Server, err)}
		}
	case err != nil:
		return nil, &issuer.NotReadyError{Reason: ReasonAccountError, Message: fmt.Sprintf("registering with the ACME server %s: %v", spec.Server, err)}
	default:
		accountURI = registered.URI
	}
	s := &session{fingerprint: fingerprint, client: client, accountURI: accountURI, trustPEM: trustPEM, trust: trust}
	b.mu.Lock()
	b.sessions[issuerKey] = s
	b.mu.Unlock()
	return s, nil
}

// contact is the account's contact list for email.
func contact(email string) []string {
	if email == "" {
		return nil
	}
	return []string{"mailto:" + email}
}

// updateContact gives an existing account the contact of the issuer, if it
// has another: an edited email reaches the account, not only new ones.
func updateContact(ctx context.Context, client *acme.Client, want []string) error {
	acct, err := client.GetReg(ctx, "")
	if err != nil {
		return err
	}
	if slices.Equal(acct.Contact, want) {
		return nil
	}
	_, err = client.UpdateReg(ctx, &acme.Account{Contact: want})
	return err
}

// externalAccountBinding reads the MAC key of eab, with a version that
// changes with it; nil when there is no binding.
func (b *Backend) externalAccountBinding(ctx context.Context, eab *v1alpha1.ACMEExternalAccountBinding) (*acme.ExternalAccountBinding, string, error) {
	if eab == nil {
		return nil, "", nil
	}
	encoded, err := b.secretKey(ctx, eab.KeySecretRef, "spec.acme.externalAccountBinding.keySecretRef")
	if err != nil {
		return nil, "", err
	}
	// CAs hand MAC keys out base64url-encoded, with or without padding.
	key, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(string(encoded)), "="))
	if err != nil {
		return nil, "", &issuer.NotReadyError{Reason: v1alpha1.ReasonInvalidSecret, Message: "spec.acme.externalAccountBinding.keySecretRef: the MAC key is not base64url: " + err.Error()}
	}
	return &acme.ExternalAccountBinding{KID: eab.KeyID, Key: key}, eab.KeyID + "/" + keyVersion(key), nil
}

// accountKey reads the account key, generating it into a new Secret when
// there is none, and returns it with a version that changes when the
// Secret is replaced or edited.
func (b *Backend) accountKey(ctx context.Context, iss v1alpha1.GenericIssuer, ref types.NamespacedName) (crypto.Signer, string, error) {
	secret, err := b.secrets.Get(ctx, ref)
	if apierrors.IsNotFound(err) {
		return b.createAccountKey(ctx, iss, ref)
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading the account key Secret %s: %w", ref, err)
	}
	keyPEM := secret.Data[corev1.TLSPrivateKeyKey]
	key, err := parseAccountKey(keyPEM)
	if err != nil {
		return nil, "", &issuer.NotReadyError{Reason: v1alpha1.ReasonInvalidSecret, Message: fmt.Sprintf("Secret %s: %s: %v", ref, corev1.TLSPrivateKeyKey, err)}
	}
	return key, keyVersion(keyPEM), nil
}

// keyVersion identifies an account key by its bytes, so that editing the
// Secret's labels does not register the account again.
func keyVersion(keyPEM []byte) string {
	sum := sha256.Sum256(keyPEM)
	return hex.EncodeToString(sum[:])
}

func (b *Backend) createAccountKey(ctx context.Context, iss v1alpha1.GenericIssuer, ref types.NamespacedName) (crypto.Signer, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generating an account key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("encoding the account key: %w", err)
	}
	issuerRef := issuer.RefFor(iss)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ref.Namespace,
			Name:      ref.Name,
			Labels:    issuer.LabelsFor(issuerRef),
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})},
	}
	if err := b.client.Create(ctx, secret); err != nil {
		// Another pass may have created it since the read; use that one
		// on the next pass rather than guessing here.
		return nil, "", fmt.Errorf("creating the account key Secret %s: %w", ref, err)
	}
	return key, keyVersion(secret.Data[corev1.TLSPrivateKeyKey]), nil
}

// parseAccountKey reads a PEM ECDSA or RSA private key, the kinds ACME
// servers accept for accounts.
func parseAccountKey(data []byte) (crypto.Signer, error) {
	key, err := pki.ParsePrivateKey(data)
	if err != nil {
		return nil, err
	}
	switch key.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
		return key, nil
	}
	return nil, fmt.Errorf("a %T cannot sign for an ACME account; use ECDSA or RSA", key)
}

// parseBundle parses PEM certificates, returning them re-encoded without
// anything else the input held, and as a pool.
func parseBundle(bundle string) ([]byte, *x509.CertPool, error) {
	certs, err := pki.ParseCertificates([]byte(bundle))
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pki.EncodeCertificates(certs...), pool, nil
}

// requestTimeout bounds one HTTP request to the ACME server.
const requestTimeout = 30 * time.Second

// Package selfsigned is the backend for issuers with a selfSigned spec: the
// controller generates a root CA for the issuer, keeps it in a Secret in its
// cluster resource namespace, and signs with it like the ca backend does.
package selfsigned

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/issuer/ca"
	"github.com/certmint/certmint/pkg/request"
)

// RootValidity is the lifetime of a generated root.
const RootValidity = 5 * 365 * 24 * time.Hour

// RootSecretName is the name of the Secret holding the root of an issuer. A
// hash keeps it within name limits for any namespace and name.
func RootSecretName(ref request.IssuerRef) string {
	sum := sha256.Sum256([]byte(string(ref.Kind) + "/" + ref.Namespace + "/" + ref.Name))
	return "certmint-selfsigned-" + hex.EncodeToString(sum[:10])
}

// NewRoot generates an ECDSA P-256 root CA certificate valid from
// now-ca.Backdate for RootValidity, PEM-encoded with its PKCS#8 key.
func NewRoot(now time.Time, commonName string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating root key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("generating serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		// A zero serial is invalid; one in 2^128 draws is not worth a loop.
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-ca.Backdate),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating root certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding root key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// Options configures a Backend.
type Options struct {
	// Client creates and deletes root Secrets. Required.
	Client client.Client
	// Live reads a root Secret the controller's watch has not shown yet.
	// Required.
	Live client.Reader
	// Loader reads root Secrets. Required.
	Loader *ca.Loader
	// Namespace is where root Secrets are kept: the controller's cluster
	// resource namespace. Required.
	Namespace string
	// Clock defaults to the real clock.
	Clock clock.PassiveClock
}

// Backend signs for issuers with a selfSigned spec.
type Backend struct {
	client    client.Client
	live      client.Reader
	loader    *ca.Loader
	namespace string
	clock     clock.PassiveClock
}

var _ issuer.Backend = (*Backend)(nil)

// New returns a Backend.
func New(opts Options) (*Backend, error) {
	switch {
	case opts.Client == nil || opts.Live == nil:
		return nil, errors.New("selfsigned: Client and Live are required")
	case opts.Loader == nil:
		return nil, errors.New("selfsigned: Loader is required")
	case opts.Namespace == "":
		return nil, errors.New("selfsigned: Namespace is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Backend{client: opts.Client, live: opts.Live, loader: opts.Loader, namespace: opts.Namespace, clock: opts.Clock}, nil
}

// Kind is the selfsigned backend's entry in the registry.
func (b *Backend) Kind() issuer.Kind {
	return issuer.Kind{
		Name:     "selfSigned",
		Selected: func(spec *v1alpha1.IssuerSpec) bool { return spec.SelfSigned != nil },
		Secrets: func(iss v1alpha1.GenericIssuer) []types.NamespacedName {
			return []types.NamespacedName{b.SecretRef(iss)}
		},
		Forget:  b.forget,
		Backend: b,
	}
}

// forget deletes the generated root of a deleted issuer: it served that
// issuer alone.
func (b *Backend) forget(ctx context.Context, ref request.IssuerRef) error {
	key := types.NamespacedName{Namespace: b.namespace, Name: RootSecretName(ref)}
	b.loader.Forget(key)
	root := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := b.client.Delete(ctx, root); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the generated root of %s: %w", ref, err)
	}
	return nil
}

// SecretRef is where the root of iss is kept.
func (b *Backend) SecretRef(iss v1alpha1.GenericIssuer) types.NamespacedName {
	return types.NamespacedName{Namespace: b.namespace, Name: RootSecretName(issuer.RefFor(iss))}
}

// Ready loads the issuer's root, generating it on first use.
func (b *Backend) Ready(ctx context.Context, iss v1alpha1.GenericIssuer) (issuer.Status, error) {
	ref := b.SecretRef(iss)
	kp, err := b.loader.Load(ctx, ref, issuer.RefFor(iss))
	var notReady *issuer.NotReadyError
	if errors.As(err, &notReady) && notReady.Reason == v1alpha1.ReasonSecretNotFound {
		data, createErr := b.createRoot(ctx, iss, ref)
		if createErr != nil {
			return issuer.Status{}, createErr
		}
		// The cache has not seen the new Secret yet; judge what was written.
		kp, err = ca.ParseKeyPair(ref.String(), data)
	}
	return ca.KeyPairStatus(kp, err, b.clock.Now())
}

// Sign signs req with the issuer's root.
func (b *Backend) Sign(ctx context.Context, iss v1alpha1.GenericIssuer, req *issuer.Request) ([]byte, error) {
	kp, err := b.loader.Load(ctx, b.SecretRef(iss), issuer.RefFor(iss))
	if err != nil {
		return nil, err
	}
	return kp.Sign(b.clock.Now(), req)
}

func (b *Backend) createRoot(ctx context.Context, iss v1alpha1.GenericIssuer, ref types.NamespacedName) (map[string][]byte, error) {
	issuerRef := issuer.RefFor(iss)
	certPEM, keyPEM, err := NewRoot(b.clock.Now(), "certmint "+issuerRef.String())
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ref.Namespace,
			Name:      ref.Name,
			Labels:    issuer.LabelsFor(issuerRef),
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	err = b.client.Create(ctx, secret)
	if apierrors.IsAlreadyExists(err) {
		// Created by an earlier pass whose result the watch has not shown
		// yet; use that one rather than a second root.
		var existing corev1.Secret
		if err := b.live.Get(ctx, ref, &existing); err != nil {
			return nil, fmt.Errorf("reading root Secret %s: %w", ref, err)
		}
		return existing.Data, nil
	}
	if err != nil {
		return nil, fmt.Errorf("creating root Secret %s: %w", ref, err)
	}
	return secret.Data, nil
}

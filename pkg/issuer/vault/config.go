package vault

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"regexp"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/pki"
)

// config is what an issuer's spec and the Secrets it names say about
// reaching Vault and logging in. It holds secrets: it is never logged.
type config struct {
	server    string
	namespace string
	// caPEM is the PEM of the CAs to trust for Vault's TLS; nil means the
	// system's roots.
	caPEM []byte
	// clientCertPEM and clientKeyPEM are the client certificate for
	// mutual TLS; nil without one.
	clientCertPEM, clientKeyPEM []byte
	auth                        authenticator
}

// fingerprint changes with anything a session is built from, so an edited
// spec or Secret gets a new session (and login), and nothing else does.
func (c *config) fingerprint() string {
	sum := sha256.New()
	writeParts(sum, c.server, c.namespace, string(c.caPEM), string(c.clientCertPEM), string(c.clientKeyPEM))
	c.auth.identify(sum)
	return hex.EncodeToString(sum.Sum(nil))
}

// tlsConfig is the TLS configuration for Vault's listener. Problems the
// user must fix are *issuer.NotReadyError.
func (c *config) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caPEM != nil {
		certs, err := pki.ParseCertificates(c.caPEM)
		if err != nil {
			return nil, &issuer.NotReadyError{Reason: ReasonInvalidCABundle, Message: "the CA bundle for Vault's TLS: " + err.Error()}
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, cert := range certs {
			cfg.RootCAs.AddCert(cert)
		}
	}
	if c.clientCertPEM != nil {
		pair, err := tls.X509KeyPair(c.clientCertPEM, c.clientKeyPEM)
		if err != nil {
			return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonInvalidSecret, Message: "the client certificate for Vault: " + err.Error()}
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// signPath is a parsed spec.vault.path.
type signPath struct {
	// mount is where the PKI secrets engine is mounted; issuerRef the
	// issuer of the mount that signs ("default" for its default one).
	mount, issuerRef, role string
}

// pathPattern is spec.vault.path as the API server admits it: the mount
// is everything before an optional issuer/<ref>/ and the sign/<role> at
// the end.
var pathPattern = regexp.MustCompile(`^([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*?)/(?:issuer/([A-Za-z0-9_.-]+)/)?sign/([A-Za-z0-9_.@-]+)$`)

func parsePath(path string) (signPath, error) {
	m := pathPattern.FindStringSubmatch(path)
	if m == nil {
		return signPath{}, &issuer.NotReadyError{Reason: v1alpha1.ReasonError, Message: fmt.Sprintf("spec.vault.path %q is not <mount>/sign/<role> or <mount>/issuer/<issuer>/sign/<role>", path)}
	}
	p := signPath{mount: m[1], issuerRef: m[2], role: m[3]}
	if p.issuerRef == "" {
		p.issuerRef = "default"
	}
	return p, nil
}

// caPath is where Vault serves the signing issuer's certificate and chain
// (unauthenticated, Vault 1.11 and later).
func (p signPath) caPath() string {
	return p.mount + "/issuer/" + p.issuerRef + "/json"
}

// resolve reads the Secrets the spec of iss names, in ns, into a config.
// A missing Secret or key is an *issuer.NotReadyError; other errors are
// from the API and worth a retry.
func (b *Backend) resolve(ctx context.Context, iss v1alpha1.GenericIssuer) (*config, error) {
	spec := iss.GetSpec().Vault
	if spec == nil {
		return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonError, Message: "the spec has no vault section"}
	}
	ns := b.namespace(iss)
	c := &config{server: spec.Server, namespace: spec.Namespace}
	switch {
	case spec.CABundle != "":
		c.caPEM = []byte(spec.CABundle)
	case spec.CABundleSecretRef != nil:
		v, err := b.secretKey(ctx, ns, *spec.CABundleSecretRef)
		if err != nil {
			return nil, err
		}
		c.caPEM = v
	}
	if name := spec.ClientCertificateSecretName; name != "" {
		secret, err := b.secret(ctx, types.NamespacedName{Namespace: ns, Name: name})
		if err != nil {
			return nil, err
		}
		c.clientCertPEM, c.clientKeyPEM = secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
		if len(c.clientCertPEM) == 0 || len(c.clientKeyPEM) == 0 {
			return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonInvalidSecret, Message: fmt.Sprintf("Secret %s/%s needs %s and %s for the client certificate", ns, name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)}
		}
	}
	auth, err := b.authenticator(ctx, iss, ns, &spec.Auth)
	if err != nil {
		return nil, err
	}
	c.auth = auth
	return c, nil
}

// namespace is where the Secrets and ServiceAccounts of iss live.
func (b *Backend) namespace(iss v1alpha1.GenericIssuer) string {
	if ns := iss.GetNamespace(); ns != "" {
		return ns
	}
	return b.clusterResourceNamespace
}

// secretRefs names the Secrets the spec of iss reads, for the issuer
// controller to watch.
func (b *Backend) secretRefs(iss v1alpha1.GenericIssuer) []types.NamespacedName {
	spec := iss.GetSpec().Vault
	if spec == nil {
		return nil
	}
	ns := b.namespace(iss)
	var names []string
	if spec.CABundleSecretRef != nil {
		names = append(names, spec.CABundleSecretRef.Name)
	}
	if spec.ClientCertificateSecretName != "" {
		names = append(names, spec.ClientCertificateSecretName)
	}
	switch a := spec.Auth; {
	case a.TokenSecretRef != nil:
		names = append(names, a.TokenSecretRef.Name)
	case a.AppRole != nil:
		names = append(names, a.AppRole.SecretRef.Name)
	case a.Kubernetes != nil && a.Kubernetes.SecretRef != nil:
		names = append(names, a.Kubernetes.SecretRef.Name)
	}
	refs := make([]types.NamespacedName, 0, len(names))
	for _, n := range names {
		refs = append(refs, types.NamespacedName{Namespace: ns, Name: n})
	}
	return refs
}

func (b *Backend) secret(ctx context.Context, ref types.NamespacedName) (*corev1.Secret, error) {
	secret, err := b.secrets.Get(ctx, ref)
	switch {
	case apierrors.IsNotFound(err):
		return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonSecretNotFound, Message: fmt.Sprintf("Secret %s not found", ref)}
	case err != nil:
		return nil, fmt.Errorf("reading Secret %s: %w", ref, err)
	}
	return secret, nil
}

// secretKey returns the value of one key of a Secret in ns.
func (b *Backend) secretKey(ctx context.Context, ns string, sel v1alpha1.IssuerSecretKeySelector) ([]byte, error) {
	ref := types.NamespacedName{Namespace: ns, Name: sel.Name}
	secret, err := b.secret(ctx, ref)
	if err != nil {
		return nil, err
	}
	v := secret.Data[sel.Key]
	if len(v) == 0 {
		return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonInvalidSecret, Message: fmt.Sprintf("Secret %s has no key %s", ref, sel.Key)}
	}
	return v, nil
}

func (c *config) String() string { return fmt.Sprintf("Vault at %s with %s", c.server, c.auth) }

// MarshalLog is what logr logs of c: its credentials never.
func (c *config) MarshalLog() any { return c.String() }

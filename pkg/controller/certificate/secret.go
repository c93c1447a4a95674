package certificate

import (
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/pki"
)

// Annotations the controller writes on a Certificate's Secret. A
// Certificate's secretTemplate cannot set keys under certmint.io/.
const (
	// AnnotationCertificate names the Certificate that keeps the Secret.
	// The controller writes only a Secret that does not exist yet or names
	// the Certificate writing it: a Secret of someone else's is never
	// taken over, unless its owner annotates it so.
	AnnotationCertificate = "certmint.io/certificate-name"
	// AnnotationSpecHash is a hash of the spec the certificate was issued
	// for, so a change of the spec re-issues.
	AnnotationSpecHash = "certmint.io/spec-hash"
	// AnnotationIssuedAt is when the certificate was issued (RFC 3339), to
	// compare with the issuer's status.reissueBefore: its notBefore is
	// backdated.
	AnnotationIssuedAt = "certmint.io/issued-at"
	// AnnotationReissueBefore is the issuer's status.reissueBefore when
	// the certificate was issued, if it had one: a certificate is
	// re-issued for the issuer only when it asks again, later. Comparing
	// issued-at alone would re-issue a certificate the new CA signed within
	// the second the issuer's time is rounded up to.
	AnnotationReissueBefore = "certmint.io/issuer-reissue-before"
	// AnnotationRevision is the Certificate's status.revision of the
	// certificate, so a status write lost after the Secret's counts it
	// still.
	AnnotationRevision = "certmint.io/revision"
	// AnnotationKeystores identifies the passwords the keystores are
	// encrypted with (keystoresHash), so a new password rewrites them
	// without a new certificate.
	AnnotationKeystores = "certmint.io/keystores-hash"
)

// The Secret's keys besides the kubernetes.io/tls ones.
const (
	KeyCA     = "ca.crt"
	KeyPKCS12 = "keystore.p12"
	KeyJKS    = "keystore.jks"
)

// held is what a Certificate's Secret holds now, as far as it is usable.
type held struct {
	secret *corev1.Secret
	key    crypto.Signer
	chain  []*x509.Certificate
	// issuedAt is zero when the Secret does not say, and so is
	// reissueBefore when the issuer had asked for no re-issuance then.
	issuedAt, reissueBefore time.Time
	revision                int64
}

// readHeld reads the key and chain of secret; a part that does not parse is
// left nil, which asks for a new certificate.
func readHeld(secret *corev1.Secret) held {
	h := held{secret: secret}
	if secret == nil {
		return h
	}
	if key, err := pki.ParsePrivateKey(secret.Data[corev1.TLSPrivateKeyKey]); err == nil {
		h.key = key
	}
	if chain, err := pki.ParseCertificates(secret.Data[corev1.TLSCertKey]); err == nil {
		h.chain = chain
	}
	if t, err := time.Parse(time.RFC3339, secret.Annotations[AnnotationIssuedAt]); err == nil {
		h.issuedAt = t
	}
	if t, err := time.Parse(time.RFC3339, secret.Annotations[AnnotationReissueBefore]); err == nil {
		h.reissueBefore = t
	}
	if n, err := strconv.ParseInt(secret.Annotations[AnnotationRevision], 10, 64); err == nil {
		h.revision = n
	}
	return h
}

// specHash identifies what shapes the Secret's certificate: the spec but
// for the Secret's metadata and the keystores' passwords, which the
// controller applies without re-issuing.
func specHash(spec *v1alpha1.CertificateSpec) (string, error) {
	s := *spec
	s.SecretTemplate = nil
	data, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("hashing the spec: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16]), nil
}

// keystoresHash identifies the passwords of the keystores of a Secret
// holding key. It is keyed with the private key: the hash sits in the
// Secret's metadata, and only who can read the key could test passwords
// against it, while the key is all a keystore protects.
func keystoresHash(key crypto.Signer, passwords keystorePasswords) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("hashing the keystores' passwords: %w", err)
	}
	secret := sha256.Sum256(der)
	mac := hmac.New(sha256.New, secret[:])
	for _, p := range []*string{passwords.PKCS12, passwords.JKS} {
		if p == nil {
			mac.Write([]byte{0})
			continue
		}
		mac.Write([]byte{1})
		mac.Write([]byte(strconv.Itoa(len(*p))))
		mac.Write([]byte{':'})
		mac.Write([]byte(*p))
	}
	return hex.EncodeToString(mac.Sum(nil)[:16]), nil
}

// mismatch says why the held certificate does not serve w at now, or ""
// when it does; hash is specHash of the Certificate now, expected the
// lifetime it is approved for (w's duration, or the issuer's default), and
// anchors the issuer's trust bundle, which the chain must lead to (not
// checked when the issuer has published none).
func mismatch(h held, hash string, w *wanted, expected time.Duration, anchors []*x509.Certificate, now time.Time) string {
	switch {
	case h.secret == nil:
		return "the Secret does not exist"
	case h.key == nil || h.chain == nil:
		return "the Secret holds no valid key and certificate"
	case h.secret.Annotations[AnnotationSpecHash] != hash:
		return "the spec changed"
	case !keyFits(h.key, w.cert.Key):
		return "the key is not of the algorithm and size the spec asks for"
	}
	spec := w.cert
	spec.Duration = expected
	if err := spec.Verify(h.key.Public(), h.chain, now); err != nil {
		return "the certificate does not match the spec: " + err.Error()
	}
	if len(anchors) > 0 {
		if err := certspec.VerifyTrusted(h.chain, anchors, now); err != nil {
			return "the certificate is not trusted by the issuer's trust bundle: " + err.Error()
		}
	}
	return ""
}

// reissueReason says why the held certificate must be replaced, or ""
// when it is current: it does not serve (mismatch), it is due for renewal,
// or the issuer asks for certificates issued before reissueBefore to be
// replaced.
func reissueReason(h held, hash string, w *wanted, expected time.Duration, anchors []*x509.Certificate, reissueBefore time.Time, now time.Time) string {
	if why := mismatch(h, hash, w, expected, anchors, now); why != "" {
		return why
	}
	switch {
	case !now.Before(h.renewalTime(w)):
		return "it is due for renewal"
	case reissueBefore.After(h.reissueBefore) && (h.issuedAt.IsZero() || h.issuedAt.Before(reissueBefore)):
		return "the issuer asked for certificates issued before " + reissueBefore.UTC().Format(time.RFC3339) + " to be replaced"
	}
	return ""
}

// keyFits reports whether key is of the algorithm and size k asks for.
func keyFits(key crypto.Signer, k certspec.Key) bool {
	alg, size, err := keystore.Describe(key.Public())
	return err == nil && alg == k.Algorithm && (alg == keystore.Ed25519 || size == k.Size)
}

// secretData is the data of a Certificate's Secret: key, chain, trust
// bundle and the keystores asked for, with their passwords.
func secretData(w *wanted, key crypto.Signer, chainPEM []byte, chain, bundle []*x509.Certificate, bundlePEM []byte, passwords keystorePasswords, now time.Time) (map[string][]byte, error) {
	keyPEM, err := keystore.EncodePrivateKey(key, w.keyEncoding)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{
		corev1.TLSPrivateKeyKey: keyPEM,
		corev1.TLSCertKey:       chainPEM,
		KeyCA:                   bundlePEM,
	}
	if p, ok := passwords.pkcs12(); ok {
		if data[KeyPKCS12], err = keystore.PKCS12(key, chain, bundle, p); err != nil {
			return nil, err
		}
	}
	if p, ok := passwords.jks(); ok {
		if data[KeyJKS], err = keystore.JKS(key, chain, bundle, p, now); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// keystorePasswords are the passwords of the keystores a Certificate asks
// for; a keystore not asked for has none.
type keystorePasswords struct {
	PKCS12, JKS *string
}

func (p keystorePasswords) pkcs12() (string, bool) { return deref(p.PKCS12) }
func (p keystorePasswords) jks() (string, bool)    { return deref(p.JKS) }

func deref(s *string) (string, bool) {
	if s == nil {
		return "", false
	}
	return *s, true
}

// renewalTime is when the held certificate is renewed for w: see
// renewalTime, but never sooner than minReissueInterval after it was
// issued, so that a certificate the issuer signed for less than w's
// renewBefore (its notBefore backdated) is not issued again and again.
func (h held) renewalTime(w *wanted) time.Time {
	leaf := h.chain[0]
	at := renewalTime(leaf.NotBefore, leaf.NotAfter, w.cert.RenewBefore)
	if !h.issuedAt.IsZero() {
		at = later(at, h.issuedAt.Add(minReissueInterval))
	}
	return at
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// withMetadata returns the labels and annotations secret should have:
// those of the template over what it has, and the controller's own, which
// the template cannot set (the API server refuses certmint.io/ keys there;
// this holds for a Certificate stored before that rule too).
func withMetadata(secret *corev1.Secret, cert *v1alpha1.Certificate) (labels, annotations map[string]string) {
	labels, annotations = maps.Clone(secret.Labels), maps.Clone(secret.Annotations)
	if labels == nil {
		labels = map[string]string{}
	}
	if annotations == nil {
		annotations = map[string]string{}
	}
	if t := cert.Spec.SecretTemplate; t != nil {
		maps.Copy(labels, t.Labels)
		maps.Copy(annotations, t.Annotations)
	}
	for _, k := range []string{AnnotationSpecHash, AnnotationIssuedAt, AnnotationReissueBefore, AnnotationRevision, AnnotationKeystores} {
		if v, ok := secret.Annotations[k]; ok {
			annotations[k] = v
		} else {
			delete(annotations, k)
		}
	}
	for _, k := range []string{issuer.LabelIssuerKind, issuer.LabelIssuerNamespace, issuer.LabelIssuerName} {
		if v, ok := secret.Labels[k]; ok {
			labels[k] = v
		} else {
			delete(labels, k)
		}
	}
	annotations[AnnotationCertificate] = cert.Name
	return labels, annotations
}

// checkOwnership says why cert must not write secret, or "" when it may:
// a Secret of another type, one an issuer's key pair was generated into,
// one another Certificate keeps, or one nobody said a Certificate may
// keep. A Secret a user made, such as an issuer's CA key pair, is never
// overwritten because someone who may create Certificates or Ingresses
// names it.
func checkOwnership(secret *corev1.Secret, cert *v1alpha1.Certificate) string {
	if secret == nil {
		return ""
	}
	keeper := secret.Annotations[AnnotationCertificate]
	_, generated := issuer.GeneratedFor(secret)
	switch {
	case secret.Type != corev1.SecretTypeTLS:
		return fmt.Sprintf("Secret %s is of type %s; a Certificate writes only kubernetes.io/tls Secrets: choose another secretName", secret.Name, secret.Type)
	case generated:
		return fmt.Sprintf("Secret %s holds a key pair the controller generated for an issuer; choose another secretName", secret.Name)
	case keeper == "":
		return fmt.Sprintf("Secret %s exists and no Certificate keeps it; choose another secretName, delete the Secret, or let this Certificate take it over by annotating it %s=%s", secret.Name, AnnotationCertificate, cert.Name)
	case keeper != cert.Name:
		return fmt.Sprintf("Secret %s is kept by Certificate %s; choose another secretName", secret.Name, keeper)
	}
	return ""
}

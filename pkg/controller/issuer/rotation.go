package issuer

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/policy"
)

// trust is the part of an issuer's status that says what relying parties
// trust and which certificates drivers should replace.
type trust struct {
	bundle        string
	signing       *v1alpha1.SigningState
	retiring      []v1alpha1.RetiringCA
	reissueBefore *metav1.Time
	// rotated is true when the signing CA changed in this pass, and
	// reconfigured when only what the issuer signs changed.
	rotated, reconfigured bool
	// nextExpiry is when the first retiring CA leaves the bundle; zero when
	// none is retiring.
	nextExpiry time.Time
}

// nextTrust computes the trust of an issuer whose status is prev, at now,
// given what its backend reported. Relying parties must never see a bundle
// that rejects a certificate still valid, so a CA the issuer stops signing
// with retires rather than leaves: it stays in the bundle until the last
// certificate it can have signed has expired.
func nextTrust(prev *v1alpha1.IssuerStatus, spec *v1alpha1.IssuerSpec, st issuer.Status, now time.Time) (trust, error) {
	retiring := slices.DeleteFunc(slices.Clone(prev.RetiringCAs), func(r v1alpha1.RetiringCA) bool {
		return !r.Until.After(now)
	})
	t := trust{signing: prev.Signing, reissueBefore: prev.ReissueBefore}
	if !st.Ready {
		// Not signing, so nothing changes but the passing of time: the
		// last bundle stays, less the CAs whose certificates have all
		// expired.
		current, err := withoutRetired(prev.TrustBundle, prev.RetiringCAs, retiring)
		if err != nil {
			return trust{}, err
		}
		t.bundle, t.retiring = current, nilIfEmpty(retiring)
		t.nextExpiry = firstUntil(retiring)
		return t, nil
	}

	anchors, err := parsePEMCertificates(string(st.TrustBundle))
	if err != nil {
		return trust{}, fmt.Errorf("parsing the backend's trust bundle: %w", err)
	}
	// A CA that signs again (a rollback) is current, not retiring.
	retiring = slices.DeleteFunc(retiring, func(r v1alpha1.RetiringCA) bool {
		return containsPEM(anchors, r.Certificate)
	})
	next := &v1alpha1.SigningState{
		CAFingerprint: caIdentity(st),
		ConfigHash:    configHash(spec),
		MaxDuration:   metav1.Duration{Duration: policy.MaxDuration(spec.Policy)},
	}
	published, err := parsePEMCertificates(prev.TrustBundle)
	if err != nil {
		return trust{}, fmt.Errorf("parsing the published trust bundle: %w", err)
	}
	old := prev.Signing
	if old == nil && slices.ContainsFunc(published, func(c *x509.Certificate) bool { return !slices.ContainsFunc(anchors, c.Equal) }) {
		// A status written before the controller recorded what it signs
		// with, publishing CAs that no longer sign: they signed until now,
		// with the current backend and policy as far as anyone can tell.
		old = &v1alpha1.SigningState{MaxDuration: next.MaxDuration}
	}
	switch {
	case old == nil:
		// First sight of this issuer: nothing to compare with, and nothing
		// to ask of drivers.
	case old.CAFingerprint != next.CAFingerprint:
		// Certificates signed until now live no longer than the CA
		// certificates they chain to, and at most old.MaxDuration when the
		// issuer chose their lifetime. An ACME server picks the lifetime
		// itself and may ignore the one asked for; bound it by
		// acmeMaxLifetime rather than by the anchor, which may be valid for
		// decades and is often removed precisely to stop trusting it.
		lifetimeBounded := !strings.HasPrefix(old.CAFingerprint, bundleIdentityPrefix)
		if old.CAFingerprint == "" {
			// A status from before the controller recorded it (see
			// above): the backend signed as it does now.
			lifetimeBounded = st.CA != nil
		}
		for _, c := range published {
			if slices.ContainsFunc(anchors, c.Equal) || retiringContains(retiring, c) {
				continue
			}
			until := c.NotAfter
			maxLifetime := acmeMaxLifetime
			if lifetimeBounded {
				maxLifetime = old.MaxDuration.Duration
			}
			if lastExpiry := now.Add(maxLifetime); lastExpiry.Before(until) {
				until = lastExpiry
			}
			if until.After(now) {
				retiring = append(retiring, v1alpha1.RetiringCA{Certificate: string(encodePEM(c)), Until: ceilTime(until)})
			}
		}
		t.rotated = true
		t.reissueBefore = ptrTime(now)
	case old.ConfigHash != next.ConfigHash:
		t.reconfigured = true
		t.reissueBefore = ptrTime(now)
		// Certificates already signed by this CA keep the lifetime the
		// old policy gave them.
		next.MaxDuration.Duration = max(next.MaxDuration.Duration, old.MaxDuration.Duration)
	default:
		next.MaxDuration.Duration = max(next.MaxDuration.Duration, old.MaxDuration.Duration)
	}

	var bundle strings.Builder
	bundle.Write(st.TrustBundle)
	for _, r := range retiring {
		bundle.WriteString(r.Certificate)
	}
	t.bundle, t.signing, t.retiring = bundle.String(), next, nilIfEmpty(retiring)
	t.nextExpiry = firstUntil(retiring)
	return t, nil
}

// nilIfEmpty keeps an empty list out of the status, as the API would on
// the next read, so comparing with it finds no change.
func nilIfEmpty(r []v1alpha1.RetiringCA) []v1alpha1.RetiringCA {
	if len(r) == 0 {
		return nil
	}
	return r
}

// withoutRetired removes from bundle the certificates of the CAs in all
// that are no longer in kept.
func withoutRetired(bundle string, all, kept []v1alpha1.RetiringCA) (string, error) {
	if len(all) == len(kept) {
		return bundle, nil
	}
	certs, err := parsePEMCertificates(bundle)
	if err != nil {
		return "", fmt.Errorf("parsing the published trust bundle: %w", err)
	}
	var out bytes.Buffer
	for _, c := range certs {
		if retiringContains(all, c) && !retiringContains(kept, c) {
			continue
		}
		out.Write(encodePEM(c))
	}
	return out.String(), nil
}

func retiringContains(retiring []v1alpha1.RetiringCA, c *x509.Certificate) bool {
	pemText := string(encodePEM(c))
	return slices.ContainsFunc(retiring, func(r v1alpha1.RetiringCA) bool { return r.Certificate == pemText })
}

func containsPEM(certs []*x509.Certificate, pemText string) bool {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return false
	}
	return slices.ContainsFunc(certs, func(c *x509.Certificate) bool { return bytes.Equal(c.Raw, block.Bytes) })
}

func firstUntil(retiring []v1alpha1.RetiringCA) time.Time {
	var first time.Time
	for _, r := range retiring {
		if first.IsZero() || r.Until.Time.Before(first) {
			first = r.Until.Time
		}
	}
	return first
}

// caIdentity names what signs for a Ready issuer: the fingerprint of its CA
// certificate or, for a backend without one of its own (an ACME server),
// of the trust bundle its chains lead to, so that a change of either is a
// rotation.
func caIdentity(st issuer.Status) string {
	if st.CA != nil {
		return fingerprint(st.CA)
	}
	sum := sha256.Sum256(st.TrustBundle)
	return bundleIdentityPrefix + hex.EncodeToString(sum[:])
}

// bundleIdentityPrefix starts the identity of a backend without a CA of
// its own.
const bundleIdentityPrefix = "bundle:"

// acmeMaxLifetime bounds the certificates of a backend that does not choose
// their lifetime: public ACME CAs issue for 90 days at most.
const acmeMaxLifetime = 100 * 24 * time.Hour

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// configHash hashes what, besides the CA, shapes the certificates an issuer
// signs: which backend it uses and its policy. Other settings (which Secret
// holds the CA, how a backend authenticates) change nothing a relying party
// sees, so they do not ask drivers to re-issue.
func configHash(spec *v1alpha1.IssuerSpec) string {
	// The backend is whichever spec field other than policy is set, so a
	// backend added later counts without a change here.
	fields := map[string]json.RawMessage{}
	if raw, err := json.Marshal(spec); err == nil {
		_ = json.Unmarshal(raw, &fields)
	}
	var backends []string
	for name := range fields {
		if name != "policy" {
			backends = append(backends, name)
		}
	}
	slices.Sort(backends)
	pol, _ := json.Marshal(spec.Policy)
	sum := sha256.Sum256([]byte(strings.Join(backends, ",") + "\n" + string(pol)))
	return hex.EncodeToString(sum[:16])
}

func parsePEMCertificates(text string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(text)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
}

func encodePEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// ceilTime rounds t up to the whole second the API keeps of it, so a
// stored time is never earlier than the instant it stands for: a request
// created in the same second as a rotation is still re-issued, and a
// retiring CA is never dropped early.
func ceilTime(t time.Time) metav1.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		t = r.Add(time.Second)
	}
	return metav1.NewTime(t)
}

func ptrTime(t time.Time) *metav1.Time {
	mt := ceilTime(t)
	return &mt
}

// PublishedBundleTrusts reports whether chain, as a backend's Sign returns
// it (leaf first, roots left out), chains to a CA in the trust bundle iss
// has published. A certificate from a CA that bundle lacks would be
// rejected by relying parties holding it, as happens for a moment after a
// rotation until the issuer controller publishes the new CA. An issuer
// that publishes no bundle leaves relying parties nothing to check against,
// so every chain passes.
//
// The chain is anchored when any of its certificates is an anchor or is
// signed by one, not only its last: an ACME chain may end in a root
// cross-signed by an older CA while the bundle holds the same root
// self-signed, and relying parties build their path to that anchor from
// below the cross-signed certificate. Validity periods and key usages are
// left to relying parties: the question here is only which CA anchors the
// chain, and its answer does not change with the time it is asked.
func PublishedBundleTrusts(iss v1alpha1.GenericIssuer, chain []byte) (bool, error) {
	bundle := iss.GetStatus().TrustBundle
	if bundle == "" {
		return true, nil
	}
	var ders [][]byte
	for rest := chain; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			ders = append(ders, block.Bytes)
		}
	}
	if len(ders) == 0 {
		return false, fmt.Errorf("the signed chain holds no certificate")
	}
	// Above the leaf the answer is the same for every request: check the
	// intermediates once per bundle rather than once per request.
	leaf, intermediates := ders[0], ders[1:]
	var memoKey [sha256.Size]byte
	if len(intermediates) > 0 {
		memoKey = intermediatesKey(bundle, intermediates)
		if _, ok := trustedIntermediates.Load(memoKey); ok {
			return true, nil
		}
	}
	anchors, err := parsePEMCertificates(bundle)
	if err != nil {
		return false, fmt.Errorf("parsing the published trust bundle: %w", err)
	}
	for _, der := range intermediates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return false, fmt.Errorf("parsing the signed chain: %w", err)
		}
		if anchoredBy(anchors, c) {
			rememberTrusted(memoKey)
			return true, nil
		}
	}
	c, err := x509.ParseCertificate(leaf)
	if err != nil {
		return false, fmt.Errorf("parsing the signed chain: %w", err)
	}
	return anchoredBy(anchors, c), nil
}

// anchoredBy reports whether c is one of anchors or is signed by one.
func anchoredBy(anchors []*x509.Certificate, c *x509.Certificate) bool {
	return slices.ContainsFunc(anchors, func(a *x509.Certificate) bool {
		// Names alone do not tell CAs apart: a replacement root often has
		// the same subject as the one it replaces.
		return a.Equal(c) || bytes.Equal(a.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(a) == nil
	})
}

// intermediatesKey identifies a published bundle and the intermediates of
// a chain; the bundle's length goes first so that no other bundle and
// intermediates hash the same bytes.
func intermediatesKey(bundle string, intermediates [][]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(bundle))))
	h.Write([]byte(bundle))
	for _, der := range intermediates {
		h.Write(der)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// trustedIntermediates holds hashes of (published bundle, intermediates)
// pairs found to chain. Only positive answers are kept, each for an exact
// bundle, so an entry never outlives its truth; it is bounded because a
// bundle changes only at rotations.
var (
	trustedIntermediates     sync.Map
	trustedIntermediateCount atomic.Int64
)

const maxTrustedIntermediates = 1024

func rememberTrusted(key [sha256.Size]byte) {
	if trustedIntermediateCount.Add(1) > maxTrustedIntermediates {
		trustedIntermediates.Clear()
		trustedIntermediateCount.Store(1)
	}
	trustedIntermediates.Store(key, struct{}{})
}

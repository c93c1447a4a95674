package issuer

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/pki"
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

// signer is how an issuer signs, as far as its trust cares.
type signer struct {
	// kind is the name of its backend's kind; policy its policy block.
	kind   string
	policy *v1alpha1.Policy
	// maxLifetime is the longest a certificate it signs may live.
	maxLifetime time.Duration
	// choosesLifetime is true for a backend that chooses lifetimes itself
	// (an ACME server), whose longest issued lifetime it reports.
	choosesLifetime bool
}

// nextTrust computes the trust of an issuer whose status is prev, signing
// as s, at now, given what its backend reported. Relying parties must never
// see a bundle that rejects a certificate still valid, so a CA the issuer
// stops signing with retires rather than leaves: it stays in the bundle
// until the last certificate it can have signed has expired.
func nextTrust(prev *v1alpha1.IssuerStatus, s signer, st issuer.Status, now time.Time) (trust, error) {
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

	anchors, err := pki.ParseCertificates(st.TrustBundle)
	if err != nil {
		return trust{}, fmt.Errorf("parsing the backend's trust bundle: %w", err)
	}
	// A CA that signs again (a rollback) is current, not retiring.
	retiring = slices.DeleteFunc(retiring, func(r v1alpha1.RetiringCA) bool {
		return containsPEM(anchors, r.Certificate)
	})
	next := &v1alpha1.SigningState{
		CAFingerprint: caIdentity(st),
		ConfigHash:    configHash(s),
		MaxDuration:   metav1.Duration{Duration: s.maxLifetime},
	}
	if s.choosesLifetime {
		// What was seen issued since the controller started; whether that
		// is all this CA issued is decided below.
		next.IssuedLifetime = &metav1.Duration{Duration: st.LongestLifetime}
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
		// to ask of drivers. It signed nothing before (a request waits for
		// a Ready issuer, and Ready is written with this record), so what
		// it is seen to issue from now on is all it issued.
	case old.CAFingerprint != next.CAFingerprint:
		// Certificates signed until now live no longer than the CA
		// certificates they chain to, nor than old.MaxDuration: the
		// longest lifetime the policy allowed, or the backend's own bound
		// when it chose lifetimes itself (an ACME server may ignore the
		// one asked for). That bound, not the anchor's expiry, ends the
		// overlap: an anchor may be valid for decades, and is often
		// replaced precisely to stop trusting it.
		for _, c := range published {
			if slices.ContainsFunc(anchors, c.Equal) || retiringContains(retiring, c) {
				continue
			}
			until := c.NotAfter
			if lastExpiry := now.Add(overlap(old, next)); lastExpiry.Before(until) {
				until = lastExpiry
			}
			if until.After(now) {
				retiring = append(retiring, v1alpha1.RetiringCA{Certificate: string(encodePEM(c)), Until: ceilTime(until)})
			}
		}
		t.rotated = true
		t.reissueBefore = ptrTime(now)
		// The new CA's record starts now. What was seen since the start
		// may include the old CA's certificates: too long, never too short.
	case old.ConfigHash != next.ConfigHash:
		t.reconfigured = true
		t.reissueBefore = ptrTime(now)
		// Certificates already signed by this CA keep the lifetime the
		// old policy gave them.
		keepLongest(next, old)
	default:
		keepLongest(next, old)
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

// overlap is how long a CA that old signed with stays trusted once next
// replaces it: as long as the longest certificate it was seen to issue,
// for a backend that chooses lifetimes and whose every issuance was seen
// (old.IssuedLifetime set), else the longest it could have issued.
func overlap(old, next *v1alpha1.SigningState) time.Duration {
	if old.IssuedLifetime == nil {
		return old.MaxDuration.Duration
	}
	seen := old.IssuedLifetime.Duration
	if next.IssuedLifetime != nil {
		// Issued since the status was last written, by this controller.
		seen = max(seen, next.IssuedLifetime.Duration)
	}
	return seen
}

// keepLongest carries into next the longest lifetimes old recorded for the
// same CA: certificates it signed before keep theirs. A CA whose
// issuances were not all seen (no IssuedLifetime: a status from before it
// was recorded) stays so, as what it issued before is not known.
func keepLongest(next, old *v1alpha1.SigningState) {
	next.MaxDuration.Duration = max(next.MaxDuration.Duration, old.MaxDuration.Duration)
	switch {
	case old.IssuedLifetime == nil:
		next.IssuedLifetime = nil
	case next.IssuedLifetime != nil:
		next.IssuedLifetime.Duration = max(next.IssuedLifetime.Duration, old.IssuedLifetime.Duration)
	}
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
	ders, err := pki.CertificateDERs([]byte(pemText))
	if err != nil {
		return false
	}
	return slices.ContainsFunc(certs, func(c *x509.Certificate) bool { return bytes.Equal(c.Raw, ders[0]) })
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

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// configHash hashes what, besides the CA, shapes the certificates an issuer
// signs: which kind of backend it uses and its policy. Other settings
// (which Secret holds the CA, how a backend authenticates) change nothing a
// relying party sees, so they do not ask drivers to re-issue.
func configHash(s signer) string {
	pol, _ := json.Marshal(s.policy)
	sum := sha256.Sum256([]byte(s.kind + "\n" + string(pol)))
	return hex.EncodeToString(sum[:16])
}

// parsePEMCertificates parses a published trust bundle, which is empty
// before an issuer was first Ready.
func parsePEMCertificates(text string) ([]*x509.Certificate, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	return pki.ParseCertificates([]byte(text))
}

func encodePEM(c *x509.Certificate) []byte {
	return pki.EncodeCertificates(c)
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

package issuer

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
)

// IsReady reports whether iss's status says it can sign for its current
// spec.
func IsReady(iss v1alpha1.GenericIssuer) bool {
	cond := meta.FindStatusCondition(iss.GetStatus().Conditions, v1alpha1.ConditionReady)
	return cond != nil && cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == iss.GetGeneration()
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
	ders, err := pki.CertificateDERs(chain)
	if err != nil {
		return false, fmt.Errorf("the signed chain: %w", err)
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
	anchors, err := pki.ParseCertificates([]byte(bundle))
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

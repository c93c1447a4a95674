package podcertificate

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The API server's bounds on an issued PodCertificateRequest's status.
const (
	// DefaultMaxExpiration is spec.maxExpirationSeconds when it is unset;
	// the API server defaults it so.
	DefaultMaxExpiration = 24 * time.Hour
	// MinLifetime is the shortest certificate it accepts.
	MinLifetime = time.Hour
	// refreshMargin keeps beginRefreshAt this far from either end of the
	// certificate's lifetime.
	refreshMargin = 10 * time.Minute
)

// Backdate is how long before signing a pod certificate starts, for
// relying parties whose clocks run a little behind. The API server refuses
// a notBefore more than five minutes from its own clock, so it is well
// short of that, leaving room for the controller's and the API server's
// clocks to disagree.
const Backdate = 3 * time.Minute

// maxExpiration is the longest lifetime pcr accepts.
func maxExpiration(pcr *certificatesv1.PodCertificateRequest) time.Duration {
	if s := pcr.Spec.MaxExpirationSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return DefaultMaxExpiration
}

// lifetime is the lifetime to issue, backdate included: the longest both
// the request (maxExpiration) and the issuer (policyMax) accept, or an
// error when that is shorter than the API server accepts.
func lifetime(maxExpiration, policyMax time.Duration) (time.Duration, error) {
	l := min(maxExpiration, policyMax)
	if l < MinLifetime {
		return 0, fmt.Errorf("the issuer's policy allows certificates of at most %s, and pod certificates must live at least %s; raise policy.maxDuration", policyMax, MinLifetime)
	}
	return l, nil
}

// checkIssued checks that a certificate valid from notBefore to notAfter
// is one the API server accepts for a request of maxExpiration.
func checkIssued(notBefore, notAfter time.Time, maxExpiration time.Duration) error {
	switch l := notAfter.Sub(notBefore); {
	case l < MinLifetime:
		// A CA that expires within the hour clamps the certificate's
		// expiry to its own.
		return fmt.Errorf("the certificate would live %s, from %s to %s, and pod certificates must live at least %s; the issuer's CA expires too soon", l, notBefore.UTC().Format(time.RFC3339), notAfter.UTC().Format(time.RFC3339), MinLifetime)
	case l > maxExpiration:
		return fmt.Errorf("the certificate would live %s, longer than the request's maxExpirationSeconds allows (%s)", l, maxExpiration)
	}
	return nil
}

// refreshAt is when the kubelet should start replacing a certificate valid
// from notBefore to notAfter: renewBefore before expiry (a third of the
// lifetime when zero), up to a tenth of renewBefore earlier as jitter
// (spread by uid, so a fleet created at once does not refresh at once),
// and always within the bounds the API server sets. The kubelet adds
// jitter of its own.
func refreshAt(notBefore, notAfter time.Time, renewBefore time.Duration, uid types.UID) time.Time {
	if renewBefore <= 0 {
		renewBefore = notAfter.Sub(notBefore) / 3
	}
	at := notAfter.Add(-renewBefore).Add(-time.Duration(spread(uid) * float64(renewBefore/10)))
	if earliest := notBefore.Add(refreshMargin); at.Before(earliest) {
		at = earliest
	}
	if latest := notAfter.Add(-refreshMargin); at.After(latest) {
		at = latest
	}
	// The API keeps whole seconds; rounding down keeps it within bounds,
	// which are whole seconds as the certificate's validity is.
	return at.Truncate(time.Second)
}

// spread maps uid evenly to [0, 1).
func spread(uid types.UID) float64 {
	sum := sha256.Sum256([]byte(uid))
	return float64(binary.BigEndian.Uint64(sum[:])>>11) / (1 << 53)
}

package renewal

import (
	"math/rand/v2"
	"time"
)

// maxJitter is the largest share of the wait before a renewal that is taken
// off it, so volumes published together do not all renew in the same
// instant.
const maxJitter = 0.10

// Due is when a certificate valid from notBefore to notAfter should be
// renewed, before jitter: renewBefore ahead of expiry, or at two thirds of
// its lifetime if renewBefore is zero. An issuer may sign for less than was
// asked; a renewBefore that does not fit in the certificate's actual
// lifetime falls back to two thirds of it, so that a short certificate is not
// renewed over and over.
func Due(notBefore, notAfter time.Time, renewBefore time.Duration) time.Time {
	lifetime := notAfter.Sub(notBefore)
	if renewBefore > 0 && renewBefore < lifetime {
		return notAfter.Add(-renewBefore)
	}
	return notBefore.Add(lifetime * 2 / 3)
}

// Time is when to renew c, seen at now: Due, brought forward by a random
// part of up to a tenth of the time left until then, and never before now
// nor after expiry.
func Time(c Certificate, now time.Time, rnd *rand.Rand) time.Time {
	due := Due(c.NotBefore, c.NotAfter, c.RenewBefore)
	if due.After(c.NotAfter) {
		due = c.NotAfter
	}
	wait := due.Sub(now)
	if wait <= 0 {
		return now
	}
	return due.Add(-time.Duration(rnd.Float64() * maxJitter * float64(wait)))
}

// Backoff is how long to wait before retry number attempt (from 1) of a
// failed renewal: first, doubling each time, at most limit.
func Backoff(attempt int, first, limit time.Duration) time.Duration {
	d := first
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

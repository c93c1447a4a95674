package renewal

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// fixedSource makes a *rand.Rand whose Float64 is always the same: 0 for
// no jitter, math.MaxUint64 for (almost exactly) the most.
type fixedSource uint64

func (s fixedSource) Uint64() uint64 { return uint64(s) }

var (
	noJitter   = rand.New(fixedSource(0))
	fullJitter = rand.New(fixedSource(math.MaxUint64))
	t0         = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func TestTime(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Certificate
		now  time.Time
		rnd  *rand.Rand
		want time.Time
	}{{
		name: "without renew-before it renews at two thirds of the actual lifetime",
		c:    Certificate{NotBefore: t0, NotAfter: t0.Add(30 * time.Hour)},
		now:  t0, rnd: noJitter, want: t0.Add(20 * time.Hour),
	}, {
		name: "jitter brings it forward by at most a tenth of the wait",
		c:    Certificate{NotBefore: t0, NotAfter: t0.Add(30 * time.Hour)},
		now:  t0, rnd: fullJitter, want: t0.Add(18 * time.Hour),
	}, {
		name: "the jitter's share is of the time left, not of the lifetime",
		c:    Certificate{NotBefore: t0, NotAfter: t0.Add(30 * time.Hour)},
		now:  t0.Add(10 * time.Hour), rnd: fullJitter, want: t0.Add(19 * time.Hour),
	}, {
		name: "renew-before renews that long ahead of expiry",
		c:    Certificate{NotBefore: t0, NotAfter: t0.Add(30 * time.Hour), RenewBefore: time.Hour},
		now:  t0, rnd: noJitter, want: t0.Add(29 * time.Hour),
	}, {
		name: "a renew-before longer than the certificate the issuer gave falls back to two thirds",
		c:    Certificate{NotBefore: t0, NotAfter: t0.Add(30 * time.Minute), RenewBefore: time.Hour},
		now:  t0, rnd: noJitter, want: t0.Add(20 * time.Minute),
	}, {
		name: "a renewal already due is now",
		c:    Certificate{NotBefore: t0, NotAfter: t0.Add(30 * time.Hour)},
		now:  t0.Add(25 * time.Hour), rnd: fullJitter, want: t0.Add(25 * time.Hour),
	}, {
		name: "an expired certificate renews now",
		c:    Certificate{NotBefore: t0, NotAfter: t0.Add(time.Hour)},
		now:  t0.Add(2 * time.Hour), rnd: noJitter, want: t0.Add(2 * time.Hour),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := Time(tc.c, tc.now, tc.rnd)
			// The largest Float64 is a hair below 1.
			if d := got.Sub(tc.want); d < 0 || d > time.Millisecond {
				t.Errorf("Time = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTimeStaysWithinTheJitterWindowAndBeforeExpiry(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		lifetime := time.Duration(rnd.Int64N(int64(90*24*time.Hour))) + 10*time.Minute
		c := Certificate{NotBefore: t0, NotAfter: t0.Add(lifetime)}
		if rnd.IntN(2) == 0 {
			c.RenewBefore = time.Duration(rnd.Int64N(int64(lifetime)))
		}
		now := t0.Add(time.Duration(rnd.Int64N(int64(lifetime))))
		due := Due(c.NotBefore, c.NotAfter, c.RenewBefore)
		got := Time(c, now, rnd)
		earliest := now
		if due.After(now) {
			earliest = due.Add(-due.Sub(now) / 10)
		}
		if got.Before(earliest) || got.After(due) && got.After(now) || got.After(c.NotAfter) {
			t.Fatalf("Time(%+v, now %v) = %v, want within [%v, %v]", c, now, got, earliest, due)
		}
	}
}

func TestBackoff(t *testing.T) {
	for attempt, want := range map[int]time.Duration{
		1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 5: 160 * time.Second,
		6: 5 * time.Minute, 100: 5 * time.Minute,
	} {
		if got := Backoff(attempt, 10*time.Second, 5*time.Minute); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", attempt, got, want)
		}
	}
}

package renewal

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clocktesting "k8s.io/utils/clock/testing"
)

// call is one Renew the scheduler made.
type call struct {
	volumeID string
	at       time.Time
}

// fakeRenewer records calls and answers with result, which may block on
// ctx. It renews for a lifetime of 30 minutes from the fake clock's now.
type fakeRenewer struct {
	clock  *clocktesting.FakeClock
	calls  chan call
	mu     sync.Mutex
	result func(ctx context.Context) error
}

func newFakeRenewer(clk *clocktesting.FakeClock) *fakeRenewer {
	return &fakeRenewer{clock: clk, calls: make(chan call, 100)}
}

func (f *fakeRenewer) setResult(r func(ctx context.Context) error) {
	f.mu.Lock()
	f.result = r
	f.mu.Unlock()
}

func (f *fakeRenewer) Renew(ctx context.Context, volumeID string) (Certificate, error) {
	// The result is read before the call is reported, so a test that
	// changes it after seeing a call changes the next one.
	f.mu.Lock()
	result := f.result
	f.mu.Unlock()
	now := f.clock.Now()
	f.calls <- call{volumeID, now}
	if result != nil {
		if err := result(ctx); err != nil {
			return Certificate{}, err
		}
	}
	return Certificate{NotBefore: now, NotAfter: now.Add(30 * time.Minute)}, nil
}

// start runs a scheduler on a fake clock until the test ends.
func start(t *testing.T, opts Options) (*Scheduler, *clocktesting.FakeClock, *fakeRenewer) {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	opts.Clock = clk
	if opts.Rand == nil {
		opts.Rand = noJitter
	}
	opts.Logger = testr.New(t)
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r := newFakeRenewer(clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, r); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, clk, r
}

// waitForTimer waits until the scheduler sleeps on the fake clock, so that
// stepping the clock wakes it.
func waitForTimer(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("the scheduler never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func expectCall(t *testing.T, r *fakeRenewer, volumeID string, at time.Time) {
	t.Helper()
	select {
	case c := <-r.calls:
		if c.volumeID != volumeID || !c.at.Equal(at) {
			t.Fatalf("renewed %s at %v, want %s at %v", c.volumeID, c.at, volumeID, at)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s was not renewed at %v", volumeID, at)
	}
}

func expectNoCall(t *testing.T, r *fakeRenewer) {
	t.Helper()
	select {
	case c := <-r.calls:
		t.Fatalf("unexpected renewal of %s at %v", c.volumeID, c.at)
	case <-time.After(50 * time.Millisecond):
	}
}

// thirtyMinutes is a certificate from t0, due for renewal at t0+20m.
var thirtyMinutes = Certificate{NotBefore: t0, NotAfter: t0.Add(30 * time.Minute)}

func TestRenewsWhenDueAndThenAgainForTheNewCertificate(t *testing.T) {
	s, clk, r := start(t, Options{})
	s.Schedule("csi-1", thirtyMinutes)
	waitForTimer(t, clk)
	clk.Step(20*time.Minute - time.Second)
	expectNoCall(t, r)
	waitForTimer(t, clk)
	clk.Step(time.Second)
	expectCall(t, r, "csi-1", t0.Add(20*time.Minute))

	// The new certificate runs 30 minutes from its renewal.
	waitForTimer(t, clk)
	clk.Step(20 * time.Minute)
	expectCall(t, r, "csi-1", t0.Add(40*time.Minute))
}

func TestJitteredRenewalFallsInTheLastTenthBeforeItIsDue(t *testing.T) {
	for seed := uint64(0); seed < 5; seed++ {
		s, clk, r := start(t, Options{Rand: rand.New(rand.NewPCG(seed, seed))})
		s.Schedule("csi-1", thirtyMinutes)
		// Due at 20m; the jitter takes off up to 2m.
		waitForTimer(t, clk)
		clk.Step(18*time.Minute - time.Second)
		expectNoCall(t, r)
		waitForTimer(t, clk)
		clk.Step(2*time.Minute + time.Second)
		select {
		case c := <-r.calls:
			if c.at.Before(t0.Add(18*time.Minute)) || c.at.After(t0.Add(20*time.Minute)) {
				t.Fatalf("seed %d: renewed at %v", seed, c.at)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("seed %d: not renewed by the time it was due", seed)
		}
	}
}

func TestRateLimitHoldsUnderABurstOfDueVolumes(t *testing.T) {
	s, clk, r := start(t, Options{QPS: 1, Burst: 2})
	expired := Certificate{NotBefore: t0.Add(-time.Hour), NotAfter: t0}
	for _, id := range []string{"csi-1", "csi-2", "csi-3", "csi-4"} {
		s.Schedule(id, expired)
	}
	// The burst goes at once, then one a second.
	for range 2 {
		select {
		case <-r.calls:
		case <-time.After(5 * time.Second):
			t.Fatal("the burst was not renewed at once")
		}
	}
	expectNoCall(t, r)
	for i := 1; i <= 2; i++ {
		waitForTimer(t, clk)
		clk.Step(time.Second)
		select {
		case c := <-r.calls:
			if !c.at.Equal(t0.Add(time.Duration(i) * time.Second)) {
				t.Fatalf("renewal %d at %v", i+2, c.at)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("renewal %d never came", i+2)
		}
		expectNoCall(t, r)
	}
}

func TestFailedRenewalIsRetriedWithCappedBackoffAndCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	s, clk, r := start(t, Options{MinBackoff: 10 * time.Second, MaxBackoff: 30 * time.Second, Metrics: metrics})
	r.setResult(func(context.Context) error { return errors.New("the issuer is down") })
	s.Schedule("csi-1", thirtyMinutes)
	waitForTimer(t, clk)
	clk.Step(20 * time.Minute)
	at := t0.Add(20 * time.Minute)
	expectCall(t, r, "csi-1", at)
	for _, backoff := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second} {
		waitForTimer(t, clk)
		clk.Step(backoff - time.Second)
		expectNoCall(t, r)
		waitForTimer(t, clk)
		clk.Step(time.Second)
		at = at.Add(backoff)
		expectCall(t, r, "csi-1", at)
	}

	r.setResult(nil)
	waitForTimer(t, clk)
	clk.Step(30 * time.Second)
	at = at.Add(30 * time.Second)
	expectCall(t, r, "csi-1", at)
	// After a success the next renewal is for the new certificate.
	waitForTimer(t, clk)
	clk.Step(20 * time.Minute)
	expectCall(t, r, "csi-1", at.Add(20*time.Minute))

	waitForTimer(t, clk)
	if got := counted(t, metrics, resultFailed); got != 5 {
		t.Errorf("failed renewals counted: %v, want 5", got)
	}
	if got := counted(t, metrics, resultRenewed); got != 2 {
		t.Errorf("renewals counted: %v, want 2", got)
	}
}

func counted(t *testing.T, m *Metrics, result string) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.renewals.WithLabelValues(result).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}

func TestForgetCancelsScheduledAndRunningRenewals(t *testing.T) {
	t.Run("a forgotten volume is not renewed", func(t *testing.T) {
		s, clk, r := start(t, Options{})
		s.Schedule("csi-1", thirtyMinutes)
		s.Schedule("csi-2", Certificate{NotBefore: t0, NotAfter: t0.Add(45 * time.Minute)})
		s.Forget("csi-1")
		waitForTimer(t, clk)
		clk.Step(30 * time.Minute)
		expectCall(t, r, "csi-2", t0.Add(30*time.Minute))
		expectNoCall(t, r)
	})
	t.Run("a renewal in progress is cancelled and not retried", func(t *testing.T) {
		s, clk, r := start(t, Options{})
		cancelled := make(chan struct{})
		r.setResult(func(ctx context.Context) error {
			<-ctx.Done()
			close(cancelled)
			return ctx.Err()
		})
		s.Schedule("csi-1", thirtyMinutes)
		waitForTimer(t, clk)
		clk.Step(20 * time.Minute)
		expectCall(t, r, "csi-1", t0.Add(20*time.Minute))
		s.Forget("csi-1")
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the renewal in progress was not cancelled")
		}
		clk.Step(time.Hour)
		expectNoCall(t, r)
	})
	t.Run("a volume gone is not retried", func(t *testing.T) {
		s, clk, r := start(t, Options{})
		r.setResult(func(context.Context) error { return ErrVolumeGone })
		s.Schedule("csi-1", thirtyMinutes)
		waitForTimer(t, clk)
		clk.Step(20 * time.Minute)
		expectCall(t, r, "csi-1", t0.Add(20*time.Minute))
		expectNoCall(t, r)
		if clk.HasWaiters() {
			t.Fatal("the scheduler still has a renewal queued")
		}
	})
}

func TestNewRejectsNegativeLimits(t *testing.T) {
	if _, err := New(Options{QPS: -1}); err == nil {
		t.Error("negative QPS accepted")
	}
}

// halfJitter draws 0.5: renewals come a twentieth of the wait early, and
// early re-issues in the middle of the spread.
var halfJitter = rand.New(fixedSource(1 << 52))

func TestExpediteRenewsAtARandomTimeWithinTheSpread(t *testing.T) {
	s, clk, r := start(t, Options{Rand: halfJitter, ReissueSpread: 10 * time.Minute})
	s.Schedule("csi-1", thirtyMinutes) // due at 19m with this jitter
	s.Expedite("csi-1")
	waitForTimer(t, clk)
	clk.Step(5*time.Minute - time.Second)
	expectNoCall(t, r)
	waitForTimer(t, clk)
	clk.Step(time.Second)
	expectCall(t, r, "csi-1", t0.Add(5*time.Minute))
}

func TestExpediteNeverPostponesARenewal(t *testing.T) {
	s, clk, r := start(t, Options{Rand: halfJitter, ReissueSpread: time.Hour})
	s.Schedule("csi-1", thirtyMinutes)
	s.Expedite("csi-1") // would be at 30m, after the renewal due at 19m
	waitForTimer(t, clk)
	clk.Step(19 * time.Minute)
	expectCall(t, r, "csi-1", t0.Add(19*time.Minute))
}

func TestACertificateToReissueIsScheduledWithinTheSpread(t *testing.T) {
	s, clk, r := start(t, Options{Rand: halfJitter, ReissueSpread: 10 * time.Minute})
	c := thirtyMinutes
	c.Reissue = true
	s.Schedule("csi-1", c)
	waitForTimer(t, clk)
	clk.Step(5 * time.Minute)
	expectCall(t, r, "csi-1", t0.Add(5*time.Minute))
}

func TestExpediteWithoutSpreadRenewsAtOnce(t *testing.T) {
	s, _, r := start(t, Options{})
	s.Schedule("csi-1", thirtyMinutes)
	s.Expedite("csi-1")
	expectCall(t, r, "csi-1", t0)
}

func TestExpediteDuringARenewalRenewsItsOutcomeAgain(t *testing.T) {
	s, _, r := start(t, Options{})
	release := make(chan struct{})
	r.setResult(func(context.Context) error { <-release; return nil })
	s.Schedule("csi-1", Certificate{NotBefore: t0.Add(-time.Hour), NotAfter: t0})
	expectCall(t, r, "csi-1", t0)
	// The issuer asked for its certificates back while this renewal's
	// request may already have been made.
	s.Expedite("csi-1")
	r.setResult(nil)
	close(release)
	expectCall(t, r, "csi-1", t0)
	expectNoCall(t, r)
}

func TestRenewNowRenewsAtOnceWhateverTheSpread(t *testing.T) {
	s, clk, r := start(t, Options{Rand: halfJitter, ReissueSpread: time.Hour})
	s.Schedule("csi-1", thirtyMinutes)
	s.Schedule("csi-2", Certificate{NotBefore: t0, NotAfter: t0.Add(3 * time.Hour)})
	waitForTimer(t, clk)
	s.RenewNow("csi-1")
	expectCall(t, r, "csi-1", t0)
	expectNoCall(t, r)
	// csi-1's new certificate is renewed when it is due, as any other.
	waitForTimer(t, clk)
	clk.Step(19 * time.Minute)
	expectCall(t, r, "csi-1", t0.Add(19*time.Minute))
	expectNoCall(t, r)
}

func TestRenewNowGoesThroughTheRateLimit(t *testing.T) {
	s, clk, r := start(t, Options{QPS: 1, Burst: 1})
	for _, id := range []string{"csi-1", "csi-2"} {
		s.Schedule(id, thirtyMinutes)
	}
	waitForTimer(t, clk)
	s.RenewNow("csi-1")
	s.RenewNow("csi-2")
	expectCall(t, r, "csi-1", t0)
	expectNoCall(t, r)
	waitForTimer(t, clk)
	clk.Step(time.Second)
	expectCall(t, r, "csi-2", t0.Add(time.Second))
}

func TestRenewNowDuringAFailingRenewalRetriesAtOnceNotAfterTheBackoff(t *testing.T) {
	s, _, r := start(t, Options{MinBackoff: time.Hour})
	release := make(chan struct{})
	r.setResult(func(context.Context) error { <-release; return errors.New("volume busy") })
	s.Schedule("csi-1", Certificate{NotBefore: t0.Add(-time.Hour), NotAfter: t0})
	expectCall(t, r, "csi-1", t0)
	// What the certificate must say changed while this renewal ran, which
	// may have read what was there before.
	s.RenewNow("csi-1")
	r.setResult(nil)
	close(release)
	expectCall(t, r, "csi-1", t0)
	expectNoCall(t, r)
}

func TestStatusTellsTheNextRenewalAndTheLastFailureUntilASuccess(t *testing.T) {
	s, clk, r := start(t, Options{MinBackoff: 10 * time.Second})
	if _, ok := s.Status("csi-1"); ok {
		t.Fatal("a volume never scheduled has a status")
	}
	s.Schedule("csi-1", thirtyMinutes)
	if st, ok := s.Status("csi-1"); !ok || !st.Next.Equal(t0.Add(20*time.Minute)) || st.Renewing || st.Failures != 0 || st.LastError != nil {
		t.Fatalf("scheduled: %+v (%v), want next at 20m and no failure", st, ok)
	}

	release := make(chan struct{})
	r.setResult(func(context.Context) error { <-release; return errors.New("the issuer is down") })
	waitForTimer(t, clk)
	clk.Step(20 * time.Minute)
	expectCall(t, r, "csi-1", t0.Add(20*time.Minute))
	if st, _ := s.Status("csi-1"); !st.Renewing || !st.Next.IsZero() {
		t.Errorf("while renewing: %+v, want Renewing and no next time", st)
	}
	close(release)
	waitForTimer(t, clk)
	failedAt := t0.Add(20 * time.Minute)
	st, _ := s.Status("csi-1")
	if st.Renewing || st.Failures != 1 || st.LastError == nil || st.LastError.Error() != "the issuer is down" ||
		!st.LastFailure.Equal(failedAt) || !st.Next.Equal(failedAt.Add(10*time.Second)) {
		t.Fatalf("after a failure: %+v, want one failure with its error and the retry 10s later", st)
	}

	r.setResult(nil)
	clk.Step(10 * time.Second)
	expectCall(t, r, "csi-1", failedAt.Add(10*time.Second))
	waitForTimer(t, clk)
	if st, _ := s.Status("csi-1"); st.Failures != 0 || st.LastError != nil || !st.LastFailure.IsZero() {
		t.Errorf("after a success: %+v, want the failure forgotten", st)
	}

	s.Forget("csi-1")
	if _, ok := s.Status("csi-1"); ok {
		t.Error("a forgotten volume still has a status")
	}
}

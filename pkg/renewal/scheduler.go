// Package renewal renews the node's certificates before they expire: one
// scheduler for the whole driver orders volumes by renewal time, limits how
// fast renewals reach the API server, and retries failures with backoff.
//
// It knows neither gRPC nor certificates' contents; a Renewer (the manager)
// does the issuance.
package renewal

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/certmint/certmint/pkg/logkeys"
)

// Certificate is what the scheduler needs to know of a volume's current
// certificate.
type Certificate struct {
	NotBefore, NotAfter time.Time
	// RenewBefore is the renew-before attribute; zero means at two thirds
	// of the lifetime.
	RenewBefore time.Duration
	// Reissue: the issuer asked for the certificate to be replaced early
	// (its status.reissueBefore is after the certificate's request), so it
	// is renewed within the reissue spread.
	Reissue bool
}

// ErrVolumeGone means the volume was unpublished; there is nothing left to
// renew.
var ErrVolumeGone = errors.New("volume is gone")

// Renewer issues a new certificate for a volume and replaces its files. On
// error the volume's files must be left as they were.
type Renewer interface {
	Renew(ctx context.Context, volumeID string) (Certificate, error)
}

// DefaultReissueSpread is the --reissue-spread a driver uses unless told
// otherwise: long enough that a node does not re-issue all its volumes in
// one burst, short enough that a rotation completes within a minute. It is
// not the zero value's meaning, which is at once.
const DefaultReissueSpread = 30 * time.Second

// Defaults for the zero values of Options.
const (
	DefaultQPS        = 20
	DefaultBurst      = 40
	DefaultMinBackoff = 10 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// DefaultTimeout bounds one renewal; a signer that does not answer must
	// not hold a volume forever.
	DefaultTimeout = 2 * time.Minute
)

// Options configure a Scheduler. Zero values mean the defaults above.
type Options struct {
	// QPS and Burst limit how many renewals start per second, node-wide.
	QPS   float64
	Burst int
	// MinBackoff and MaxBackoff bound the wait before retrying a failed
	// renewal; it doubles with each failure.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds one renewal.
	Timeout time.Duration
	// ReissueSpread is the window over which early re-issues are spread
	// uniformly at random, so that an issuer asking all its certificates
	// back does not have every node renew at once; zero means at once.
	ReissueSpread time.Duration
	// Clock; nil means the real clock.
	Clock clock.Clock
	// Rand draws the jitter; nil means a randomly seeded source.
	Rand *rand.Rand
	// Logger; zero discards.
	Logger logr.Logger
	// Metrics; nil records nothing.
	Metrics *Metrics
}

// Scheduler renews volumes' certificates when they are due. Schedule and
// Forget may be called before and while Run runs.
type Scheduler struct {
	opts    Options
	limiter *rate.Limiter

	mu      sync.Mutex
	queue   queue
	volumes map[string]*entry
	// wake tells Run the head of the queue may have changed.
	wake chan struct{}
}

// entry is one volume's place in the queue.
type entry struct {
	volumeID string
	at       time.Time
	// index is the entry's position in the queue; -1 while it is renewing.
	index int
	// failures counts renewals failed in a row.
	failures int
	// cancel stops a renewal in progress.
	cancel context.CancelFunc
	// expedite: Expedite was called while the volume was renewing; now:
	// RenewNow was.
	expedite bool
	now      bool
	// lastErr is why the last renewal failed, at lastFailure; nil once one
	// succeeds.
	lastErr     error
	lastFailure time.Time
}

// New returns a Scheduler.
func New(opts Options) (*Scheduler, error) {
	if opts.QPS == 0 {
		opts.QPS = DefaultQPS
	}
	if opts.Burst == 0 {
		opts.Burst = DefaultBurst
	}
	if opts.QPS < 0 || opts.Burst < 0 || opts.ReissueSpread < 0 {
		return nil, fmt.Errorf("renewal: QPS (%v), Burst (%d) and ReissueSpread (%v) must not be negative", opts.QPS, opts.Burst, opts.ReissueSpread)
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Scheduler{
		opts:    opts,
		limiter: rate.NewLimiter(rate.Limit(opts.QPS), opts.Burst),
		volumes: map[string]*entry{},
		wake:    make(chan struct{}, 1),
	}, nil
}

// Schedule (re)schedules volumeID's renewal for certificate c. A renewal of
// the volume in progress is cancelled: c is newer.
func (s *Scheduler) Schedule(volumeID string, c Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget(volumeID)
	e := &entry{volumeID: volumeID, at: s.time(c, s.opts.Clock.Now())}
	s.volumes[volumeID] = e
	heap.Push(&s.queue, e)
	s.poke()
	s.opts.Logger.V(1).Info("Renewal scheduled", logkeys.VolumeID, volumeID, logkeys.RenewAt, e.at)
}

// Expedite has volumeID renewed early, at a random time within the reissue
// spread from now, unless it is due sooner anyway. A renewal in progress is
// not cancelled, but its outcome is renewed again within the spread: the
// caller found the volume's certificate outdated, and that renewal may have
// started before.
func (s *Scheduler) Expedite(volumeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.volumes[volumeID]
	if e == nil {
		return
	}
	if e.index < 0 {
		e.expedite = true
		return
	}
	if at := s.reissueTime(s.opts.Clock.Now()); at.Before(e.at) {
		e.at = at
		heap.Fix(&s.queue, e.index)
		s.poke()
		s.opts.Logger.V(1).Info("Early re-issue scheduled", logkeys.VolumeID, volumeID, logkeys.RenewAt, e.at)
	}
}

// RenewNow has volumeID renewed as soon as the node's rate limit allows:
// what its certificate must say has changed (its pod's addresses appeared).
// A renewal in progress is not cancelled, but the volume is renewed again
// at once after it, as it may have read what was there before the change.
func (s *Scheduler) RenewNow(volumeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.volumes[volumeID]
	if e == nil {
		return
	}
	if e.index < 0 {
		e.now = true
		return
	}
	if now := s.opts.Clock.Now(); now.Before(e.at) {
		e.at = now
		heap.Fix(&s.queue, e.index)
		s.poke()
		s.opts.Logger.V(1).Info("Renewal brought forward to now", logkeys.VolumeID, volumeID)
	}
}

// time is when to renew c, seen at now.
func (s *Scheduler) time(c Certificate, now time.Time) time.Time {
	at := Time(c, now, s.opts.Rand)
	if c.Reissue {
		if r := s.reissueTime(now); r.Before(at) {
			at = r
		}
	}
	return at
}

// reissueTime draws an early re-issue's time, uniformly over the spread.
func (s *Scheduler) reissueTime(now time.Time) time.Time {
	return now.Add(time.Duration(s.opts.Rand.Float64() * float64(s.opts.ReissueSpread)))
}

// Status is where a volume stands in the schedule.
type Status struct {
	// Next is when its next renewal starts, at the earliest (the rate
	// limit may hold it back); zero while one runs.
	Next time.Time
	// Renewing: a renewal is running now.
	Renewing bool
	// Failures counts the renewals failed in a row, the last of them at
	// LastFailure with LastError; zero, and nil, once one succeeds.
	Failures    int
	LastError   error
	LastFailure time.Time
}

// Status reports where volumeID stands; false if it is not scheduled.
func (s *Scheduler) Status(volumeID string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.volumes[volumeID]
	if e == nil {
		return Status{}, false
	}
	st := Status{Renewing: e.index < 0, Failures: e.failures, LastError: e.lastErr, LastFailure: e.lastFailure}
	if !st.Renewing {
		st.Next = e.at
	}
	return st, true
}

// Forget stops renewing volumeID and cancels a renewal in progress.
func (s *Scheduler) Forget(volumeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget(volumeID)
	s.poke()
}

func (s *Scheduler) forget(volumeID string) {
	e := s.volumes[volumeID]
	if e == nil {
		return
	}
	delete(s.volumes, volumeID)
	if e.index >= 0 {
		heap.Remove(&s.queue, e.index)
	}
	if e.cancel != nil {
		e.cancel()
	}
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run renews volumes with r as they come due, until ctx ends. It returns
// once the renewals in progress have stopped.
func (s *Scheduler) Run(ctx context.Context, r Renewer) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		e, wait := s.next()
		if e == nil {
			if !s.sleep(ctx, wait) {
				return
			}
			continue
		}
		if err := s.waitForToken(ctx); err != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		if !s.start(e, cancel) {
			// Forgotten or rescheduled while waiting for the limiter.
			cancel()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			c, err := r.Renew(rctx, e.volumeID)
			if ctx.Err() != nil {
				// Shutting down: the renewal was cut short, it did not fail.
				return
			}
			s.finish(e, c, err)
		}()
	}
}

// sleep waits until wait has passed (forever if negative), the queue
// changes or ctx ends; false if ctx ended.
func (s *Scheduler) sleep(ctx context.Context, wait time.Duration) bool {
	var timer <-chan time.Time
	if wait >= 0 {
		t := s.opts.Clock.NewTimer(wait)
		defer t.Stop()
		timer = t.C()
	}
	select {
	case <-ctx.Done():
		return false
	case <-s.wake:
	case <-timer:
	}
	return true
}

// next returns the volume to renew now, or how long to wait for the next
// one (negative for an empty queue). The volume stays queued until start.
func (s *Scheduler) next() (*entry, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil, -1
	}
	head := s.queue[0]
	if wait := head.at.Sub(s.opts.Clock.Now()); wait > 0 {
		return nil, wait
	}
	return head, 0
}

// start takes e off the queue for renewal, unless it is no longer the
// volume's current entry.
func (s *Scheduler) start(e *entry, cancel context.CancelFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.volumes[e.volumeID] != e || e.index < 0 {
		return false
	}
	heap.Remove(&s.queue, e.index)
	e.cancel = cancel
	return true
}

// waitForToken waits for the rate limiter on the scheduler's clock.
func (s *Scheduler) waitForToken(ctx context.Context) error {
	// New makes Burst at least 1, so a reservation of one token always
	// succeeds.
	now := s.opts.Clock.Now()
	res := s.limiter.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	if delay <= 0 {
		return nil
	}
	t := s.opts.Clock.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		res.CancelAt(s.opts.Clock.Now())
		return ctx.Err()
	}
}

// finish queues e's next renewal: when the new certificate is due, or after
// a backoff when this one failed.
func (s *Scheduler) finish(e *entry, c Certificate, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	log := s.opts.Logger.WithValues(logkeys.VolumeID, e.volumeID)
	if s.volumes[e.volumeID] != e {
		// Unpublished or published anew meanwhile; the outcome is moot.
		return
	}
	e.cancel = nil
	now := s.opts.Clock.Now()
	// A failed renewal is retried with its backoff anyway, unless RenewNow
	// asked while it ran: it may have failed only because the caller held
	// the volume.
	c.Reissue = c.Reissue || e.expedite
	renewNow := e.now
	e.expedite, e.now = false, false
	switch {
	case err == nil:
		s.opts.Metrics.observe(resultRenewed)
		e.failures = 0
		e.lastErr, e.lastFailure = nil, time.Time{}
		e.at = s.time(c, now)
		log.V(1).Info("Next renewal scheduled", logkeys.NotAfter, c.NotAfter, logkeys.RenewAt, e.at)
	case errors.Is(err, ErrVolumeGone):
		delete(s.volumes, e.volumeID)
		log.V(1).Info("Volume gone; renewal stopped")
		return
	default:
		s.opts.Metrics.observe(resultFailed)
		e.failures++
		e.lastErr, e.lastFailure = err, now
		backoff := Backoff(e.failures, s.opts.MinBackoff, s.opts.MaxBackoff)
		e.at = now.Add(backoff)
		// The old files stay in place: the Renewer left them untouched.
		log.Error(err, "Renewing the certificate failed; the current files stay", logkeys.Failures, e.failures, logkeys.RetryIn, backoff.String())
	}
	if renewNow {
		e.at = now
	}
	heap.Push(&s.queue, e)
	s.poke()
}

// queue is a min-heap of entries by renewal time.
type queue []*entry

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *queue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*q = old[:len(old)-1]
	return e
}

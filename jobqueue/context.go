package jobqueue

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"
)

// jobCtx is the context a handler runs with. It is one small allocation per
// attempt: its done channel is made only if the handler asks for it, its
// deadline is enforced by the worker's reusable timer, and it implements
// the AfterFunc hook of package context so contexts derived from it need no
// goroutine to follow its cancellation.
type jobCtx struct {
	w        *worker
	lease    Lease
	job      *Job
	attempt  int
	deadline time.Time

	mu     sync.Mutex
	done   chan struct{}
	err    error // context.Canceled or context.DeadlineExceeded once done
	cause  error // ErrCanceled, ErrClosed or context.DeadlineExceeded
	afters map[*afterFunc]struct{}
}

type afterFunc struct{ f func() }

type jobCtxKey struct{}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *jobCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *jobCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.err != nil {
			return closedChan
		}
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *jobCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *jobCtx) Value(key any) any {
	if key == (jobCtxKey{}) {
		return c
	}
	return nil
}

func (c *jobCtx) String() string { return "jobqueue.jobContext(" + c.job.ID + ")" }

// AfterFunc arranges for f to run in its own goroutine once c is done, as
// context.AfterFunc does; package context uses it to propagate cancellation.
func (c *jobCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f}
	if c.afters == nil {
		c.afters = make(map[*afterFunc]struct{})
	}
	c.afters[a] = struct{}{}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.afters[a]
		delete(c.afters, a)
		return ok
	}
}

// cancel ends the context; the first cause wins.
func (c *jobCtx) cancel(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.cause = cause
	c.err = context.Canceled
	if cause == context.DeadlineExceeded {
		c.err = context.DeadlineExceeded
	}
	if c.done != nil {
		close(c.done)
	}
	afters := c.afters
	c.afters = nil
	c.mu.Unlock()
	for a := range afters {
		go a.f()
	}
}

func (c *jobCtx) causeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Progress reports the progress of the running job whose handler context
// is ctx (or derives from it): percent (clamped to 0-100) and a message
// are stored with the job and sent to subscribers as an EventProgress. It
// returns ErrNotInJob if ctx is not a handler's context, an error for a
// percent that is not a number (NaN), or the backend's error. Each call costs a backend update and, when someone subscribes, an
// event; report at a human rate (a few times per second), not per item.
func Progress(ctx context.Context, percent float64, message string) error {
	c, ok := ctx.Value(jobCtxKey{}).(*jobCtx)
	if !ok {
		return ErrNotInJob
	}
	if math.IsNaN(percent) {
		return errors.New("jobqueue: Progress with a percent that is not a number")
	}
	percent = min(max(percent, 0), 100)
	return c.w.q.progress(c, percent, message)
}

// JobFromContext returns the job a handler context belongs to and the
// attempt number, or ok false if ctx is not (derived from) a handler's
// context.
func JobFromContext(ctx context.Context) (job *Job, attempt int, ok bool) {
	c, ok := ctx.Value(jobCtxKey{}).(*jobCtx)
	if !ok {
		return nil, 0, false
	}
	return c.job, c.attempt, true
}

// progress stores and publishes a handler's progress report.
func (q *Queue) progress(c *jobCtx, percent float64, msg string) error {
	if err := c.lease.Progress(context.Background(), percent, msg); err != nil {
		return err
	}
	if q.listening(false) {
		q.publish(&Event{Kind: EventProgress, JobID: c.job.ID, Type: c.job.Type, Owner: c.job.Owner, Priority: c.job.Priority,
			State: StateRunning, Attempt: c.attempt, Progress: percent, Message: msg, Time: clockNow()})
	}
	return nil
}

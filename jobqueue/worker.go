package jobqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/corework/corework/panics"
)

// worker is one of the Queue's fixed worker goroutines. It fetches one job
// at a time, so a worker never holds a low job while a higher one waits.
// Its counters and histograms are written by it alone and read by Stats.
type worker struct {
	q       *Queue
	ctx     context.Context        // its fetches' context: q.fetchCtx's child, ended to retire it
	cancel  context.CancelFunc     // ends ctx
	retired atomic.Bool            // told to exit by the autoscaler
	done    chan struct{}          // closed when its goroutine has exited
	cur     atomic.Pointer[jobCtx] // the running job's context, nil when idle
	timer   *time.Timer            // enforces the running job's deadline
	buf     [1]Lease

	counters
	rate rate
	wait histogram
	run  histogram
}

// startWorker starts w's goroutine (a new worker, or a retired one that
// has exited); q.life is held, and q.live counts w already.
func (q *Queue) startWorker(w *worker) {
	w.ctx, w.cancel = context.WithCancel(q.fetchCtx)
	w.done = make(chan struct{})
	w.retired.Store(false)
	go w.loop()
}

// retire tells w to exit once its running job (if any) ends; q.life is
// held.
func (w *worker) retire() {
	w.retired.Store(true)
	w.cancel()
}

// exited reports whether w's goroutine has returned.
func (w *worker) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *worker) loop() {
	q := w.q
	defer q.workerExited()
	defer close(w.done)
	defer w.cancel()
	if w.timer == nil {
		w.timer = time.AfterFunc(time.Hour, w.onTimer)
	}
	w.timer.Stop()
	defer w.timer.Stop()
	for {
		if q.fetchCtx.Err() != nil && (q.cfg.ShutdownPolicy == LeavePending || q.hardStop.Load()) {
			return
		}
		if w.retired.Load() && q.fetchCtx.Err() == nil {
			return // retired by the autoscaler (at Shutdown, drain as the others do)
		}
		leases, err := q.backend.Fetch(w.ctx, w.buf[:0], 1)
		for i, l := range leases {
			w.runJob(l)
			w.buf[i] = nil
		}
		if err == nil {
			if q.fetchFail.Load() && q.fetchFail.Swap(false) {
				q.log.Info("backend fetch recovered")
			}
			continue
		}
		if q.fetchCtx.Err() != nil {
			if len(leases) == 0 {
				return // stopping, and nothing left to drain
			}
			continue
		}
		if w.ctx.Err() != nil {
			continue // retired: the check above ends the loop
		}
		if errors.Is(err, ErrClosed) {
			return
		}
		// A transient backend error: wait a little before fetching again.
		err = fmt.Errorf("jobqueue: fetch: %w", err)
		if !q.fetchFail.Swap(true) {
			q.logBackendError(nil, 0, "backend fetch failed; retrying every 100ms", err)
		}
		q.reportError(nil, 0, err)
		select {
		case <-time.After(100 * time.Millisecond):
		case <-q.fetchCtx.Done():
		}
	}
}

// onTimer runs on the timer's goroutine: it times out the running job if
// its deadline has passed (a late firing for a previous job is ignored).
func (w *worker) onTimer() {
	c := w.cur.Load()
	if c != nil && !c.deadline.IsZero() && !clockNow().Before(c.deadline) {
		c.cancel(context.DeadlineExceeded)
	}
}

// runJob runs one leased job to the end of its attempt.
func (w *worker) runJob(l Lease) {
	q := w.q
	job := l.Job()
	attempt := l.Attempt()
	e := q.entry(job.Type)
	start := clockNow()
	if attempt == 1 {
		ready := job.SubmittedAt
		if job.RunAt.After(ready) {
			ready = job.RunAt
		}
		d := start.Sub(ready)
		w.wait.record(d)
		q.levelWait[job.Priority].record(d)
	}
	if e == nil {
		err := fmt.Errorf("%w %q", ErrNoHandler, job.Type)
		q.reportError(job, attempt, err)
		w.end(l, nil, start, EventFailed, StateFailed, nil, err, 0)
		return
	}

	c := &jobCtx{w: w, lease: l, job: job, attempt: attempt}
	if job.Timeout > 0 {
		c.deadline = start.Add(job.Timeout)
		w.timer.Reset(job.Timeout)
	}
	w.cur.Store(c)
	if q.npending.Load() > 0 {
		q.claimCancel(c)
	}
	if q.hardStop.Load() {
		c.cancel(ErrClosed)
	}
	if q.listening(false) {
		q.publish(&Event{Kind: EventStarted, JobID: job.ID, Type: job.Type, Owner: job.Owner, Priority: job.Priority,
			State: StateRunning, Attempt: attempt, Time: start})
	}

	res, err := call(e.h, c, job)
	if err != nil {
		q.logPanic(job, attempt, err)
	}

	w.cur.Store(nil)
	if job.Timeout > 0 {
		w.timer.Stop()
	}
	if q.npending.Load() > 0 {
		q.dropCancel(job.ID)
	}
	cause := c.causeErr()
	if err == nil && q.cfg.MaxResult >= 0 && len(res) > q.cfg.MaxResult {
		// The handler finished, but its result cannot be kept: a failure
		// for good, unless Cancel was called meanwhile (a timeout or
		// Shutdown changes nothing, as it came too late).
		err = Permanent(fmt.Errorf("%w: %d bytes, more than %d", ErrResultTooLarge, len(res), q.cfg.MaxResult))
		res = nil
		if cause != ErrCanceled {
			cause = nil
		}
	}
	if err == nil && len(res) > 0 && !json.Valid(res) {
		// A HandlerFunc returned bytes that are not JSON: they could not
		// be stored, listed or sent in an event. A failure for good.
		err = Permanent(fmt.Errorf("%w: the handler of %s returned %d bytes that are not JSON", ErrBadResult, job.Type, len(res)))
		res = nil
		if cause != ErrCanceled {
			cause = nil
		}
	}
	if err == nil && cause == nil {
		w.end(l, e, start, EventSucceeded, StateSucceeded, res, nil, 0)
		return
	}
	switch cause {
	case ErrCanceled:
		w.end(l, e, start, EventCanceled, StateCanceled, nil, ErrCanceled, 0)
		return
	case ErrClosed:
		if err == nil {
			w.end(l, e, start, EventSucceeded, StateSucceeded, res, nil, 0)
			return
		}
		// Interrupted by Shutdown: back to pending for a later run.
		q.interrupted.Add(1)
		w.end(l, e, start, 0, StatePending, nil, fmt.Errorf("jobqueue: interrupted by shutdown: %w", err), 0)
		return
	case context.DeadlineExceeded:
		if err == nil {
			err = context.DeadlineExceeded
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
		err = fmt.Errorf("jobqueue: timed out after %v: %w", job.Timeout, err)
	}
	q.reportError(job, attempt, err)
	if IsPermanent(err) || attempt >= job.MaxAttempts {
		w.end(l, e, start, EventFailed, StateFailed, nil, err, 0)
		return
	}
	w.end(l, e, start, EventRetrying, StateRetrying, nil, err, q.backoff(attempt, err))
}

// call runs the handler, turning a panic into a *panics.Error (source
// "jobqueue", task the job type).
func call(h Handler, ctx context.Context, job *Job) (res json.RawMessage, err error) {
	defer func() {
		if v := recover(); v != nil {
			res, err = nil, panics.New("jobqueue", job.Type, v)
		}
	}()
	return h.ProcessJob(ctx, job)
}

// end counts the outcome, settles the lease and publishes the event. The
// counters move before the lease is settled, so Stats read after Wait
// returns include the job. kind 0 with StatePending returns the job to the
// backend (shutdown).
func (w *worker) end(l Lease, e *entry, start time.Time, kind EventKind, st State, res json.RawMessage, err error, delay time.Duration) {
	q := w.q
	job := l.Job()
	now := clockNow()
	if e != nil {
		d := now.Sub(start)
		w.run.record(d)
		e.run.record(d)
	}
	if kind != 0 {
		q.count(w, e, job, kind)
	}
	if kind.Final() {
		w.rate.tick(now)
	}
	ctx := context.Background()
	var berr error
	// Read before the lease is settled: once it is, the job may be leased
	// again (a retry) and the lease's attempt count move.
	attempt := l.Attempt()
	ev := Event{Kind: kind, JobID: job.ID, Type: job.Type, Owner: job.Owner, Priority: job.Priority, State: st, Attempt: attempt, Time: now}
	logged := err
	err = withStack(err)
	if err != nil {
		ev.Error = err.Error()
	}
	switch st {
	case StateSucceeded:
		berr = l.Ack(ctx, res)
		ev.Result = res
	case StateRetrying:
		// Published before Nack so it precedes the next attempt's events.
		ev.NextRunAt = now.Add(delay)
		if q.listening(false) {
			q.publish(&ev)
		}
		berr = l.Nack(ctx, delay, err)
	case StatePending:
		berr = l.Nack(ctx, 0, err)
	default:
		berr = l.Term(ctx, st, err)
	}
	if errors.Is(berr, ErrCanceled) {
		// Cancel reached the backend before the lease was settled.
		if kind == EventSucceeded {
			q.uncount(w, e, job, kind)
		}
		q.count(w, e, job, EventCanceled)
		if !kind.Final() {
			w.rate.tick(now)
		}
		kind, ev.Kind, ev.State, ev.Result, ev.Error, ev.NextRunAt = EventCanceled, EventCanceled, StateCanceled, nil, ErrCanceled.Error(), time.Time{}
	} else if berr != nil {
		berr = fmt.Errorf("jobqueue: settling job %s as %s: %w", job.ID, st, berr)
		q.logBackendError(job, attempt, "settling job failed", berr)
		q.reportError(job, attempt, berr)
	}
	if kind != EventSucceeded && (berr == nil || kind == EventCanceled) {
		w.logOutcome(job, attempt, kind, st, logged, delay)
	}
	if kind.Final() && q.listening(true) {
		q.publish(&ev)
	}
}

// logPanic logs err with its stack if it is (or wraps) a *panics.Error.
func (q *Queue) logPanic(job *Job, attempt int, err error) {
	var pe *panics.Error
	if errors.As(err, &pe) {
		q.log.Error("job handler panicked", "job", job.ID, "type", job.Type, "attempt", attempt,
			"source", pe.Source, "err", err, "stack", string(pe.Stack))
	}
}

// logOutcome logs an attempt that did not succeed: retried (Warn), failed
// for good (Error), canceled (Info) or interrupted by Shutdown (Warn).
func (w *worker) logOutcome(job *Job, attempt int, kind EventKind, st State, err error, delay time.Duration) {
	log := w.q.log
	switch {
	case kind == EventRetrying:
		log.Warn("job retrying", "job", job.ID, "type", job.Type, "attempt", attempt,
			"max_attempts", job.MaxAttempts, "delay", delay, "err", err)
	case kind == EventFailed:
		log.Error("job failed", "job", job.ID, "type", job.Type, "attempt", attempt, "err", err)
	case kind == EventCanceled:
		log.Info("job canceled", "job", job.ID, "type", job.Type, "attempt", attempt)
	case st == StatePending:
		log.Warn("job interrupted by shutdown; left pending", "job", job.ID, "type", job.Type, "attempt", attempt, "err", err)
	}
}

// stackError is an attempt's error whose message carries a panic's stack,
// so the job's stored LastError (and its final event's Error) has both.
type stackError struct {
	err   error
	stack []byte
}

// withStack returns err, wrapped in a *stackError if a *panics.Error with a
// stack is in its chain.
func withStack(err error) error {
	if err == nil {
		return nil
	}
	var pe *panics.Error
	if !errors.As(err, &pe) || len(pe.Stack) == 0 {
		return err
	}
	return &stackError{err: err, stack: pe.Stack}
}

// Error returns the error's message, a blank line and the stack.
func (e *stackError) Error() string { return e.err.Error() + "\n\n" + string(e.stack) }

// Unwrap returns the error.
func (e *stackError) Unwrap() error { return e.err }

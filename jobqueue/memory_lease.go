package jobqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Job implements Lease.
func (r *record) Job() *Job { return r.job }

// Attempt implements Lease.
func (r *record) Attempt() int { return r.attempts }

// Progress implements Lease.
func (r *record) Progress(_ context.Context, percent float64, message string) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: progress on a job that is %s", r.state)
	}
	r.progress = percent
	r.progressMsg = message
	return nil
}

// Extend implements Lease: memory leases never expire.
func (r *record) Extend(context.Context) error { return nil }

// Ack implements Lease. If Cancel was called while the job ran, the job ends
// canceled and Ack returns an error wrapping ErrCanceled.
func (r *record) Ack(_ context.Context, result json.RawMessage) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: ack of a job that is %s", r.state)
	}
	if r.cancelReq {
		r.lastErr = ErrCanceled.Error()
		b.finish(r, StateCanceled, clockNow())
		return ErrCanceled
	}
	r.result = result
	b.finish(r, StateSucceeded, clockNow())
	return nil
}

// Nack implements Lease. If Cancel was called while the job ran, the job ends
// canceled and Nack returns an error wrapping ErrCanceled.
func (r *record) Nack(_ context.Context, delay time.Duration, err error) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: nack of a job that is %s", r.state)
	}
	if err != nil {
		r.lastErr = err.Error()
	}
	now := clockNow()
	if r.cancelReq {
		b.finish(r, StateCanceled, now)
		return ErrCanceled
	}
	b.running--
	r.retriedAt = now
	mono := b.mono(now)
	if delay <= 0 {
		r.state = StatePending
		r.readyAt = mono
		b.ready.push(r)
		b.wakeOne()
		return nil
	}
	r.state = StateRetrying
	r.nextRunAt = now.Add(delay)
	b.retrying++
	b.schedule(r, mono+int64(delay))
	return nil
}

// Term implements Lease.
func (r *record) Term(_ context.Context, st State, err error) error {
	if st != StateFailed && st != StateCanceled {
		return fmt.Errorf("jobqueue: term with state %s", st)
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: term of a job that is %s", r.state)
	}
	if err != nil {
		r.lastErr = err.Error()
	}
	b.finish(r, st, clockNow())
	return nil
}

func (r *record) info() JobInfo {
	return JobInfo{
		Job:             *r.job,
		State:           r.state,
		Attempts:        r.attempts,
		Progress:        r.progress,
		ProgressMessage: r.progressMsg,
		LastError:       r.lastErr,
		Result:          r.result,
		StartedAt:       r.startedAt,
		RetriedAt:       r.retriedAt,
		FinishedAt:      r.finishedAt,
		NextRunAt:       r.nextRunAt,
		Worker:          r.worker,
	}
}

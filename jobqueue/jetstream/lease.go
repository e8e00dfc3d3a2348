package jetstream

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// lease is one delivery of a job, claimed in the state bucket. Its record
// and the revision it wrote last are the base of every compare-and-set it
// makes: a conflict means a Cancel marked the record, or another delivery
// took the job over (ErrLeaseLost).
type lease struct {
	b       *Backend
	m       jetstream.Msg
	job     *jobqueue.Job
	attempt int

	mu    sync.Mutex
	rec   record
	data  []byte // rec encoded, as last written
	rev   uint64
	ended bool
}

// Job implements jobqueue.Lease.
func (l *lease) Job() *jobqueue.Job { return l.job }

// Attempt implements jobqueue.Lease.
func (l *lease) Attempt() int { return l.attempt }

// write stores next with compare-and-set on the lease's revision. On a
// conflict it reads the record again: if another delivery owns the job it
// returns ErrLeaseLost; if a Cancel marked it, it returns canceled true
// without writing (keep is called to carry the mark into next when the
// write should go on regardless).
func (l *lease) write(ctx context.Context, next *record, ttl time.Duration, keep bool) (canceled bool, err error) {
	for try := 0; try < 8; try++ {
		data := next.encode()
		rev, err := l.b.st.putKV(ctx, l.b.n.stateKey(l.job.ID), data, l.rev, ttl)
		if err == nil {
			l.rev, l.rec, l.data = rev, *next, data
			return false, nil
		}
		if !isWrongSeq(err) {
			return false, fmt.Errorf("jetstream: updating job %s: %w", l.job.ID, err)
		}
		cur, rev, ok, err := l.b.st.readState(ctx, l.job.ID)
		if err != nil {
			return false, err
		}
		if !ok || cur.Delivery != l.rec.Delivery || cur.State != jobqueue.StateRunning {
			owner := ""
			if ok {
				owner = cur.Worker
			}
			l.b.log.Warn("lease lost: the job was delivered again, this attempt's outcome is dropped",
				"job", l.job.ID, "type", l.job.Type, "attempt", l.attempt, "owner", owner)
			return false, fmt.Errorf("%w: job %s", ErrLeaseLost, l.job.ID)
		}
		l.rev = rev
		if cur.Cancel {
			l.rec.Cancel = true
			next.Cancel = true
			if !keep {
				return true, nil
			}
		}
	}
	return false, fmt.Errorf("jetstream: updating job %s: too much contention", l.job.ID)
}

func (l *lease) begin() error {
	if l.ended {
		return fmt.Errorf("jetstream: lease of job %s already settled", l.job.ID)
	}
	return nil
}

// Progress implements jobqueue.Lease: it stores percent and message in the
// job's state entry (one request) and tells other processes.
func (l *lease) Progress(ctx context.Context, percent float64, message string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(); err != nil {
		return err
	}
	next := l.rec
	next.Progress, next.ProgressMessage = percent, message
	rctx, cancel := l.b.reqCtx()
	defer cancel()
	if _, err := l.write(rctx, &next, 0, true); err != nil {
		return err
	}
	ev := next.event(jobqueue.EventProgress)
	ev.Time = time.Now()
	l.b.emit(ev)
	return nil
}

// Extend implements jobqueue.Lease: an InProgress acknowledgement restarts
// the message's AckWait on the server. It does not wait for the server, and
// does nothing once the lease is settled.
func (l *lease) Extend(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return nil // settled while the heartbeat was on its way
	}
	if err := l.m.InProgress(); err != nil {
		return fmt.Errorf("jetstream: extending lease of %s: %w", l.job.ID, err)
	}
	return nil
}

// Ack implements jobqueue.Lease: the record becomes final (state bucket,
// then the DONE stream), then the message is acknowledged, which removes it
// from the work queue. If a Cancel marked the job meanwhile it ends
// canceled and Ack returns an error wrapping jobqueue.ErrCanceled, as with
// the memory backend.
func (l *lease) Ack(_ context.Context, result json.RawMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(); err != nil {
		return err
	}
	ctx, cancel := l.b.reqCtx()
	defer cancel()
	next := l.rec
	next.State, next.Result, next.FinishedAt, next.NextRunAt = jobqueue.StateSucceeded, result, time.Now(), time.Time{}
	canceled, err := l.write(ctx, &next, settleTTL, false)
	if err != nil {
		return err
	}
	if canceled {
		return l.endCanceled(ctx)
	}
	return l.finish(ctx, jobqueue.EventSucceeded)
}

// endCanceled ends the job canceled because a Cancel marked it.
func (l *lease) endCanceled(ctx context.Context) error {
	next := l.rec
	next.State, next.Result, next.FinishedAt, next.NextRunAt = jobqueue.StateCanceled, nil, time.Now(), time.Time{}
	next.LastError = jobqueue.ErrCanceled.Error()
	if _, err := l.write(ctx, &next, settleTTL, true); err != nil {
		return err
	}
	if err := l.finish(ctx, jobqueue.EventCanceled); err != nil {
		return err
	}
	return jobqueue.ErrCanceled
}

// finish takes the job off the usage counters, hands the final record to
// the finisher (which stores it in DONE and then removes the message),
// dead-letters a failed job and frees the unique key. l.rec is final and
// written in the state bucket, which answers Get until the record is
// stored.
func (l *lease) finish(ctx context.Context, kind jobqueue.EventKind) error {
	l.ended = true
	b := l.b
	// The final write made here ended the job: take it off the counters
	// before anyone hears of it, so its room is free by the final event.
	b.uncount(l.job, true, l.rec.Counted, false)
	if l.rec.State == jobqueue.StateFailed {
		if _, _, err := b.st.publish(ctx, b.n.deadSubject(l.job.ID), l.data, nil); err != nil {
			_ = l.m.Nak() // settled on its next delivery
			return fmt.Errorf("jetstream: dead-lettering %s: %w", l.job.ID, err)
		}
		b.logDead(&l.rec)
	}
	switch {
	case b.st.keepDone:
		b.fin.store(b.n.doneSubject(l.job.ID), l.data, l.m, kind == jobqueue.EventSucceeded, kind.String())
	case kind == jobqueue.EventSucceeded:
		_ = l.m.Ack()
	default:
		_ = l.m.TermWithReason(kind.String())
	}
	b.releaseUnique(l.job, 0)
	b.emit(l.rec.event(kind))
	return nil
}

// Nack implements jobqueue.Lease: the record says retrying (or pending for
// no delay) and the message is nacked with that delay, so JetStream
// delivers it again once the delay is over; the dispatcher of this process
// signals the level then. A Cancel that marked the job meanwhile ends it
// canceled (error wrapping jobqueue.ErrCanceled).
func (l *lease) Nack(_ context.Context, delay time.Duration, cause error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(); err != nil {
		return err
	}
	ctx, cancel := l.b.reqCtx()
	defer cancel()
	now := time.Now()
	next := l.rec
	if cause != nil {
		next.LastError = cause.Error()
	}
	next.RetriedAt = now
	next.State = jobqueue.StatePending
	if delay > 0 {
		next.State, next.NextRunAt = jobqueue.StateRetrying, now.Add(delay)
	}
	canceled, err := l.write(ctx, &next, 0, false)
	if err != nil {
		return err
	}
	if canceled {
		l.rec.LastError = next.LastError
		return l.endCanceled(ctx)
	}
	l.ended = true
	if delay > 0 {
		err = l.m.NakWithDelay(delay)
		l.b.disp.wakeAt(l.job.Priority, next.NextRunAt)
		l.b.emit(next.event(jobqueue.EventRetrying))
	} else {
		err = l.m.Nak()
		l.b.signal(1 << l.job.Priority)
	}
	if err != nil {
		return fmt.Errorf("jetstream: nacking job %s: %w", l.job.ID, err)
	}
	return nil
}

// Term implements jobqueue.Lease: the record becomes final with state and
// err, a failed job is copied to the dead-letter stream, and the message is
// terminated (JetStream never delivers it again).
func (l *lease) Term(_ context.Context, st jobqueue.State, cause error) error {
	if st != jobqueue.StateFailed && st != jobqueue.StateCanceled {
		return fmt.Errorf("jetstream: term with state %s", st)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(); err != nil {
		return err
	}
	ctx, cancel := l.b.reqCtx()
	defer cancel()
	next := l.rec
	next.State, next.Result, next.FinishedAt, next.NextRunAt = st, nil, time.Now(), time.Time{}
	if cause != nil {
		next.LastError = cause.Error()
	}
	if _, err := l.write(ctx, &next, settleTTL, true); err != nil {
		return err
	}
	kind := jobqueue.EventFailed
	if st == jobqueue.StateCanceled {
		kind = jobqueue.EventCanceled
	}
	return l.finish(ctx, kind)
}

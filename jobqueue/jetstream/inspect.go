package jetstream

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// Get implements jobqueue.Backend. It reads the stores a job moves through
// (scheduled, ready, state bucket, finished): four direct-get requests.
// After Close it reads over a new connection while the server is
// reachable (not after Embedded's Close, which stops its server).
func (b *Backend) Get(ctx context.Context, id string) (_ jobqueue.JobInfo, err error) {
	ctx, st, done, err := b.view(ctx)
	if err != nil {
		return jobqueue.JobInfo{}, err
	}
	defer done(&err)
	r, where, _, err := st.locate(ctx, id)
	if err != nil {
		return jobqueue.JobInfo{}, err
	}
	if where == inState && r.State.Final() {
		// Finished, its message not yet removed: retention may have
		// dropped its record from DONE already (see dropRetained).
		if dropped, err := b.droppedByCount(ctx, st, r); err != nil {
			return jobqueue.JobInfo{}, err
		} else if dropped {
			return jobqueue.JobInfo{}, fmt.Errorf("%w: %q", jobqueue.ErrNotFound, id)
		}
	}
	return snapshot(r, time.Now()), nil
}

// droppedByCount reports whether Retention.MaxJobs has dropped finished
// job r: DONE holds MaxJobs records already, and its oldest finished after
// r. It costs two requests, made only in the moment between a job's final
// state entry and the removal of its message.
func (b *Backend) droppedByCount(ctx context.Context, st *store, r *record) (bool, error) {
	maxJobs := b.cfg.Retention.MaxJobs
	if !st.keepDone || maxJobs <= 0 {
		return false, nil
	}
	di, err := st.done.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("jetstream: get: %w", err)
	}
	if di.State.Msgs < uint64(maxJobs) {
		return false, nil
	}
	m, err := st.done.GetMsg(ctx, di.State.FirstSeq)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("jetstream: get: %w", err)
	}
	oldest, err := decodeRecord(m.Data)
	if err != nil {
		return false, nil
	}
	return oldest.ID != r.ID && oldest.FinishedAt.After(r.FinishedAt), nil
}

// Cancel implements jobqueue.Backend. A job not running is canceled with a
// compare-and-set on its state entry (so a worker receiving it at that
// moment finds it canceled and drops it), then its final record is stored
// and its message deleted. A running job's entry is marked and the process
// running it is told on its cancel subject; the worker's settlement sees
// the mark and ends the job canceled. It returns jobqueue.ErrClosed after
// Close.
func (b *Backend) Cancel(ctx context.Context, id string) (jobqueue.JobInfo, error) {
	if b.isClosed() || b.st == nil {
		return jobqueue.JobInfo{}, jobqueue.ErrClosed
	}
	st := b.st
	for try := 0; try < 16; try++ {
		r, where, rev, err := st.locate(ctx, id)
		if err != nil {
			return jobqueue.JobInfo{}, err
		}
		if where == inDone || r.State.Final() {
			return r.JobInfo, fmt.Errorf("%w: %s is %s", jobqueue.ErrFinished, id, r.State)
		}
		if r.State == jobqueue.StateRunning {
			if !r.Cancel {
				next := *r
				next.Cancel = true
				if _, err := st.putKV(ctx, b.n.stateKey(id), next.encode(), rev, 0); err != nil {
					if isWrongSeq(err) {
						continue
					}
					return jobqueue.JobInfo{}, fmt.Errorf("jetstream: cancel %s: %w", id, err)
				}
			}
			if r.Worker != "" && r.Worker != b.cfg.WorkerTag {
				_ = b.nc.Publish(b.n.cancelSubject(r.Worker), []byte(id))
			}
			return r.JobInfo, nil
		}
		next := *r
		next.State, next.LastError, next.FinishedAt, next.NextRunAt = jobqueue.StateCanceled, jobqueue.ErrCanceled.Error(), time.Now(), time.Time{}
		data := next.encode()
		if _, err := st.putKV(ctx, b.n.stateKey(id), data, rev, cancelTTL); err != nil {
			if isWrongSeq(err) {
				continue
			}
			return jobqueue.JobInfo{}, fmt.Errorf("jetstream: cancel %s: %w", id, err)
		}
		// The job is canceled, by this compare-and-set: it comes off the
		// usage counters here. What follows tidies up, and a failure only
		// delays it (a worker or the scheduler receiving the job finds
		// the entry, stores the record and removes the message).
		sctx, cancel := b.reqCtx()
		defer cancel()
		if err := st.saveDone(sctx, &next, data); err != nil {
			b.uncount(&next.Job, true, next.Counted, false)
			return next.JobInfo, err
		}
		msgs := st.jobs
		if where == inSched {
			msgs = st.sched
		}
		// Whoever removes a delayed job's message from SCHED ends its
		// delay: this Cancel or the scheduler releasing it.
		err = msgs.DeleteMsg(sctx, r.Seq)
		b.uncount(&next.Job, true, next.Counted, where == inSched && err == nil)
		if err != nil && !isNotFound(err) && !strings.Contains(err.Error(), "not found") {
			return next.JobInfo, fmt.Errorf("jetstream: cancel %s: removing its message: %w", id, err)
		}
		b.releaseUnique(&next.Job, 0)
		b.emit(next.event(jobqueue.EventCanceled))
		return next.JobInfo, nil
	}
	return jobqueue.JobInfo{}, fmt.Errorf("jetstream: cancel %s: too much contention", id)
}

// Stats implements jobqueue.Backend. Pending per level comes from the
// level consumers; running and retrying from a scan of the state bucket's
// live entries (the leased jobs, plus the jobs finished in the last second,
// skipped); scheduled and retained from the streams' counts. It costs
// about fifteen requests plus the scan, which under a heavy load reads
// about a second's worth of finished jobs; call it at a human rate.
func (b *Backend) Stats(ctx context.Context) (s jobqueue.BackendStats, err error) {
	ctx, st, done, err := b.view(ctx)
	if err != nil {
		return s, err
	}
	defer done(&err)
	// A consumer counts newly stored messages a moment after the store
	// acknowledges them: read until the levels account for every message
	// of the jobs stream (ready plus leased), a few times at most.
	for try := 0; ; try++ {
		var sum uint64
		for p, c := range st.levels {
			ci, err := c.Info(ctx)
			if err != nil {
				return s, fmt.Errorf("jetstream: stats: %w", err)
			}
			s.Depth[p] = int(ci.NumPending)
			sum += ci.NumPending + uint64(ci.NumAckPending)
		}
		ji, err := st.jobs.Info(ctx)
		if err != nil {
			return s, fmt.Errorf("jetstream: stats: %w", err)
		}
		if sum == ji.State.Msgs || try == 5 {
			break
		}
		time.Sleep(time.Millisecond << try)
	}
	si, err := st.sched.Info(ctx)
	if err != nil {
		return s, fmt.Errorf("jetstream: stats: %w", err)
	}
	s.Scheduled = int(si.State.Msgs)
	if st.keepDone {
		di, err := st.done.Info(ctx)
		if err != nil {
			return s, fmt.Errorf("jetstream: stats: %w", err)
		}
		s.Retained = int(di.State.Msgs)
	}
	now := time.Now()
	err = st.scanState(ctx, func(r *record) {
		switch snapshot(r, now).State {
		case jobqueue.StateRunning:
			s.Running++
		case jobqueue.StateRetrying:
			s.Retrying++
		case jobqueue.StatePending:
			s.Depth[r.Priority]++
		}
	})
	if err != nil {
		return s, err
	}
	for _, d := range s.Depth {
		s.Pending += d
	}
	return s, nil
}

// DeadLetters returns the newest failed jobs kept in the dead-letter
// stream, at most max of them (all if max <= 0), newest first, each as it
// was when it failed for good. It scans the stream, whose size
// WithDeadLetters bounds.
func (b *Backend) DeadLetters(ctx context.Context, max int) (_ []jobqueue.JobInfo, err error) {
	ctx, st, done, err := b.view(ctx)
	if err != nil {
		return nil, err
	}
	defer done(&err)
	var out []jobqueue.JobInfo
	err = st.scan(ctx, b.n.dead, b.n.prefix+".dead.>", false, func(m jetstream.Msg) {
		if r, err := decodeRecord(m.Data()); err == nil {
			out = append(out, r.JobInfo)
		}
	})
	if err != nil {
		return nil, err
	}
	slices.Reverse(out)
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out, nil
}

package jobqueue

import (
	"context"
	"errors"
	"time"
)

// Wait blocks until job id reaches a final state or ctx ends, and returns
// its final snapshot. The error is nil for a succeeded job, a *JobError
// (matching ErrFailed or ErrCanceled) for a failed or canceled one,
// ctx.Err() if ctx ends first, ErrNotFound for an unknown job (or one
// retention dropped before Wait began), and ErrClosed if Shutdown finishes
// while the job is still active. Waiting costs one small channel and no
// goroutine. To submit and wait with no gap, use Run.
//
// With a backend that can lose events (one that implements Resyncer, like
// the JetStream backend across a server restart or a failover), Wait also
// re-reads the job's state at the backend's resync interval and after every
// reconnect, so it returns within about that interval of the job's end even
// if the final event was lost; errors of those reads other than ErrNotFound
// (the connection is still down) are ignored and the wait goes on. A Wait
// that begins while such a backend is out of reach (its first read fails
// with an error matching ErrUnavailable) waits too, and reads the job once
// the backend is back.
func (q *Queue) Wait(ctx context.Context, id string) (JobInfo, error) {
	return q.await(ctx, id, q.addWaiter(id))
}

// Run submits req and waits for the job's final state, like Submit then
// Wait, except that the wait is registered before the job is stored, so
// the result cannot be missed however fast the job runs and retention drops
// it. A request deduplicated by its UniqueKey, or repeating the ID of a job
// still kept, waits for that job. Its errors are Submit's and Wait's.
func (q *Queue) Run(ctx context.Context, req JobRequest) (JobInfo, error) {
	job, err := q.newJob(req)
	if err != nil {
		return JobInfo{}, err
	}
	ch := q.addWaiter(job.ID)
	id, err := q.backend.Enqueue(ctx, job, req.Quota)
	if err != nil || id != job.ID {
		q.dropWaiter(job.ID, ch)
		if err != nil {
			return JobInfo{}, err
		}
		return q.Wait(ctx, id) // deduplicated by UniqueKey: wait for the first job
	}
	return q.await(ctx, id, ch)
}

func (q *Queue) addWaiter(id string) chan Event {
	ch := make(chan Event, 1)
	q.waitMu.Lock()
	q.waiters[id] = append(q.waiters[id], ch)
	q.nwaiters.Add(1)
	q.waitMu.Unlock()
	return ch
}

// await waits on a registered waiter channel.
func (q *Queue) await(ctx context.Context, id string, ch chan Event) (JobInfo, error) {
	defer q.dropWaiter(id, ch)
	r, _ := q.backend.(Resyncer)
	info, err := q.backend.Get(ctx, id)
	if err != nil {
		select {
		case ev := <-ch: // finished, and already dropped by retention
			info = infoFromEvent(&ev)
			return info, finalError(&info)
		default:
		}
		if r == nil || !errors.Is(err, ErrUnavailable) {
			return info, err
		}
		// The backend is out of reach for now: wait, and read the job
		// once it is back.
		info = JobInfo{Job: Job{ID: id}}
	}
	if info.State.Final() {
		return info, finalError(&info)
	}
	var (
		resync   <-chan struct{}
		tick     <-chan time.Time
		timer    *time.Timer
		interval time.Duration
	)
	if r != nil {
		resync, interval = r.Resync(), r.ResyncInterval()
		if interval > 0 {
			timer = time.NewTimer(interval)
			defer timer.Stop()
			tick = timer.C
		}
	}
	for {
		select {
		case ev := <-ch:
			if info2, err := q.backend.Get(ctx, id); err == nil && info2.State.Final() {
				info = info2
			} else {
				info.State, info.LastError, info.Result = ev.State, ev.Error, ev.Result
				info.Attempts, info.FinishedAt = ev.Attempt, ev.Time
			}
			return info, finalError(&info)
		case <-ctx.Done():
			return info, ctx.Err()
		case <-q.done:
			if info, err = q.backend.Get(ctx, id); err != nil || !info.State.Final() {
				return info, ErrClosed
			}
			return info, finalError(&info)
		case <-resync:
			resync = r.Resync()
		case <-tick:
		}
		// A reconnect or the interval: the final event may have been lost.
		info2, err := q.backend.Get(ctx, id)
		switch {
		case err == nil && info2.State.Final():
			return info2, finalError(&info2)
		case err == nil:
			info = info2
		case errors.Is(err, ErrNotFound):
			select {
			case ev := <-ch: // finished, and already dropped by retention
				info = infoFromEvent(&ev)
				return info, finalError(&info)
			default:
				return info, err
			}
		}
		if timer != nil {
			timer.Reset(interval)
		}
	}
}

func infoFromEvent(ev *Event) JobInfo {
	return JobInfo{
		Job:   Job{ID: ev.JobID, Type: ev.Type, Owner: ev.Owner, Priority: ev.Priority},
		State: ev.State, Attempts: ev.Attempt, LastError: ev.Error, Result: ev.Result, FinishedAt: ev.Time,
	}
}

func (q *Queue) dropWaiter(id string, ch chan Event) {
	q.waitMu.Lock()
	defer q.waitMu.Unlock()
	q.nwaiters.Add(-1)
	chs := q.waiters[id]
	for i, c := range chs {
		if c == ch {
			chs = append(chs[:i], chs[i+1:]...)
			break
		}
	}
	if len(chs) == 0 {
		delete(q.waiters, id)
	} else {
		q.waiters[id] = chs
	}
}

func finalError(info *JobInfo) error {
	if info.State == StateFailed || info.State == StateCanceled {
		return &JobError{ID: info.ID, State: info.State, Message: info.LastError}
	}
	return nil
}

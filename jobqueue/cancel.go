package jobqueue

import (
	"context"
	"time"
)

// Cancel cancels job id. A pending, scheduled or retrying job is canceled
// at once. A running job has its handler's context canceled (cause
// ErrCanceled) and is marked canceled when its handler returns, whatever it
// returns. Cancel returns an error wrapping ErrNotFound for an unknown job
// and ErrFinished for a job already in a final state. It does not wait for
// the handler; use Wait for that. It cancels any owner's job: a server
// acting for clients checks the job's Owner (Get) first.
func (q *Queue) Cancel(ctx context.Context, id string) error {
	info, err := q.backend.Cancel(ctx, id)
	if err != nil {
		return err
	}
	switch info.State {
	case StateCanceled:
		q.count(nil, q.entry(info.Type), &info.Job, EventCanceled)
		if q.listening(true) {
			q.publish(&Event{Kind: EventCanceled, JobID: id, Type: info.Type, Owner: info.Owner, Priority: info.Priority,
				State: StateCanceled, Attempt: info.Attempts, Error: info.LastError, Time: info.FinishedAt})
		}
	case StateRunning:
		q.cancelLocal(id)
	}
	return nil
}

// cancelLocal cancels the handler context of job id if a worker of this
// Queue runs it. If none does yet (the job was just fetched), the request
// is parked for a minute so the worker picks it up as it starts.
func (q *Queue) cancelLocal(id string) {
	now := clockNow()
	q.cancelMu.Lock()
	for k, t := range q.cancels {
		if now.Sub(t) > time.Minute {
			delete(q.cancels, k)
		}
	}
	q.cancels[id] = now
	q.npending.Store(int32(len(q.cancels)))
	q.cancelMu.Unlock()
	for _, w := range q.runningWorkers() {
		if c := w.cur.Load(); c != nil && c.job.ID == id {
			q.claimCancel(c)
			return
		}
	}
}

// claimCancel cancels c if a Cancel request is parked for its job.
func (q *Queue) claimCancel(c *jobCtx) {
	if q.dropCancel(c.job.ID) {
		c.cancel(ErrCanceled)
	}
}

// dropCancel removes the parked Cancel request of job id, and those parked
// for over a minute (jobs run by other processes), and reports whether id
// had one. Workers call it when a job starts and ends while any is parked.
func (q *Queue) dropCancel(id string) bool {
	now := clockNow()
	q.cancelMu.Lock()
	defer q.cancelMu.Unlock()
	_, ok := q.cancels[id]
	delete(q.cancels, id)
	for k, t := range q.cancels {
		if now.Sub(t) > time.Minute {
			delete(q.cancels, k)
		}
	}
	q.npending.Store(int32(len(q.cancels)))
	return ok
}

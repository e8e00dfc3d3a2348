package wsbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/corework/corework/jobqueue"
)

// This file holds the Client's commands, one method each, with the names
// and results of their jobqueue.Queue counterparts where they do the same
// thing.

// newCall returns a call for a command.
func newCall() *call { return &call{ch: make(chan inMsg, 1)} }

// Submit submits a job and returns its ID once the server has queued it.
// The Client then watches the job: its events arrive on Events and Wait
// returns its end. req.Payload is sent as the command's data; req.Owner
// and req.Quota are the server's to set and are ignored; a negative
// req.Timeout (no timeout) cannot be expressed in the protocol and is
// refused with an error wrapping ErrProtocol. Errors from the queue are
// *ServerError values matching the jobqueue sentinels (ErrQueueFull,
// ErrNoHandler, ErrInvalidJob, and ErrQuotaExceeded for a principal over
// its quota).
//
// Submit sends the job's ID with it: req.ID if set, else a fresh one
// shaped like the queue's own (36 characters, ordered by the time it was
// made, with 80 random bits from crypto/rand). The server creates at most one job per ID and
// answers a repeat with that job, so if the connection drops before the
// reply arrives, Submit sends the same request again on the next
// connection and returns the job the server has: one job, never an error
// beside an orphan job. Only when the Client cannot send it again (ctx
// ends, Close, or reconnecting is off: an error wrapping ErrConnectionLost)
// may the job exist without its ID being returned for sure; Submit then
// returns the ID it sent beside the error, so that a caller can submit
// again with req.ID set to it, or Get it, and find out. (A repeat that
// comes after the server's retention dropped the first job, if it ended,
// creates a new one.)
func (c *Client) Submit(ctx context.Context, req jobqueue.JobRequest) (string, error) {
	if req.Timeout < 0 {
		return "", fmt.Errorf("%w: negative timeout", ErrProtocol)
	}
	id := req.ID
	if id == "" {
		id = newJobID()
	}
	r := &request{
		Command:     cmdSubmit,
		JobID:       id,
		TaskType:    req.Type,
		Data:        req.Payload,
		MaxAttempts: req.MaxAttempts,
		UniqueKey:   req.UniqueKey,
		Metadata:    req.Metadata,
	}
	if req.Priority != 0 {
		r.Priority = json.RawMessage(strconv.Itoa(int(req.Priority)))
	}
	if req.Timeout > 0 {
		r.Timeout = json.RawMessage(strconv.Quote(req.Timeout.String()))
	}
	if !req.RunAt.IsZero() {
		r.RunAt = &req.RunAt
	}
	cl := newCall()
	cl.submit = true
	m, err := c.do(ctx, r, cl)
	if err != nil {
		if _, refused := errors.AsType[*ServerError](err); !refused && !cl.sent.IsZero() {
			return id, err // it may have reached the server
		}
		return "", err
	}
	return m.JobID, nil
}

// Wait blocks until job id reaches a final state or ctx ends, and returns
// its final snapshot, like jobqueue.Queue.Wait. The error is nil for a
// succeeded job, a *jobqueue.JobError (matching jobqueue.ErrFailed or
// jobqueue.ErrCanceled with errors.Is) beside the snapshot for a failed or
// canceled one, ctx.Err() if ctx ends first, a *ServerError matching
// jobqueue.ErrNotFound for an unknown job, another principal's, or one the
// server's retention dropped, ErrClosed after Close, and ErrConnectionLost
// once a connection is lost without reconnection (see WithReconnect).
//
// The snapshot is built from the job's final event, so that Wait costs no
// request beyond the subscription: it fills ID, Type, Priority, State,
// Attempts, Result (succeeded), LastError (failed, canceled) and
// FinishedAt, and leaves the rest zero (Payload, Metadata, SubmittedAt,
// Progress...); Get returns them while the server's retention keeps the
// job. A job the Client does not watch yet is subscribed to first; one that
// ended already returns at once, from the Client's memory of its last 4096
// final events or from the server.
func (c *Client) Wait(ctx context.Context, id string) (jobqueue.JobInfo, error) {
	c.mu.Lock()
	if ev, ok := c.finals[id]; ok {
		c.mu.Unlock()
		return finalInfo(&ev)
	}
	if c.stopErr != nil {
		err := c.stopErr
		c.mu.Unlock()
		return jobqueue.JobInfo{}, err
	}
	ch := make(chan waitResult, 1)
	c.waiters[id] = append(c.waiters[id], ch)
	_, watched := c.watched[id]
	c.mu.Unlock()
	if !watched {
		// A reply lost with the connection is not fatal: the job stays
		// watched and the reconnection subscribes to it again.
		err := c.subscribeJob(ctx, id)
		if err != nil && !(errors.Is(err, ErrConnectionLost) && c.o.reconnect) {
			c.dropWaiter(id, ch)
			return jobqueue.JobInfo{}, err
		}
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return jobqueue.JobInfo{}, r.err
		}
		return finalInfo(&r.ev)
	case <-ctx.Done():
		c.dropWaiter(id, ch)
		return jobqueue.JobInfo{}, ctx.Err()
	}
}

func (c *Client) dropWaiter(id string, ch chan waitResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[id]
	for i, x := range ws {
		if x == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, id)
	} else {
		c.waiters[id] = ws
	}
}

// finalInfo returns the snapshot that the final event ev describes, and the
// error Wait returns with it.
func finalInfo(ev *jobqueue.Event) (jobqueue.JobInfo, error) {
	info := jobqueue.JobInfo{
		Job:        jobqueue.Job{ID: ev.JobID, Type: ev.Type, Owner: ev.Owner, Priority: ev.Priority},
		State:      ev.State,
		Attempts:   ev.Attempt,
		LastError:  ev.Error,
		Result:     ev.Result,
		FinishedAt: ev.Time,
	}
	switch ev.Kind {
	case jobqueue.EventSucceeded:
		info.State = jobqueue.StateSucceeded
	case jobqueue.EventFailed:
		info.State = jobqueue.StateFailed
	case jobqueue.EventCanceled:
		info.State = jobqueue.StateCanceled
	}
	if info.State == jobqueue.StateFailed || info.State == jobqueue.StateCanceled {
		return info, &jobqueue.JobError{ID: info.ID, State: info.State, Message: info.LastError}
	}
	return info, nil
}

// Cancel cancels job id (see jobqueue.Queue.Cancel). It returns once the
// server has accepted the request; the canceled event follows. Another
// principal's job is a *ServerError matching jobqueue.ErrNotFound (unless
// the Client is an operator's). A Cancel sent again after a lost
// connection that finds the job canceled returns nil, since the first may
// have canceled it.
func (c *Client) Cancel(ctx context.Context, id string) error {
	cl := newCall()
	_, err := c.do(ctx, &request{Command: cmdCancel, JobID: id}, cl)
	if cl.resends > 0 && errors.Is(err, jobqueue.ErrFinished) {
		if info, gerr := c.Get(ctx, id); gerr == nil && info.State == jobqueue.StateCanceled {
			return nil
		}
	}
	return err
}

// Get returns a snapshot of job id, every field filled (see
// jobqueue.Queue.Get). An unknown job, another principal's (unless the
// Client is an operator's), or one the server's retention dropped, is a
// *ServerError matching jobqueue.ErrNotFound.
func (c *Client) Get(ctx context.Context, id string) (jobqueue.JobInfo, error) {
	m, err := c.do(ctx, &request{Command: cmdStatus, JobID: id}, newCall())
	if err != nil || m.Job == nil {
		return jobqueue.JobInfo{}, err
	}
	return *m.Job, nil
}

// List returns the principal's jobs matching f, newest first (by ID), as
// jobqueue.Queue.List does with f.Summary set: without Payload, Result and
// Metadata (Get returns a job in full). f.Limit works as there: zero means
// 100, a negative one every job. To page through a listing, pass the ID of
// the last job of a page as f.Cursor for the next (the same filter
// otherwise); a page shorter than the limit is the last. The server bounds
// each reply in bytes (Config.ListBytes) and in jobs (1000), so List asks
// for as many of the server's pages as it takes to fill f.Limit, one
// request each. f.Owner lists another principal's jobs and f.State,
// f.Type filter as in Queue.List; the server ignores f.Owner unless the
// Client is an operator's.
func (c *Client) List(ctx context.Context, f jobqueue.ListFilter) ([]jobqueue.JobInfo, error) {
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	r := request{Command: cmdList, TaskType: f.Type, Owner: f.Owner, Cursor: f.Cursor}
	if f.State != jobqueue.StateUnknown {
		r.State = f.State.String()
	}
	var jobs []jobqueue.JobInfo
	for {
		r.Limit = maxListLimit
		if limit > 0 {
			r.Limit = min(limit-len(jobs), maxListLimit)
		}
		page := r // do sets the request id
		m, err := c.do(ctx, &page, newCall())
		if err != nil {
			return nil, err
		}
		if jobs == nil {
			jobs = m.Jobs
		} else {
			jobs = append(jobs, m.Jobs...)
		}
		if m.NextCursor == "" || len(m.Jobs) == 0 || (limit > 0 && len(jobs) >= limit) {
			return jobs, nil
		}
		r.Cursor = m.NextCursor
	}
}

// Subscribe watches job id, or every job the principal may see if id is
// empty: its events arrive on Events, and the subscription is renewed
// after a reconnection. For one job it returns once the server has
// answered; a job that ended already delivers its final event at once.
// Another principal's job is a *ServerError matching jobqueue.ErrNotFound
// (unless the Client is an operator's).
func (c *Client) Subscribe(ctx context.Context, id string) error {
	if id != "" {
		return c.subscribeJob(ctx, id)
	}
	c.mu.Lock()
	c.watchAll = true
	c.mu.Unlock()
	_, err := c.do(ctx, &request{Command: cmdSubscribe}, newCall())
	return err
}

func (c *Client) subscribeJob(ctx context.Context, id string) error {
	c.mu.Lock()
	c.watched[id] = struct{}{}
	c.mu.Unlock()
	cl := newCall()
	cl.jobID = id
	_, err := c.do(ctx, &request{Command: cmdSubscribe, JobID: id}, cl)
	if err != nil && !errors.Is(err, ErrConnectionLost) {
		c.mu.Lock()
		delete(c.watched, id)
		c.mu.Unlock()
	}
	return err
}

// Unsubscribe stops watching job id, or every job if id is empty (the jobs
// this Client submitted or subscribed to one by one stay watched: it
// subscribes to each of them again, since the server does not follow jobs
// one by one for a client that watches them all).
func (c *Client) Unsubscribe(ctx context.Context, id string) error {
	c.mu.Lock()
	if id == "" {
		c.watchAll = false
	} else {
		delete(c.watched, id)
	}
	c.mu.Unlock()
	_, err := c.do(ctx, &request{Command: cmdUnsubscribe, JobID: id}, newCall())
	if err == nil && id == "" {
		c.resync()
	}
	return err
}

// Stats returns the server's statistics.
func (c *Client) Stats(ctx context.Context) (ServerStats, error) {
	m, err := c.do(ctx, &request{Command: cmdStats}, newCall())
	var st ServerStats
	if m.Bridge != nil {
		st.Bridge = *m.Bridge
	}
	if m.Queue != nil {
		st.Queue = *m.Queue
	}
	st.System = m.System
	return st, err
}

// Ping sends a ping command and returns the round-trip time: from the
// moment the command was sent (after any wait for the window or a
// connection) to its reply.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	cl := newCall()
	_, err := c.do(ctx, &request{Command: cmdPing}, cl)
	if err != nil {
		return 0, err
	}
	return time.Since(cl.sent), nil
}

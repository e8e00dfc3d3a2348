package jobqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"
)

// Submit validates req, stores it as a new job and returns the job's ID. It
// returns ErrClosed after Shutdown began, an error wrapping ErrInvalidJob or
// ErrNoHandler for a request it refuses, an error wrapping ErrQuotaExceeded
// when req.Owner is at a limit of req.Quota, and one wrapping ErrQueueFull
// when the queue is at Config.Capacity or Config.MaxBytes (with
// Config.BlockOnFull it waits for room instead, and returns ctx.Err() if
// ctx ends first, having stored nothing). With a UniqueKey matching an
// active job of the same Owner it returns that job's ID and stores
// nothing; with the ID of a job still kept it returns that ID and stores
// nothing, or refuses it if another owner's (see JobRequest.ID). Payload
// and Metadata are copied. It costs an ID, a few small allocations and one
// backend call; it does not wait for the job to run (see Wait and Run).
func (q *Queue) Submit(ctx context.Context, req JobRequest) (string, error) {
	job, err := q.newJob(req)
	if err != nil {
		return "", err
	}
	return q.backend.Enqueue(ctx, job, req.Quota)
}

// NewID returns a new job ID, unique, time-sortable and unguessable like
// the ones Submit makes, for a JobRequest.ID chosen before submitting (to
// subscribe to the job's events first, or to retry a submission without
// risking a second job).
func (q *Queue) NewID() string { return q.ids.next(clockNow()) }

// validID reports whether a caller-chosen ID is 1-64 letters, digits, '-'
// or '_' (safe as a key or subject token in any backend).
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// newJob validates req and builds its Job with the defaults applied.
func (q *Queue) newJob(req JobRequest) (*Job, error) {
	if q.closed.Load() {
		return nil, ErrClosed
	}
	switch {
	case req.Type == "":
		return nil, fmt.Errorf("%w: empty type", ErrInvalidJob)
	case req.ID != "" && !validID(req.ID):
		return nil, fmt.Errorf("%w: ID %q is not 1-64 letters, digits, '-' or '_'", ErrInvalidJob, req.ID)
	case !req.Priority.Valid():
		return nil, fmt.Errorf("%w: priority %d out of %d-%d", ErrInvalidJob, req.Priority, MinPriority, MaxPriority)
	case len(req.Payload) > q.cfg.MaxPayload:
		return nil, fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrInvalidJob, len(req.Payload), q.cfg.MaxPayload)
	case len(req.Payload) > 0 && !json.Valid(req.Payload):
		return nil, fmt.Errorf("%w: payload is not valid JSON", ErrInvalidJob)
	case req.MaxAttempts < 0:
		return nil, fmt.Errorf("%w: negative MaxAttempts", ErrInvalidJob)
	case !q.cfg.NoWorkers && q.entry(req.Type) == nil:
		return nil, fmt.Errorf("%w %q", ErrNoHandler, req.Type)
	}
	if err := req.Quota.validate(); err != nil {
		return nil, err
	}
	now := clockNow()
	job := &Job{
		ID:          req.ID,
		Type:        req.Type,
		Owner:       req.Owner,
		Payload:     bytes.Clone(req.Payload),
		Priority:    req.Priority,
		MaxAttempts: req.MaxAttempts,
		Timeout:     req.Timeout,
		RunAt:       req.RunAt,
		UniqueKey:   req.UniqueKey,
		Metadata:    maps.Clone(req.Metadata),
		SubmittedAt: now,
	}
	if job.ID == "" {
		job.ID = q.ids.next(now)
	}
	if job.MaxAttempts == 0 {
		job.MaxAttempts = q.cfg.MaxAttempts
	}
	switch {
	case job.Timeout == 0:
		job.Timeout = q.cfg.Timeout
	case job.Timeout < 0:
		job.Timeout = 0
	}
	if !job.RunAt.After(now) {
		job.RunAt = time.Time{}
	} else if err := req.Quota.checkDelay(job, now); err != nil {
		// Stateless, so checked here for every backend (Quota.Check
		// repeats it).
		return nil, err
	}
	return job, nil
}

// onQueued counts the stored job and publishes its queued event, from
// inside Enqueue, before the job can be fetched, so subscribers see it
// before the job's started event. Deduplicated and repeated submissions
// store nothing, so they are neither counted nor published.
func (q *Queue) onQueued(job *Job, st State) {
	q.submitted.Add(1)
	if !q.listening(false) {
		return
	}
	ev := Event{Kind: EventQueued, JobID: job.ID, Type: job.Type, Owner: job.Owner, Priority: job.Priority, State: st, Time: job.SubmittedAt}
	if st == StateScheduled {
		ev.NextRunAt = job.RunAt
	}
	q.publish(&ev)
}

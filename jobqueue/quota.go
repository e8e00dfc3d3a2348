package jobqueue

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Quota limits the jobs of one owner (JobRequest.Owner). Submit hands it
// to the backend with the job, and the backend checks it atomically with
// storing the job, against the jobs of that owner only: an owner at its
// limit does not affect the others. A zero field means no limit; a
// negative one makes Submit refuse the request with ErrInvalidJob. Over a
// limit, Submit returns an error wrapping ErrQuotaExceeded whose message
// names the limit, and stores nothing. A request with no Owner is never
// limited by its Quota. The limits are checked when a job is submitted: a
// lower Quota on a later request does not remove the jobs already stored.
type Quota struct {
	// MaxActive bounds the owner's active jobs (pending, scheduled,
	// running, retrying), the new one included.
	MaxActive int `json:"max_active,omitempty"`
	// MaxDelayed bounds the owner's scheduled jobs (RunAt in the future),
	// the new one included. Jobs waiting for a retry are not counted.
	MaxDelayed int `json:"max_delayed,omitempty"`
	// MaxBytes bounds the stored payload bytes of the owner's active jobs,
	// the new one included.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxDelay is the latest RunAt accepted, measured from now.
	MaxDelay time.Duration `json:"max_delay,omitempty"`
}

func (q Quota) validate() error {
	if q.MaxActive < 0 || q.MaxDelayed < 0 || q.MaxBytes < 0 || q.MaxDelay < 0 {
		return fmt.Errorf("%w: negative quota %+v", ErrInvalidJob, q)
	}
	return nil
}

// Check returns nil if job may be added to its owner's jobs, whose current
// usage is u, at time now; otherwise an error wrapping ErrQuotaExceeded
// that names the limit. It returns nil for a job with no Owner. Backends
// call it under the lock (or in the transaction) that stores the job, so
// that two concurrent submissions cannot both take the last unit.
func (q Quota) Check(u Usage, job *Job, now time.Time) error {
	if job.Owner == "" {
		return nil
	}
	delayed := job.RunAt.After(now)
	switch size := int64(len(job.Payload)); {
	case q.MaxActive > 0 && u.Active >= q.MaxActive:
		return fmt.Errorf("%w: %d active jobs, the most allowed", ErrQuotaExceeded, q.MaxActive)
	case delayed && q.MaxDelayed > 0 && u.Delayed >= q.MaxDelayed:
		return fmt.Errorf("%w: %d delayed jobs, the most allowed", ErrQuotaExceeded, q.MaxDelayed)
	case q.MaxBytes > 0 && u.Bytes+size > q.MaxBytes:
		return fmt.Errorf("%w: %d payload bytes stored, %d more would exceed %d", ErrQuotaExceeded, u.Bytes, size, q.MaxBytes)
	}
	return q.checkDelay(job, now)
}

// checkDelay checks MaxDelay, for a job with an owner.
func (q Quota) checkDelay(job *Job, now time.Time) error {
	if d := job.RunAt.Sub(now); job.Owner != "" && q.MaxDelay > 0 && d > q.MaxDelay {
		return fmt.Errorf("%w: run_at %v ahead, more than the max delay %v", ErrQuotaExceeded, d.Round(time.Millisecond), q.MaxDelay)
	}
	return nil
}

// Usage is what one owner holds, counted as Quota counts it.
type Usage struct {
	Active  int   `json:"active"`  // active jobs: pending, scheduled, running, retrying
	Delayed int   `json:"delayed"` // scheduled jobs (RunAt in the future)
	Bytes   int64 `json:"bytes"`   // stored payload bytes of the active jobs
}

// UsageReporter is implemented by backends that can report an owner's
// usage (the memory backend does). Queue.Usage calls it.
type UsageReporter interface {
	// Usage returns the usage of owner's jobs; the jobs with no owner
	// for the empty owner. An owner with no active job has a zero Usage.
	Usage(ctx context.Context, owner string) (Usage, error)
}

// Usage returns owner's active jobs, delayed jobs and payload bytes as the
// backend counts them for Quota; with the empty owner, those of the jobs
// with no owner. It returns an error wrapping errors.ErrUnsupported if the
// backend does not implement UsageReporter. With the memory backend it
// costs a map lookup under the backend's lock.
func (q *Queue) Usage(ctx context.Context, owner string) (Usage, error) {
	r, ok := q.backend.(UsageReporter)
	if !ok {
		return Usage{}, fmt.Errorf("jobqueue: usage with backend %T: %w", q.backend, errors.ErrUnsupported)
	}
	return r.Usage(ctx, owner)
}

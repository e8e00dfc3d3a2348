package jobqueue

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap them with %w; match
// them with errors.Is.
var (
	// ErrClosed is returned by Submit after Shutdown has begun, and is the
	// cause of jobs canceled by Shutdown.
	ErrClosed = errors.New("jobqueue: queue closed")
	// ErrQueueFull is returned by Submit when Config.Capacity active jobs
	// exist, or when the new payload would take the active jobs' payload
	// bytes past Config.MaxBytes, and Config.BlockOnFull is false.
	ErrQueueFull = errors.New("jobqueue: queue full")
	// ErrQuotaExceeded is returned by Submit when the job would take its
	// owner past a limit of JobRequest.Quota; the message names the limit.
	ErrQuotaExceeded = errors.New("jobqueue: quota exceeded")
	// ErrResultTooLarge fails, for good, an attempt whose handler returned
	// a result larger than Config.MaxResult.
	ErrResultTooLarge = errors.New("jobqueue: result too large")
	// ErrNotFound is returned for an unknown job ID, or one whose record
	// retention has dropped.
	ErrNotFound = errors.New("jobqueue: job not found")
	// ErrFinished is returned by Cancel for a job already in a final state.
	ErrFinished = errors.New("jobqueue: job already finished")
	// ErrNoHandler is returned by Submit, and fails a fetched job, when no
	// handler is registered for the job's type.
	ErrNoHandler = errors.New("jobqueue: no handler for job type")
	// ErrBadPayload fails a job whose payload does not decode into the
	// typed handler's input; such jobs are not retried.
	ErrBadPayload = errors.New("jobqueue: bad payload")
	// ErrBadResult fails a job whose handler returned a result that is not
	// valid JSON (a HandlerFunc; TypedHandler always encodes one); such jobs
	// are not retried.
	ErrBadResult = errors.New("jobqueue: result is not JSON")
	// ErrInvalidJob is returned by Submit for a request it refuses (empty
	// type, priority out of range, payload not JSON or too large, a
	// negative Quota, an ID in use by another owner).
	ErrInvalidJob = errors.New("jobqueue: invalid job")
	// ErrCanceled is the cause of a job canceled by Cancel.
	ErrCanceled = errors.New("jobqueue: job canceled")
	// ErrFailed matches a *JobError for a job that ended in StateFailed.
	ErrFailed = errors.New("jobqueue: job failed")
	// ErrSlowSubscriber ends a Subscription whose reader fell so far behind
	// that final events would have to be dropped.
	ErrSlowSubscriber = errors.New("jobqueue: subscriber too slow")
	// ErrNotInJob is returned by Progress when ctx is not a handler's context.
	ErrNotInJob = errors.New("jobqueue: context is not a job's context")
	// ErrUnavailable is matched by the errors of a shared backend that
	// cannot reach its server for now (its connection is down and comes
	// back on its own, such as jetstream.ErrNotConnected): the call may
	// succeed later. Wait and Run go on waiting through it.
	ErrUnavailable = errors.New("jobqueue: backend unavailable")
)

type permanentError struct{ err error }

// Error returns the marked error's message.
func (e *permanentError) Error() string { return e.err.Error() }

// Unwrap returns the marked error.
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err so that the job fails at once without further retries.
// Permanent(nil) returns nil. The returned error's message is err's.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// JobError is returned by Wait for a job that ended in StateFailed or
// StateCanceled. It matches ErrFailed or ErrCanceled with errors.Is.
type JobError struct {
	ID      string // the job's ID
	State   State  // StateFailed or StateCanceled
	Message string // the job's LastError
}

// Error returns the job's ID, state and last error.
func (e *JobError) Error() string {
	return fmt.Sprintf("jobqueue: job %s %s: %s", e.ID, e.State, e.Message)
}

// Is matches ErrFailed for a failed job and ErrCanceled for a canceled one.
func (e *JobError) Is(target error) bool {
	return (target == ErrFailed && e.State == StateFailed) ||
		(target == ErrCanceled && e.State == StateCanceled)
}

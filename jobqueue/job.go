package jobqueue

import (
	"encoding/json"
	"fmt"
	"time"
)

// Priority is a job's priority level, from MinPriority (0, the lowest) to
// MaxPriority (9, the highest). Workers take the highest level first and
// keep FIFO order within a level. The zero value is Low.
type Priority int

// Named priority levels. Any integer from MinPriority to MaxPriority is valid.
const (
	Low      Priority = 0
	Normal   Priority = 3
	High     Priority = 6
	Critical Priority = 9

	MinPriority Priority = 0
	MaxPriority Priority = 9

	// NumPriorities is the number of priority levels.
	NumPriorities = int(MaxPriority) + 1
)

// Valid reports whether p is between MinPriority and MaxPriority.
func (p Priority) Valid() bool { return p >= MinPriority && p <= MaxPriority }

// String returns the level's name for named levels ("normal") and its number
// otherwise ("4").
func (p Priority) String() string {
	switch p {
	case Low:
		return "low"
	case Normal:
		return "normal"
	case High:
		return "high"
	case Critical:
		return "critical"
	}
	return fmt.Sprint(int(p))
}

// State is the lifecycle state of a job. It encodes to JSON as its name
// ("pending", "running", ...). The zero value, StateUnknown, is never the
// state of a stored job; in a ListFilter it matches every state.
type State uint8

// Job states. Pending, Scheduled, Running and Retrying are active states;
// Succeeded, Failed and Canceled are final.
const (
	StateUnknown   State = iota
	StatePending         // ready to run, waiting for a worker
	StateScheduled       // waiting for its RunAt time
	StateRunning         // a handler is running it
	StateRetrying        // an attempt failed; waiting for the backoff delay
	StateSucceeded       // the handler returned a result
	StateFailed          // the last attempt failed or the error was permanent
	StateCanceled        // canceled by Cancel or by Shutdown
)

var stateNames = [...]string{"unknown", "pending", "scheduled", "running", "retrying", "succeeded", "failed", "canceled"}

// String returns the state's name, as used in JSON.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", s)
}

// Final reports whether s is Succeeded, Failed or Canceled.
func (s State) Final() bool { return s >= StateSucceeded && s <= StateCanceled }

// MarshalText encodes the state as its name.
func (s State) MarshalText() ([]byte, error) {
	if int(s) >= len(stateNames) {
		return nil, fmt.Errorf("jobqueue: invalid state %d", s)
	}
	return []byte(stateNames[s]), nil
}

// UnmarshalText decodes a state name as produced by MarshalText.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if string(b) == n {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("jobqueue: unknown state %q", b)
}

// JobRequest is what a caller submits with Queue.Submit. Only Type is
// required; every other field documents its zero value.
type JobRequest struct {
	// ID is the job's ID. Empty (the usual case) means Submit makes one. A
	// caller that must know it before submitting (to subscribe to the job
	// first, or to retry the submission safely) gets one from Queue.NewID;
	// any other value must be 1-64 letters, digits, '-' or '_', or Submit
	// refuses it with ErrInvalidJob. Submitting again with the ID of a job
	// still kept (active, or finished and retained) is idempotent when the
	// Owner is the same: Submit returns the ID and nil, and stores and
	// counts nothing (the repeated request's other fields are not
	// compared), so a client retrying after a dropped connection cannot
	// create a second job. With another Owner, Submit refuses the ID with
	// ErrInvalidJob ("ID in use").
	ID string `json:"id,omitempty"`
	// Type names the handler that runs the job (see Queue.Handle).
	Type string `json:"type"`
	// Owner is the principal submitting the job: the name a server gives
	// the client it acts for. Empty means none (library callers); the jobs
	// with no owner share one turn in dispatch and no Quota applies to them.
	// It is stored as Job.Owner and selects jobs in ListFilter.Owner,
	// EventFilter.Owner and Queue.Usage. A server that decodes requests from
	// clients must set it itself, after decoding.
	Owner string `json:"owner,omitempty"`
	// Quota limits Owner's jobs; the zero value means no limit, and it is
	// ignored when Owner is empty. It is set by the server, so it is not
	// part of the JSON form. See Quota.
	Quota Quota `json:"-"`
	// Payload is the job's input as JSON. Empty means no input (JSON null).
	// It must be valid JSON and at most Config.MaxPayload bytes.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Priority is the job's level; zero is Low.
	Priority Priority `json:"priority"`
	// MaxAttempts bounds the number of runs, the first one included.
	// Zero means Config.MaxAttempts; 1 means no retries.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Timeout bounds each attempt through the handler's context. Zero means
	// Config.Timeout; a negative value means no timeout.
	Timeout time.Duration `json:"timeout,omitempty"`
	// RunAt delays the job: it is not run before this time. The zero value
	// (or a time in the past) means now.
	RunAt time.Time `json:"run_at,omitzero"`
	// UniqueKey, when set, makes Submit return the ID of an active job
	// (pending, scheduled, running or retrying) of the same Owner with the
	// same key instead of adding a second one; the keys of different owners
	// never match. Empty means no deduplication.
	UniqueKey string `json:"unique_key,omitempty"`
	// Metadata is free-form and is copied to the stored job. Nil means none.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Job is a submitted job as handlers and backends see it: the request with
// its defaults resolved, its ID and its submission time. A Job is read-only
// once submitted: handlers must not modify it, its Payload or its Metadata.
type Job struct {
	// ID is unique and sorts in submission order (as text). An ID made by
	// the Queue has 36 characters of Crockford's base 32 in lower case: a
	// 64-bit millisecond time and counter (13), 80 bits from crypto/rand
	// (16), so that IDs cannot be guessed, and the submitting Queue's
	// random tag (7). A caller-chosen ID (JobRequest.ID) is kept as given.
	ID string `json:"id"`
	// Type names the handler that runs the job.
	Type string `json:"type"`
	// Owner is the principal that submitted the job (JobRequest.Owner);
	// empty for none.
	Owner string `json:"owner,omitempty"`
	// Payload is the job's input as JSON; empty for none.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Priority is the job's level, MinPriority to MaxPriority.
	Priority Priority `json:"priority"`
	// MaxAttempts bounds the runs, the first included; always positive.
	MaxAttempts int `json:"max_attempts"`
	// Timeout bounds each attempt; zero means none. Nanoseconds in JSON.
	Timeout time.Duration `json:"timeout,omitempty"`
	// RunAt is when a delayed job becomes pending; zero for a job ready at
	// submission.
	RunAt time.Time `json:"run_at,omitzero"`
	// UniqueKey deduplicates the active jobs of Owner; empty for none.
	UniqueKey string `json:"unique_key,omitempty"`
	// Metadata is the request's free-form metadata.
	Metadata map[string]string `json:"metadata,omitempty"`
	// SubmittedAt is when Submit accepted the job.
	SubmittedAt time.Time `json:"submitted_at"`
}

// JobInfo is a snapshot of a job and its state, as returned by Queue.Get,
// Queue.List and Queue.Wait. It encodes to JSON with the Job fields inline,
// ready to send to a browser. Each timestamp records the latest entry into
// its state.
type JobInfo struct {
	Job
	State           State           `json:"state"`                      // the job's current state
	Attempts        int             `json:"attempts"`                   // attempts started so far
	Progress        float64         `json:"progress"`                   // last reported percentage, 0-100
	ProgressMessage string          `json:"progress_message,omitempty"` // last reported message
	LastError       string          `json:"last_error,omitempty"`       // error of the latest failed attempt
	Result          json.RawMessage `json:"result,omitempty"`           // the handler's result once succeeded
	StartedAt       time.Time       `json:"started_at,omitzero"`        // latest attempt started (running)
	RetriedAt       time.Time       `json:"retried_at,omitzero"`        // latest attempt failed with a retry left (retrying)
	FinishedAt      time.Time       `json:"finished_at,omitzero"`       // final state reached
	NextRunAt       time.Time       `json:"next_run_at,omitzero"`       // when a scheduled or retrying job becomes pending
	Worker          string          `json:"worker,omitempty"`           // tag of the Queue that ran the latest attempt
}

package jobqueue

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Backend stores jobs and hands them to workers under leases. The Queue
// keeps dispatch, handlers, retries, timeouts, cancellation and events above
// it, so a backend only stores and delivers. Delivery is at least once: a
// backend may deliver a job again if its lease is lost (a crashed worker),
// so handlers of shared, durable backends should be idempotent.
//
// NewMemoryBackend is the default, in-process implementation. A backend
// shared by several processes may also implement Notifier and LeaseKeeper,
// and any backend UsageReporter (the memory backend does).
// The queuetest package holds the behaviour suite every backend must pass.
//
// A Backend is used by one Queue: New calls Open once before any other
// method; Shutdown calls Close once after the workers have stopped. All other
// methods may be called concurrently.
type Backend interface {
	// Open configures the backend with the Queue's settings.
	Open(cfg BackendConfig) error

	// Enqueue stores a new job, pending or (if job.RunAt is in the future)
	// scheduled, and returns its ID. In this order:
	//   - if job.ID names a job still kept (active or retained) with the
	//     same Owner, it stores nothing and returns job.ID with a nil error
	//     (a repeated submission), and with another Owner an error wrapping
	//     ErrInvalidJob ("ID in use");
	//   - if job.UniqueKey matches an active job of the same Owner, it
	//     stores nothing and returns that job's ID with a nil error;
	//   - if job.Owner is not empty, it checks quota against the owner's
	//     jobs with Quota.Check, atomically with the store, and returns its
	//     error (wrapping ErrQuotaExceeded);
	//   - when cfg.Capacity active jobs exist, or the active jobs' payload
	//     bytes plus job's would exceed a positive cfg.MaxBytes, it returns
	//     an error wrapping ErrQueueFull, or with cfg.BlockOnFull waits for
	//     room until ctx ends and then returns ctx.Err().
	// Before a stored job can be fetched, Enqueue calls cfg.OnQueued, once
	// per stored job and never for a job it did not store. The backend may
	// keep job; the caller does not modify it.
	Enqueue(ctx context.Context, job *Job, quota Quota) (string, error)

	// Fetch leases up to max ready jobs, highest priority first and FIFO
	// within a level (subject to cfg.AgingInterval; the memory backend
	// also takes the owners of a level in turn), appends them to dst and
	// returns the extended slice. Each leased job is marked running with its
	// attempt count increased. If no job is ready it blocks until one is or
	// ctx ends, then returns dst and ctx.Err(); with ctx already done it
	// still returns the jobs ready now, which makes it a poll.
	Fetch(ctx context.Context, dst []Lease, max int) ([]Lease, error)

	// Get returns a snapshot of a job, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (JobInfo, error)

	// List returns snapshots of the jobs matching f (see ListFilter.Match),
	// newest first (by ID, descending), at most f's limit of them. With
	// f.Summary it may leave out Payload, Result and Metadata (the Queue
	// removes them anyway).
	List(ctx context.Context, f ListFilter) ([]JobInfo, error)

	// Cancel cancels a pending, scheduled or retrying job at once (state
	// canceled) and returns its new snapshot. For a running job it records
	// the request and returns the running snapshot: the Queue running the
	// job cancels the handler's context (through Notifier in shared
	// backends). For a final job it returns the snapshot and an error
	// wrapping ErrFinished.
	Cancel(ctx context.Context, id string) (JobInfo, error)

	// Stats returns the backend's gauges.
	Stats(ctx context.Context) (BackendStats, error)

	// Close releases the backend. Outstanding leases become invalid.
	Close(ctx context.Context) error
}

// Lease is one delivery of a job to a worker. Exactly one of Ack, Nack or
// Term ends it; afterwards the lease must not be used.
type Lease interface {
	// Job returns the leased job; it must not be modified.
	Job() *Job
	// Attempt returns the attempt number of this delivery, starting at 1.
	Attempt() int
	// Progress records the handler's progress (percent 0-100 and a message).
	Progress(ctx context.Context, percent float64, message string) error
	// Extend renews the lease so the backend does not redeliver the job
	// while the handler still runs.
	Extend(ctx context.Context) error
	// Ack ends the job as succeeded with the handler's result.
	Ack(ctx context.Context, result json.RawMessage) error
	// Nack records the attempt's error and makes the job ready again after
	// delay (state retrying until then).
	Nack(ctx context.Context, delay time.Duration, err error) error
	// Term ends the job in state (StateFailed or StateCanceled) with err,
	// with no further delivery.
	Term(ctx context.Context, state State, err error) error
}

// BackendConfig is what a Queue passes to Backend.Open, taken from Config
// with its defaults applied.
type BackendConfig struct {
	// Capacity bounds the active jobs (pending, scheduled, running,
	// retrying). Always positive.
	Capacity int
	// MaxBytes bounds the payload and result bytes of the jobs kept, active
	// and retained (see Config.MaxBytes): the backend drops retained jobs
	// oldest first to stay under it and refuses (ErrQueueFull) a job whose
	// payload would take the active jobs' payload bytes past it. Positive,
	// or negative for no bound.
	MaxBytes int64
	// BlockOnFull makes Enqueue wait for room instead of returning
	// ErrQueueFull.
	BlockOnFull bool
	// AgingInterval, when positive, raises a waiting job's effective level
	// by one per interval waited (see Config.AgingInterval). Zero means strict
	// priority.
	AgingInterval time.Duration
	// Retention bounds the finished jobs kept for Get and List, with its
	// defaults applied: MaxJobs and MaxAge are never zero.
	Retention Retention
	// WorkerTag identifies the Queue (the tail of the IDs it makes);
	// backends store it in JobInfo.Worker of the jobs it leases.
	WorkerTag string
	// OnQueued is called by Enqueue for each stored job, with its state
	// (pending or scheduled), before the job can be fetched. It must not
	// block and must not call the backend.
	OnQueued func(job *Job, state State)
}

// Retention bounds the finished jobs a backend keeps for Get, List and Wait.
// A finished job is dropped when more than MaxJobs finished jobs exist or
// when it finished more than MaxAge ago (checked whenever a job finishes and
// on Get, List and Stats).
type Retention struct {
	// MaxJobs is the number of finished jobs kept. Zero means 10,000; a
	// negative value keeps none.
	MaxJobs int `json:"max_jobs"`
	// MaxAge is how long a finished job is kept. Zero means one hour; a
	// negative value means no age limit (MaxJobs still applies).
	MaxAge time.Duration `json:"max_age"`
}

// ListFilter selects jobs for Queue.List. The zero value selects the most
// recent 100 jobs of every type, state and owner, in full.
//
// List returns jobs newest first (by ID, which sorts by submission time for
// the IDs Queue makes). To page through them, pass the ID of the last job
// of a page as the Cursor of the next request with the same filter; a page
// shorter than the limit is the last. Each job kept through the whole walk
// appears exactly once; a job submitted meanwhile sorts before the cursor
// and is not seen.
type ListFilter struct {
	Type  string `json:"type,omitempty"`  // empty: every type
	State State  `json:"state,omitempty"` // StateUnknown: every state
	Owner string `json:"owner,omitempty"` // empty: every owner
	Limit int    `json:"limit,omitempty"` // zero: 100; negative: no limit
	// Cursor, when set, is the ID of the last job of the previous page:
	// the page holds only jobs with a smaller ID (older ones). Empty
	// starts from the newest.
	Cursor string `json:"cursor,omitempty"`
	// Summary leaves out each job's Payload, Result and Metadata and cuts
	// its LastError to the first line, for listings whose size must not
	// grow with the jobs' data; Queue.Get returns a job in full. False
	// returns jobs in full.
	Summary bool `json:"summary,omitempty"`
}

func (f ListFilter) limit() int {
	if f.Limit == 0 {
		return 100
	}
	return f.Limit
}

// Match reports whether info passes the filter's Type, State, Owner and
// Cursor. It does not apply Limit or Summary.
func (f ListFilter) Match(info *JobInfo) bool {
	return f.match(&info.Job, info.State)
}

func (f ListFilter) match(job *Job, st State) bool {
	return (f.Type == "" || f.Type == job.Type) && (f.State == StateUnknown || f.State == st) &&
		(f.Owner == "" || f.Owner == job.Owner) && (f.Cursor == "" || job.ID < f.Cursor)
}

// summarize strips info to what ListFilter.Summary keeps.
func (info *JobInfo) summarize() {
	info.Payload, info.Result, info.Metadata = nil, nil, nil
	if i := strings.IndexByte(info.LastError, '\n'); i >= 0 {
		info.LastError = info.LastError[:i]
	}
}

// BackendStats are a backend's gauges.
type BackendStats struct {
	Depth     [NumPriorities]int `json:"depth"`     // pending jobs per level
	Pending   int                `json:"pending"`   // ready, waiting for a worker
	Scheduled int                `json:"scheduled"` // waiting for RunAt
	Retrying  int                `json:"retrying"`  // waiting for a retry delay
	Running   int                `json:"running"`   // leased
	Retained  int                `json:"retained"`  // finished jobs kept
}

// Resyncer is implemented by shared backends whose events can be lost: a
// final event published while this process's connection to the store was
// down never reaches its waiters. While Wait (or Run) waits for a job of
// such a backend it re-reads the job's state with Get every
// ResyncInterval and whenever the channel of Resync closes, so it returns
// within about an interval of the job's end however many events were lost.
// A job whose final event arrives costs no extra Get. The memory backend
// loses no events and does not implement it.
type Resyncer interface {
	// Resync returns a channel that is closed when the state of the jobs
	// should be read again (the backend has just reconnected). Each call
	// after that returns a new channel, for the next time.
	Resync() <-chan struct{}
	// ResyncInterval is how often a waiter reads the state anyway; zero
	// or negative means only on Resync.
	ResyncInterval() time.Duration
}

// Notifier is implemented by backends shared by several processes. New
// calls Notify once, after Open, with hooks into the Queue.
type Notifier interface {
	// Notify hands the backend the Queue's hooks.
	Notify(h Hooks)
}

// Hooks lets a shared backend reach the Queue that uses it.
type Hooks struct {
	// CancelRunning cancels the handler's context of job id if this Queue
	// runs it (a Cancel made through another process). Safe to call from
	// any goroutine; it does not block.
	CancelRunning func(id string)
	// Publish delivers an event observed in the shared store (a job run or
	// submitted by another process) to this Queue's subscribers and
	// waiters. The backend must not republish events of this Queue's own
	// jobs, which the Queue publishes itself.
	Publish func(Event)
}

// LeaseKeeper is implemented by backends whose leases expire. While a
// handler runs, the Queue calls Lease.Extend every LeaseDuration()/3. The
// memory backend's leases never expire and it does not implement it.
type LeaseKeeper interface {
	// LeaseDuration is how long a lease lasts without Extend.
	LeaseDuration() time.Duration
}

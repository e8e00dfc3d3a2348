package jobqueue

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"
)

const (
	defaultCapacity     = 65_536
	defaultMaxPayload   = 1 << 20
	defaultMaxResult    = 1 << 20
	defaultMaxBytes     = 256 << 20
	defaultSubBuffer    = 1024
	defaultRetainedJobs = 10_000
	defaultRetainedAge  = time.Hour
)

// ShutdownPolicy says what Shutdown does with jobs that have not started.
type ShutdownPolicy uint8

const (
	// DrainPending runs the jobs that are ready (pending) when Shutdown
	// begins, and those that become ready while it runs, until none is left
	// or Shutdown's context ends. Scheduled jobs and retry delays that have
	// not come due are left.
	DrainPending ShutdownPolicy = iota
	// LeavePending stops fetching at once: only running jobs finish, and
	// everything else stays in the backend (lost with the memory backend,
	// kept by a durable one).
	LeavePending
)

func (p ShutdownPolicy) name() string {
	if p == LeavePending {
		return "leave-pending"
	}
	return "drain-pending"
}

// Config configures a Queue. The zero value is a working configuration:
// an in-memory backend, one worker per CPU, strict priority, no logging.
type Config struct {
	// Workers is the number of worker goroutines: n > 0 runs exactly n.
	// Zero means runtime.GOMAXPROCS(0). A negative value is invalid (New
	// returns an error); to run none, set NoWorkers.
	Workers int
	// Autoscale, if set, sizes the workers between its Min and Max from
	// the backlog and the jobs' run time (see Autoscale); Workers must then
	// be zero. Nil means a fixed count.
	Autoscale *Autoscale
	// NoWorkers makes a Queue that starts no worker: it only submits and
	// observes jobs run by other processes sharing its backend, and Submit
	// accepts types with no handler here. Workers must then be zero. False
	// means the Queue runs jobs, and Submit refuses types with no handler.
	NoWorkers bool
	// Capacity bounds the active jobs (pending, scheduled, running,
	// retrying). Zero means 65,536.
	Capacity int
	// BlockOnFull makes Submit wait for room until its context ends instead
	// of returning ErrQueueFull. False means fail fast.
	BlockOnFull bool
	// Backend stores the jobs. Nil means NewMemoryBackend(). The Queue owns
	// it: Shutdown closes it.
	Backend Backend
	// AgingInterval turns on anti-starvation. Zero means strict priority: a
	// job runs only when no higher level has a ready job, so a steady flood
	// of high jobs starves lower ones indefinitely. With a positive interval
	// a ready job ranks one level higher per interval waited (up to
	// MaxPriority), FIFO among equals; a job at level p therefore waits at
	// most about (MaxPriority-p) intervals plus the queue ahead of it at the
	// top level. The cost is bounded inversion: once aged, an old low job
	// runs before fresh high ones.
	AgingInterval time.Duration
	// Retention bounds the finished jobs kept for Get, List and Wait; see
	// Retention for its zero values (10,000 jobs, one hour).
	Retention Retention
	// MaxAttempts is the default of JobRequest.MaxAttempts. Zero means 3.
	MaxAttempts int
	// Timeout is the default of JobRequest.Timeout. Zero (or negative)
	// means no timeout.
	Timeout time.Duration
	// RetryDelay is the base of the exponential backoff: attempt n waits
	// RetryDelay*2^(n-1), capped at MaxRetryDelay, with jitter (a random
	// value between half and all of it). Zero means one second.
	RetryDelay time.Duration
	// MaxRetryDelay caps the backoff. Zero means five minutes.
	MaxRetryDelay time.Duration
	// Backoff, if set, replaces the exponential backoff: it returns the
	// delay before the attempt after attempt n failed with err. Nil means
	// the exponential backoff above.
	Backoff func(attempt int, err error) time.Duration
	// ShutdownPolicy says what Shutdown does with jobs not yet started.
	// The zero value is DrainPending.
	ShutdownPolicy ShutdownPolicy
	// MaxPayload bounds a job's payload in bytes. Zero means 1 MiB.
	MaxPayload int
	// MaxResult bounds a job's result in bytes: a handler returning a
	// bigger one fails the attempt for good with an error wrapping
	// ErrResultTooLarge. Zero means 1 MiB; negative means no limit.
	MaxResult int
	// MaxBytes bounds the payload and result bytes of every job the backend
	// keeps, active and retained. Retained (finished) jobs are dropped
	// oldest first to stay under it, and Submit fails with an error
	// wrapping ErrQueueFull (or with BlockOnFull waits) when the active
	// jobs' payload bytes plus the new payload would exceed it. Zero means
	// 256 MiB; negative means no bound. Together with Capacity it bounds
	// the memory the memory backend holds for jobs.
	MaxBytes int64
	// SubscriberBuffer is the default channel capacity of a Subscription.
	// Zero means 1024.
	SubscriberBuffer int
	// OnError, if set, is called on the worker with every failed attempt's
	// error (a *panics.Error for a panic) and with backend errors (job nil).
	// It must not block. Nil means errors are only stored with the job (and
	// logged, with a Logger).
	OnError func(job *Job, attempt int, err error)
	// Logger receives the Queue's log records, with structured attributes
	// ("queue" the Queue's Tag, "job", "type", "attempt", "delay", "err"):
	// start and shutdown (Info), a failed attempt to be retried (Warn), a
	// job failed for good and a handler panic with its "stack" (Error),
	// jobs interrupted by Shutdown (Warn), and backend errors (Error; a
	// failing fetch is logged once until it succeeds again). Successful
	// jobs are not logged. Nil means silent.
	Logger *slog.Logger
}

// withDefaults returns cfg with every zero value replaced by its default,
// or an error if cfg is invalid. It is the one place defaults are applied.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.Workers < 0:
		return cfg, fmt.Errorf("jobqueue: negative Workers %d (zero means GOMAXPROCS; NoWorkers runs none)", cfg.Workers)
	case cfg.NoWorkers && cfg.Workers != 0:
		return cfg, fmt.Errorf("jobqueue: Workers %d with NoWorkers", cfg.Workers)
	case cfg.Autoscale != nil && (cfg.NoWorkers || cfg.Workers != 0):
		return cfg, fmt.Errorf("jobqueue: Autoscale with Workers %d or NoWorkers", cfg.Workers)
	case cfg.Capacity < 0:
		return cfg, fmt.Errorf("jobqueue: negative Capacity %d", cfg.Capacity)
	case cfg.MaxAttempts < 0:
		return cfg, fmt.Errorf("jobqueue: negative MaxAttempts %d", cfg.MaxAttempts)
	case cfg.AgingInterval < 0:
		return cfg, fmt.Errorf("jobqueue: negative AgingInterval %v", cfg.AgingInterval)
	case cfg.ShutdownPolicy > LeavePending:
		return cfg, fmt.Errorf("jobqueue: unknown ShutdownPolicy %d", cfg.ShutdownPolicy)
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = defaultCapacity
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = defaultMaxBytes
	}
	if cfg.MaxResult == 0 {
		cfg.MaxResult = defaultMaxResult
	}
	cfg.Retention = cfg.Retention.withDefaults()
	if cfg.Autoscale != nil {
		a, err := cfg.Autoscale.withDefaults()
		if err != nil {
			return cfg, err
		}
		cfg.Autoscale, cfg.Workers = a, a.Min
	}
	if cfg.Workers == 0 && !cfg.NoWorkers {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Timeout < 0 {
		cfg.Timeout = 0
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.MaxRetryDelay <= 0 {
		cfg.MaxRetryDelay = 5 * time.Minute
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = defaultMaxPayload
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = defaultSubBuffer
	}
	if cfg.Backend == nil {
		cfg.Backend = NewMemoryBackend()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// withDefaults returns r with its zero fields replaced by their defaults.
func (r Retention) withDefaults() Retention {
	if r.MaxJobs == 0 {
		r.MaxJobs = defaultRetainedJobs
	}
	if r.MaxAge == 0 {
		r.MaxAge = defaultRetainedAge
	}
	return r
}

// withDefaults returns c with its zero fields replaced by the defaults of
// the Config fields they come from. New passes a complete BackendConfig;
// this serves backends opened on their own (in tests and benchmarks).
func (c BackendConfig) withDefaults() BackendConfig {
	if c.Capacity <= 0 {
		c.Capacity = defaultCapacity
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = defaultMaxBytes
	}
	c.Retention = c.Retention.withDefaults()
	return c
}

// backendConfig is the BackendConfig that New passes to Backend.Open.
func (q *Queue) backendConfig() BackendConfig {
	return BackendConfig{
		Capacity:      q.cfg.Capacity,
		BlockOnFull:   q.cfg.BlockOnFull,
		AgingInterval: q.cfg.AgingInterval,
		Retention:     q.cfg.Retention,
		MaxBytes:      q.cfg.MaxBytes,
		WorkerTag:     q.Tag(),
		OnQueued:      q.onQueued,
	}
}

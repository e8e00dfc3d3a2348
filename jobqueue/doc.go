// Package jobqueue is a priority job queue: callers submit jobs, a fixed
// set of worker goroutines runs them by priority through typed handlers,
// with retries, timeouts, cancellation, progress reports and events.
//
//	q, err := jobqueue.New(jobqueue.Config{})
//	if err != nil { ... }
//	jobqueue.HandleFunc(q, "fibonacci", func(ctx context.Context, n int) (int, error) {
//		a, b := 0, 1
//		for range n {
//			a, b = b, a+b
//		}
//		return a, nil
//	})
//	q.Start()
//	defer q.Shutdown(context.Background())
//
//	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: []byte("30"), Priority: jobqueue.High})
//	info, err := q.Wait(ctx, id) // info.Result is 832040
//
// # Priorities and starvation
//
// Levels go from 0 (Low) to 9 (Critical). Dispatch is strict: a worker
// takes a job of the highest non-empty level, so with one worker jobs run
// exactly in priority order. Within a level, the memory backend takes the
// owners with ready jobs in turn (round robin; the jobs with no owner form
// one owner) and each owner's jobs in FIFO order, so one owner's burst of
// thousands of jobs delays another owner's job at the same level by about
// one job per owner; with a single owner a level is plain FIFO. Under a
// steady flood of high jobs, strict priority starves the low ones forever;
// setting Config.AgingInterval bounds that wait by ranking a level one step
// higher per interval its oldest ready job has waited, at the cost of
// letting aged jobs pass fresh higher ones. Aging picks the level, the
// round robin the owner within it: a job at level p waits at most about
// (MaxPriority-p) intervals, plus the older jobs ranked at the top, plus
// one turn of each other owner of its level per job its own owner queued
// before it.
//
// # Owners, quotas and bytes
//
// A server that runs jobs for clients sets JobRequest.Owner to the client's
// principal. The owner is stored with the job (Job.Owner) and carried by
// its events; ListFilter.Owner, EventFilter.Owner and Queue.Usage select
// one owner's jobs, and JobRequest.Quota limits the owner's active jobs,
// delayed jobs, payload bytes and how far ahead RunAt may be, checked
// atomically by the backend (ErrQuotaExceeded), while other owners go on
// submitting. Config.MaxBytes bounds the payload and result bytes kept, and
// Config.MaxPayload and Config.MaxResult bound each job's. Job IDs are
// unguessable, and a retried submission with the same JobRequest.ID is
// idempotent. Queue.Get and Queue.Cancel do not check owners: the server
// compares JobInfo.Owner with the caller's principal.
//
// # Failures
//
// A handler error fails the attempt; the job is retried with exponential
// backoff and jitter until it has run MaxAttempts times, unless the error
// is marked with Permanent. A payload that does not decode into a typed
// handler's input fails at once (ErrBadPayload).
//
// Panic policy: a panicking handler is recovered on its worker and the
// attempt fails (and is retried) with a *panics.Error (package
// corework/panics: Source "jobqueue", Task the job type, the panic value and
// the stack); the job's stored LastError carries the message, a blank line
// and the stack. A panic in a procpool task run through ProcPoolHandler
// arrives as the *panics.Error procpool made (Source "procpool", the
// worker's stack), unwrapped. One errors.As with a *panics.Error finds
// either in Config.OnError. Nothing a handler does crashes the Queue.
//
// # Timeouts and cancellation
//
// A job's Timeout and Queue.Cancel act through the handler's context. A
// handler that ignores its context cannot be stopped: it keeps its worker
// until it returns. CPU-bound work that must be killable belongs in a
// worker process (package procpool), where a timeout kills the process.
//
// # Events
//
// Subscribe delivers queued, started, progress, retrying and final events
// for one job, one type or all jobs. A slow subscriber never blocks a
// worker: non-final events are dropped and counted, final ones are held,
// and a subscriber too far behind is ended with ErrSlowSubscriber. Wait
// blocks for one job's final state. Job, JobInfo, Event and Stats encode to
// JSON as they are; Event's encoding (Event.MarshalJSON) is the one the
// WebSocket bridge sends, written by hand for speed.
//
// # Workers that size themselves
//
// Config.Autoscale replaces the fixed worker count with a range: the
// queue grows its workers when jobs wait longer than Autoscale.Target at
// the measured run time, and shrinks them when fewer have been enough for
// a Cooldown, at most one change per Cooldown (see Autoscale). Each
// change is logged and counted (Stats.Workers, Stats.Resizes; monitor
// exports both), and Autoscale.OnResize can resize a pool the handlers
// feed.
//
// # Recurring jobs
//
// Queue.Schedule registers a Schedule: a job submitted at every tick of a
// cron expression (seconds optional, time zones, descriptors such as
// @daily, parsed by github.com/robfig/cron/v3) or of a fixed interval.
// Each tick's job has an ID made from the schedule's name and the tick, so
// on a shared backend every process may register the same schedule and a
// tick is still one job, run once. Ticks missed while no process ran are
// caught up at Start by Schedule.CatchUp (the latest one, by default), on
// backends that record the last tick (ScheduleStore: the memory backend
// for the life of the process, JetStream across restarts).
//
// # Backends
//
// Jobs live in a Backend: in memory by default (NewMemoryBackend), or in a
// shared, durable store whose leases give at-least-once delivery. Handlers
// and callers do not change with the backend. Memory stays bounded:
// Config.Capacity bounds the active jobs, Config.Retention the finished
// ones kept for inspection, and Config.MaxBytes the bytes of both.
//
// # Logging
//
// With Config.Logger set, the Queue logs with structured attributes (job,
// type, attempt, delay, err): start and shutdown, retried attempts (Warn),
// jobs failed for good and handler panics with their stack (Error), jobs
// interrupted by Shutdown, and backend errors. It logs nothing per
// successful job. A nil Logger is silent.
//
// # Workers
//
// Config.Workers follows the library's one convention for worker counts
// (the same as in pool and procpool): n > 0 means exactly n, zero means
// runtime.GOMAXPROCS(0), negative is invalid. A process that only submits
// and watches jobs run elsewhere on a shared backend sets Config.NoWorkers.
//
// # Goroutines
//
// A Queue runs Config.Workers worker goroutines from Start to Shutdown, the
// memory backend one scheduler goroutine, a Subscription one goroutine only
// while it holds overflowed final events, and a lease keeper for backends
// whose leases expire. The Queue makes no goroutine, timer or channel per
// job: a job costs a few small allocations (its ID, Job, record and handler
// context); Wait adds one channel per call, and a handler that calls
// ctx.Done() one per attempt. Shutdown waits for every goroutine.
package jobqueue

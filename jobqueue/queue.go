package jobqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// entry is a registered handler with its per-type statistics.
type entry struct {
	h   Handler
	c   counters
	run histogram
}

// Queue is a priority job queue: callers Submit jobs, a fixed set of worker
// goroutines runs them by priority through the registered handlers, and
// events report their progress. Its methods are safe for concurrent use.
//
// The lifecycle is New, Handle (and Use), Start, then Shutdown. Jobs
// submitted before Start wait for it.
type Queue struct {
	cfg     Config
	log     *slog.Logger // cfg.Logger with the queue's tag
	backend Backend
	ids     *idGen
	started time.Time

	hmu      sync.Mutex
	handlers atomic.Pointer[map[string]*entry]
	mws      []Middleware

	life      sync.Mutex
	running   bool
	workers   []*worker
	live      atomic.Int32
	closed    atomic.Bool
	hardStop  atomic.Bool
	fetchCtx  context.Context
	stopFetch context.CancelFunc
	wdone     chan struct{} // closed when every worker has exited
	final     sync.Once
	finalDone chan struct{}
	done      chan struct{} // closed once Shutdown has finished
	keeperEnd chan struct{}
	keeperWG  sync.WaitGroup
	left      atomic.Int64
	fetchFail atomic.Bool // a worker's fetch failed and none has succeeded since

	subMu sync.Mutex
	subs  atomic.Pointer[[]*Subscription]

	waitMu   sync.Mutex
	waiters  map[string][]chan Event
	nwaiters atomic.Int64

	cancelMu sync.Mutex
	cancels  map[string]time.Time // Cancel requests not yet matched to a local handler
	npending atomic.Int32

	submitted   atomic.Uint64
	interrupted atomic.Int64
	idle        counters // outcomes settled outside workers (Cancel of a waiting job)
	levels      [NumPriorities]counters
	levelWait   [NumPriorities]histogram
}

// New returns a Queue configured by cfg. It opens the backend but starts no
// worker: register handlers, then call Start. It returns an error if cfg is
// invalid or the backend fails to open.
func New(cfg Config) (*Queue, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	q := &Queue{
		cfg:       cfg,
		backend:   cfg.Backend,
		ids:       newIDGen(),
		started:   clockNow(),
		wdone:     make(chan struct{}),
		finalDone: make(chan struct{}),
		done:      make(chan struct{}),
		waiters:   make(map[string][]chan Event),
		cancels:   make(map[string]time.Time),
	}
	q.log = cfg.Logger.With("queue", q.Tag())
	q.fetchCtx, q.stopFetch = context.WithCancel(context.Background())
	err = q.backend.Open(BackendConfig{
		Capacity:      cfg.Capacity,
		BlockOnFull:   cfg.BlockOnFull,
		AgingInterval: cfg.AgingInterval,
		Retention:     cfg.Retention,
		WorkerTag:     q.Tag(),
		OnQueued:      q.onQueued,
	})
	if err != nil {
		q.stopFetch()
		return nil, fmt.Errorf("jobqueue: opening backend: %w", err)
	}
	if n, ok := q.backend.(Notifier); ok {
		n.Notify(Hooks{CancelRunning: q.cancelLocal, Publish: q.publishRemote})
	}
	return q, nil
}

// Tag returns the random 7-character tag that ends this Queue's job IDs and
// marks the jobs its workers run (JobInfo.Worker).
func (q *Queue) Tag() string { return string(q.ids.tag[:]) }

// Handle registers h for jobs of type jobType, wrapped in the middleware
// registered so far with Use. It may be called before or after Start. It
// panics if jobType is empty, h is nil, or jobType already has a handler.
func (q *Queue) Handle(jobType string, h Handler) {
	if jobType == "" {
		panic("jobqueue: Handle with an empty job type")
	}
	if h == nil {
		panic("jobqueue: nil handler for " + jobType)
	}
	if f, ok := h.(HandlerFunc); ok && f == nil {
		panic("jobqueue: nil handler for " + jobType)
	}
	q.hmu.Lock()
	defer q.hmu.Unlock()
	old := q.handlers.Load()
	if old != nil {
		if _, dup := (*old)[jobType]; dup {
			panic("jobqueue: multiple registrations for " + jobType)
		}
	}
	for i := len(q.mws) - 1; i >= 0; i-- {
		h = q.mws[i](h)
	}
	m := make(map[string]*entry, 1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[jobType] = &entry{h: h}
	q.handlers.Store(&m)
}

// Use appends middleware applied to every handler registered afterwards;
// the first one registered is the outermost. It panics if a middleware is
// nil or a handler is already registered (middleware must come first, so
// every handler gets the same chain).
func (q *Queue) Use(mw ...Middleware) {
	q.hmu.Lock()
	defer q.hmu.Unlock()
	if m := q.handlers.Load(); m != nil && len(*m) > 0 {
		panic("jobqueue: Use after Handle")
	}
	for _, f := range mw {
		if f == nil {
			panic("jobqueue: nil middleware")
		}
	}
	q.mws = append(q.mws, mw...)
}

func (q *Queue) entry(jobType string) *entry {
	if m := q.handlers.Load(); m != nil {
		return (*m)[jobType]
	}
	return nil
}

// Start starts the workers. It returns ErrClosed after Shutdown and does
// nothing if the workers already run.
func (q *Queue) Start() error {
	q.life.Lock()
	defer q.life.Unlock()
	if q.closed.Load() {
		return ErrClosed
	}
	if q.running {
		return nil
	}
	q.running = true
	q.workers = make([]*worker, q.cfg.Workers)
	q.live.Store(int32(len(q.workers)))
	if len(q.workers) == 0 {
		close(q.wdone)
	}
	for i := range q.workers {
		w := &worker{q: q}
		q.workers[i] = w
		go w.loop()
	}
	if k, ok := q.backend.(LeaseKeeper); ok && len(q.workers) > 0 {
		if d := k.LeaseDuration(); d > 0 {
			q.keeperEnd = make(chan struct{})
			q.keeperWG.Add(1)
			go q.keepLeases(d / 3)
		}
	}
	q.log.Info("queue started", "workers", len(q.workers), "backend", fmt.Sprintf("%T", q.backend))
	return nil
}

func (q *Queue) workerExited() {
	if q.live.Add(-1) == 0 {
		close(q.wdone)
	}
}

// keepLeases extends the leases of running jobs every interval.
func (q *Queue) keepLeases(every time.Duration) {
	defer q.keeperWG.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-q.keeperEnd:
			return
		case <-t.C:
		}
		for _, w := range q.workers {
			if c := w.cur.Load(); c != nil {
				if err := c.lease.Extend(context.Background()); err != nil {
					err = fmt.Errorf("jobqueue: extending lease: %w", err)
					q.logBackendError(c.job, c.attempt, "extending lease failed", err)
					q.reportError(c.job, c.attempt, err)
				}
			}
		}
	}
}

// Submit validates req, stores it as a new job and returns the job's ID. It
// returns ErrClosed after Shutdown began, an error wrapping ErrInvalidJob or
// ErrNoHandler for a request it refuses, and ErrQueueFull when the queue is
// at capacity (with Config.BlockOnFull it waits for room instead, and
// returns ctx.Err() if ctx ends first, having stored nothing). With a
// UniqueKey matching an active job it returns that job's ID and stores
// nothing. Payload and Metadata are copied. It costs an ID, a few small
// allocations and one backend call; it does not wait for the job to run
// (see Wait and Run).
func (q *Queue) Submit(ctx context.Context, req JobRequest) (string, error) {
	job, err := q.newJob(req)
	if err != nil {
		return "", err
	}
	return q.enqueue(ctx, job)
}

// NewID returns a new job ID, unique and time-sortable like the ones Submit
// makes, for a JobRequest.ID chosen before submitting (to subscribe to the
// job's events first).
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
	now := clockNow()
	job := &Job{
		ID:          req.ID,
		Type:        req.Type,
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
	}
	return job, nil
}

func (q *Queue) enqueue(ctx context.Context, job *Job) (string, error) {
	id, err := q.backend.Enqueue(ctx, job)
	if err != nil {
		return "", err
	}
	if id == job.ID {
		q.submitted.Add(1)
	}
	return id, nil
}

// onQueued publishes the queued event from inside Enqueue, before the job
// can be fetched, so subscribers see it before the job's started event.
func (q *Queue) onQueued(job *Job, st State) {
	if !q.listening(false) {
		return
	}
	ev := Event{Kind: EventQueued, JobID: job.ID, Type: job.Type, Priority: job.Priority, State: st, Time: job.SubmittedAt}
	if st == StateScheduled {
		ev.NextRunAt = job.RunAt
	}
	q.publish(&ev)
}

// Get returns a snapshot of job id, or an error wrapping ErrNotFound if the
// job is unknown or retention has dropped it.
func (q *Queue) Get(ctx context.Context, id string) (JobInfo, error) {
	return q.backend.Get(ctx, id)
}

// List returns snapshots of the jobs matching f, newest first. With the
// memory backend it costs O(n log n) in the jobs kept (active plus
// retained); it is meant for inspection, not for polling in a loop.
func (q *Queue) List(ctx context.Context, f ListFilter) ([]JobInfo, error) {
	return q.backend.List(ctx, f)
}

// Cancel cancels job id. A pending, scheduled or retrying job is canceled
// at once. A running job has its handler's context canceled (cause
// ErrCanceled) and is marked canceled when its handler returns, whatever it
// returns. Cancel returns an error wrapping ErrNotFound for an unknown job
// and ErrFinished for a job already in a final state. It does not wait for
// the handler; use Wait for that.
func (q *Queue) Cancel(ctx context.Context, id string) error {
	info, err := q.backend.Cancel(ctx, id)
	if err != nil {
		return err
	}
	switch info.State {
	case StateCanceled:
		q.count(nil, q.entry(info.Type), &info.Job, EventCanceled)
		if q.listening(true) {
			q.publish(&Event{Kind: EventCanceled, JobID: id, Type: info.Type, Priority: info.Priority,
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

func (q *Queue) runningWorkers() []*worker {
	q.life.Lock()
	defer q.life.Unlock()
	return q.workers
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

// progress stores and publishes a handler's progress report.
func (q *Queue) progress(c *jobCtx, percent float64, msg string) error {
	if err := c.lease.Progress(context.Background(), percent, msg); err != nil {
		return err
	}
	if q.listening(false) {
		q.publish(&Event{Kind: EventProgress, JobID: c.job.ID, Type: c.job.Type, Priority: c.job.Priority,
			State: StateRunning, Attempt: c.attempt, Progress: percent, Message: msg, Time: clockNow()})
	}
	return nil
}

// Subscribe returns a subscription to the events selected by f. Close it
// when done. After Shutdown it returns a subscription already ended with
// ErrClosed. Publishing costs nothing while no one subscribes; with
// subscribers, each event costs a filter check and a non-blocking channel
// send per subscriber. To follow one job without a gap, subscribe first,
// then Get it: an event may repeat what Get showed, but none is missed.
func (q *Queue) Subscribe(f EventFilter) *Subscription {
	s := newSubscription(q, f, q.cfg.SubscriberBuffer)
	q.subMu.Lock()
	defer q.subMu.Unlock()
	select {
	case <-q.finalDone:
		s.mu.Lock()
		s.closeLocked(ErrClosed)
		s.mu.Unlock()
		return s
	default:
	}
	var n []*Subscription
	if old := q.subs.Load(); old != nil {
		n = append(n, *old...)
	}
	n = append(n, s)
	q.subs.Store(&n)
	return s
}

func (q *Queue) removeSub(s *Subscription) {
	q.subMu.Lock()
	defer q.subMu.Unlock()
	old := q.subs.Load()
	if old == nil {
		return
	}
	n := make([]*Subscription, 0, len(*old))
	for _, x := range *old {
		if x != s {
			n = append(n, x)
		}
	}
	q.subs.Store(&n)
}

// listening reports whether an event needs to be built: someone subscribes,
// or (for final events) someone waits.
func (q *Queue) listening(final bool) bool {
	if s := q.subs.Load(); s != nil && len(*s) > 0 {
		return true
	}
	return final && q.nwaiters.Load() > 0
}

// publish hands ev to the matching subscribers and, if final, to waiters.
func (q *Queue) publish(ev *Event) {
	if s := q.subs.Load(); s != nil {
		for _, sub := range *s {
			if sub.match(ev) {
				sub.deliver(ev)
			}
		}
	}
	if ev.Kind.Final() && q.nwaiters.Load() > 0 {
		q.waitMu.Lock()
		chs := q.waiters[ev.JobID]
		delete(q.waiters, ev.JobID)
		q.waitMu.Unlock()
		for _, ch := range chs {
			ch <- *ev // buffered, one slot per waiter
		}
	}
}

// publishRemote is the Hooks.Publish of shared backends.
func (q *Queue) publishRemote(ev Event) { q.publish(&ev) }

// Wait blocks until job id reaches a final state or ctx ends, and returns
// its final snapshot. The error is nil for a succeeded job, a *JobError
// (matching ErrFailed or ErrCanceled) for a failed or canceled one,
// ctx.Err() if ctx ends first, ErrNotFound for an unknown job (or one
// retention dropped before Wait began), and ErrClosed if Shutdown finishes
// while the job is still active. Waiting costs one small channel and no
// goroutine. To submit and wait with no gap, use Run.
func (q *Queue) Wait(ctx context.Context, id string) (JobInfo, error) {
	return q.await(ctx, id, q.addWaiter(id))
}

// Run submits req and waits for the job's final state, like Submit then
// Wait, except that the wait is registered before the job is stored, so
// the result cannot be missed however fast the job runs and retention drops
// it. Its errors are Submit's and Wait's.
func (q *Queue) Run(ctx context.Context, req JobRequest) (JobInfo, error) {
	job, err := q.newJob(req)
	if err != nil {
		return JobInfo{}, err
	}
	ch := q.addWaiter(job.ID)
	id, err := q.enqueue(ctx, job)
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
	info, err := q.backend.Get(ctx, id)
	if err != nil {
		select {
		case ev := <-ch: // finished, and already dropped by retention
			info = infoFromEvent(&ev)
			return info, finalError(&info)
		default:
			return info, err
		}
	}
	if !info.State.Final() {
		select {
		case ev := <-ch:
			if info2, err := q.backend.Get(ctx, id); err == nil && info2.State.Final() {
				info = info2
			} else {
				info.State, info.LastError, info.Result = ev.State, ev.Error, ev.Result
				info.Attempts, info.FinishedAt = ev.Attempt, ev.Time
			}
		case <-ctx.Done():
			return info, ctx.Err()
		case <-q.done:
			if info, err = q.backend.Get(ctx, id); err != nil || !info.State.Final() {
				return info, ErrClosed
			}
		}
	}
	return info, finalError(&info)
}

func infoFromEvent(ev *Event) JobInfo {
	return JobInfo{
		Job:   Job{ID: ev.JobID, Type: ev.Type, Priority: ev.Priority},
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

// backoff returns the delay before the attempt following attempt n.
func (q *Queue) backoff(n int, err error) time.Duration {
	if q.cfg.Backoff != nil {
		return q.cfg.Backoff(n, err)
	}
	d := q.cfg.MaxRetryDelay
	if n < 62 {
		if e := q.cfg.RetryDelay << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
}

func (q *Queue) reportError(job *Job, attempt int, err error) {
	if q.cfg.OnError != nil {
		q.cfg.OnError(job, attempt, err)
	}
}

// logBackendError logs a backend error at Error level, with the job it
// concerns if any.
func (q *Queue) logBackendError(job *Job, attempt int, msg string, err error) {
	if job == nil {
		q.log.Error(msg, "err", err)
		return
	}
	q.log.Error(msg, "job", job.ID, "type", job.Type, "attempt", attempt, "err", err)
}

// count adds an outcome to the worker's (or, outside workers, the
// Queue's), the type's and the level's counters.
func (q *Queue) count(w *worker, e *entry, job *Job, k EventKind) {
	if w != nil {
		w.count(k)
	} else {
		q.idle.count(k)
	}
	if e != nil {
		e.c.count(k)
	}
	if k != EventRetrying {
		q.levels[job.Priority].count(k)
	}
}

// uncount takes back a count made before the lease was settled.
func (q *Queue) uncount(w *worker, e *entry, job *Job, k EventKind) {
	w.uncount(k)
	if e != nil {
		e.c.uncount(k)
	}
	q.levels[job.Priority].uncount(k)
}

// Stats returns counters, latencies and backend gauges. It costs a backend
// Stats call and a pass over every worker's histograms (a few microseconds
// per worker); call it at a human rate.
func (q *Queue) Stats() Stats {
	now := clockNow()
	s := Stats{Workers: q.cfg.Workers, Submitted: q.submitted.Load(), Uptime: now.Sub(q.started)}
	if bs, err := q.backend.Stats(context.Background()); err == nil {
		s.Depth, s.Pending, s.Scheduled, s.Retrying, s.Running, s.Retained =
			bs.Depth, bs.Pending, bs.Scheduled, bs.Retrying, bs.Running, bs.Retained
	}
	var wait, run histSum
	for _, w := range q.runningWorkers() {
		if w.cur.Load() != nil {
			s.Busy++
		}
		s.Succeeded += w.succeeded.Load()
		s.Failed += w.failed.Load()
		s.Retried += w.retried.Load()
		s.Canceled += w.canceled.Load()
		s.Throughput += float64(w.rate.lastSecond(now))
		wait.add(&w.wait)
		run.add(&w.run)
	}
	s.Canceled += q.idle.canceled.Load()
	s.Wait, s.Run = wait.latency(), run.latency()
	if m := q.handlers.Load(); m != nil {
		s.Types = make(map[string]TypeStats, len(*m))
		for k, e := range *m {
			var h histSum
			h.add(&e.run)
			s.Types[k] = TypeStats{Succeeded: e.c.succeeded.Load(), Failed: e.c.failed.Load(),
				Retried: e.c.retried.Load(), Canceled: e.c.canceled.Load(), Run: h.latency()}
		}
	}
	for p := range s.Priorities {
		var h histSum
		h.add(&q.levelWait[p])
		c := &q.levels[p]
		s.Priorities[p] = LevelStats{Pending: s.Depth[p], Succeeded: c.succeeded.Load(), Failed: c.failed.Load(),
			Canceled: c.canceled.Load(), Wait: h.latency()}
	}
	select {
	case <-q.done:
		s.Left = int(q.left.Load())
	default:
	}
	s.Interrupted = int(q.interrupted.Load())
	return s
}

// Shutdown stops the Queue: Submit returns ErrClosed from now on; jobs not
// yet started are drained or left as Config.ShutdownPolicy says; running
// jobs finish. If ctx ends first, Shutdown cancels the running handlers'
// contexts (cause ErrClosed; a job whose handler then fails goes back to
// pending, counted in Stats.Interrupted) and returns an error wrapping
// ctx.Err() without waiting for handlers that ignore their context; call
// Shutdown again to wait for them. Once the workers have exited, it ends
// the subscriptions (after their held final events, waiting at most a
// second for their readers), releases waiters, closes the backend and
// records in Stats.Left the active jobs left behind. Shutdown is idempotent and safe to call
// concurrently; after it returns nil, every goroutine of the Queue has
// exited.
func (q *Queue) Shutdown(ctx context.Context) error {
	q.life.Lock()
	if !q.closed.Load() {
		q.closed.Store(true)
		q.stopFetch()
		q.log.Info("queue shutting down", "policy", q.cfg.ShutdownPolicy.name())
		if !q.running {
			q.running = true
			close(q.wdone)
		}
	}
	q.life.Unlock()
	select {
	case <-q.wdone:
	case <-ctx.Done():
		first := !q.hardStop.Swap(true)
		running := 0
		for _, w := range q.runningWorkers() {
			if c := w.cur.Load(); c != nil {
				running++
				c.cancel(ErrClosed)
			}
		}
		if first {
			q.log.Warn("shutdown context ended; canceling running jobs", "running", running, "err", ctx.Err())
		}
		return fmt.Errorf("jobqueue: shutdown: %w", ctx.Err())
	}
	var err error
	q.final.Do(func() { err = q.finish(ctx) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return fmt.Errorf("jobqueue: shutdown: %w", ctx.Err())
	}
	return err
}

// finish runs once, after every worker has exited.
func (q *Queue) finish(ctx context.Context) error {
	if q.keeperEnd != nil {
		close(q.keeperEnd)
		q.keeperWG.Wait()
	}
	if bs, err := q.backend.Stats(ctx); err == nil {
		q.left.Store(int64(bs.Pending + bs.Scheduled + bs.Retrying))
	}
	q.subMu.Lock()
	close(q.finalDone)
	var subs []*Subscription
	if s := q.subs.Load(); s != nil {
		subs = *s
	}
	q.subs.Store(nil)
	q.subMu.Unlock()
	// Subscribers get up to a second (less if ctx ends) to take the final
	// events held for them, so an abandoned subscription cannot hold
	// Shutdown forever.
	grace, cancel := context.WithTimeout(ctx, time.Second)
	for _, s := range subs {
		s.end(grace.Done())
	}
	cancel()
	err := q.backend.Close(ctx)
	close(q.done)
	if err != nil {
		err = fmt.Errorf("jobqueue: closing backend: %w", err)
		q.logBackendError(nil, 0, "closing backend failed", err)
		return err
	}
	q.log.Info("queue stopped", "left", q.left.Load(), "interrupted", q.interrupted.Load())
	return nil
}

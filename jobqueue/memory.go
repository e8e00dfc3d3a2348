package jobqueue

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"
)

// record is the memory backend's job: the stored state and, while leased,
// the Lease handed to the worker (a record is its own lease, so leasing
// allocates nothing). Fields are guarded by memBackend.mu except job,
// which is immutable, and attempts, which only Fetch writes before it hands
// the lease out.
type record struct {
	b           *memBackend
	job         *Job
	state       State
	attempts    int
	progress    float64
	progressMsg string
	lastErr     string
	result      json.RawMessage
	startedAt   time.Time
	retriedAt   time.Time
	finishedAt  time.Time
	nextRunAt   time.Time
	worker      string
	readyAt     int64 // monotonic ns since b.epoch when the job became ready
	due         int64 // monotonic ns since b.epoch when a scheduled job becomes ready
	heapIdx     int   // index in b.sched while scheduled or retrying
	removed     bool  // canceled while in b.ready: a tombstone there
	cancelReq   bool  // Cancel was called while running
}

// memBackend is the in-memory Backend. One mutex guards the whole state:
// every operation under it is O(1) except List and Cancel of a scheduled
// job (O(log n)), so it stays short.
type memBackend struct {
	mu      sync.Mutex
	cfg     BackendConfig
	maxJobs int
	maxAge  time.Duration
	epoch   time.Time

	ready    levels
	sched    []*record // min-heap on due
	records  map[string]*record
	unique   map[string]*record
	finished fifo // finished records in finishing order, for retention

	active   int // pending + scheduled + running + retrying
	running  int
	retrying int

	sleepers int           // Fetch calls blocked for lack of ready jobs
	tokens   int           // wake-ups sent to wake and not yet consumed
	wake     chan struct{} // one token wakes one sleeping Fetch
	space    chan struct{} // closed when room frees; nil unless Enqueue waits

	opened  bool
	closed  bool
	kick    chan struct{} // an earlier due time was scheduled
	closing chan struct{}
	wg      sync.WaitGroup
}

// NewMemoryBackend returns the in-process backend that New uses when
// Config.Backend is nil. Its jobs live in this process only: they are lost
// when it exits, and its leases never expire. It runs one goroutine (the
// timer that promotes scheduled jobs), from Open until Close.
func NewMemoryBackend() Backend {
	return &memBackend{}
}

// Open implements Backend.
func (b *memBackend) Open(cfg BackendConfig) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.opened {
		return fmt.Errorf("jobqueue: memory backend opened twice")
	}
	b.opened = true
	b.cfg = cfg
	if b.cfg.Capacity <= 0 {
		b.cfg.Capacity = defaultCapacity
	}
	b.maxJobs = cfg.Retention.MaxJobs
	switch {
	case b.maxJobs == 0:
		b.maxJobs = 10_000
	case b.maxJobs < 0:
		b.maxJobs = 0
	}
	b.maxAge = cfg.Retention.MaxAge
	if b.maxAge == 0 {
		b.maxAge = time.Hour
	}
	b.epoch = time.Now()
	b.records = make(map[string]*record)
	b.unique = make(map[string]*record)
	b.wake = make(chan struct{}, 1<<16)
	b.kick = make(chan struct{}, 1)
	b.closing = make(chan struct{})
	b.wg.Add(1)
	go b.scheduler()
	return nil
}

func (b *memBackend) mono(t time.Time) int64 { return int64(t.Sub(b.epoch)) }

// wakeOne hands a token to one sleeping Fetch, unless enough are in flight.
func (b *memBackend) wakeOne() {
	if b.sleepers > b.tokens && b.tokens < cap(b.wake) {
		b.tokens++
		b.wake <- struct{}{}
	}
}

// Enqueue implements Backend.
func (b *memBackend) Enqueue(ctx context.Context, job *Job) (string, error) {
	// The Queue stamps SubmittedAt with time.Now just before; reuse it
	// unless Enqueue has to wait for room.
	now := job.SubmittedAt
	if now.IsZero() {
		now = clockNow()
	}
	b.mu.Lock()
	for {
		if b.closed {
			b.mu.Unlock()
			return "", ErrClosed
		}
		if job.UniqueKey != "" {
			if r := b.unique[job.UniqueKey]; r != nil {
				id := r.job.ID
				b.mu.Unlock()
				return id, nil
			}
		}
		if b.active < b.cfg.Capacity {
			break
		}
		if !b.cfg.BlockOnFull {
			b.mu.Unlock()
			return "", ErrQueueFull
		}
		if b.space == nil {
			b.space = make(chan struct{})
		}
		space := b.space
		b.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return "", ctx.Err()
		case <-b.closing:
		}
		b.mu.Lock()
		now = clockNow()
	}
	if _, dup := b.records[job.ID]; dup {
		b.mu.Unlock()
		return "", fmt.Errorf("%w: duplicate id %q", ErrInvalidJob, job.ID)
	}
	r := &record{b: b, job: job, heapIdx: -1}
	b.records[job.ID] = r
	b.active++
	if job.UniqueKey != "" {
		b.unique[job.UniqueKey] = r
	}
	if job.RunAt.After(now) {
		r.state = StateScheduled
		r.nextRunAt = job.RunAt
		b.schedule(r, b.mono(now)+int64(job.RunAt.Sub(now)))
	} else {
		r.state = StatePending
		r.readyAt = b.mono(now)
		b.ready.push(r)
		b.wakeOne()
	}
	if b.cfg.OnQueued != nil {
		b.cfg.OnQueued(job, r.state)
	}
	b.mu.Unlock()
	return job.ID, nil
}

// Fetch implements Backend.
func (b *memBackend) Fetch(ctx context.Context, dst []Lease, max int) ([]Lease, error) {
	if max <= 0 {
		return dst, nil
	}
	n0 := len(dst)
	b.mu.Lock()
	for {
		if b.closed {
			b.mu.Unlock()
			return dst, ErrClosed
		}
		now := clockNow()
		mono := b.mono(now)
		if len(b.sched) > 0 && b.sched[0].due <= mono {
			b.promote(mono)
		}
		for len(dst)-n0 < max {
			var r *record
			if b.cfg.AgingInterval > 0 {
				r = b.ready.popAged(mono, int64(b.cfg.AgingInterval))
			} else {
				r = b.ready.pop()
			}
			if r == nil {
				break
			}
			r.state = StateRunning
			r.attempts++
			r.startedAt = now
			r.worker = b.cfg.WorkerTag
			b.running++
			dst = append(dst, r)
		}
		if len(dst) > n0 {
			b.mu.Unlock()
			return dst, nil
		}
		if err := ctx.Err(); err != nil {
			b.mu.Unlock()
			return dst, err
		}
		b.sleepers++
		b.mu.Unlock()
		select {
		case <-b.wake:
			b.mu.Lock()
			b.tokens--
		case <-ctx.Done():
			b.mu.Lock()
		case <-b.closing:
			b.mu.Lock()
		}
		b.sleepers--
	}
}

// promote moves the scheduled jobs due by mono to the ready queue.
func (b *memBackend) promote(mono int64) {
	for len(b.sched) > 0 && b.sched[0].due <= mono {
		r := b.heapPop()
		if r.state == StateRetrying {
			b.retrying--
		}
		r.state = StatePending
		r.nextRunAt = time.Time{}
		r.readyAt = r.due
		b.ready.push(r)
		b.wakeOne()
	}
}

// scheduler promotes scheduled jobs when they come due, so they run on time
// even when no Fetch is polling.
func (b *memBackend) scheduler() {
	defer b.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		b.mu.Lock()
		mono := b.mono(clockNow())
		b.promote(mono)
		wait := time.Duration(-1)
		if len(b.sched) > 0 {
			wait = time.Duration(b.sched[0].due - mono)
		}
		b.mu.Unlock()
		if wait >= 0 {
			t.Reset(wait)
		} else {
			t.Stop()
		}
		select {
		case <-t.C:
		case <-b.kick:
		case <-b.closing:
			return
		}
	}
}

func (b *memBackend) schedule(r *record, due int64) {
	r.due = due
	b.heapPush(r)
	if r.heapIdx == 0 {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// finish moves r to a final state and applies retention. Called with b.mu.
func (b *memBackend) finish(r *record, st State, now time.Time) {
	switch r.state {
	case StateRunning:
		b.running--
	case StatePending:
		b.ready.remove(r)
	case StateScheduled, StateRetrying:
		if r.state == StateRetrying {
			b.retrying--
		}
		b.heapRemove(r)
	}
	r.state = st
	r.finishedAt = now
	r.nextRunAt = time.Time{}
	b.active--
	if k := r.job.UniqueKey; k != "" && b.unique[k] == r {
		delete(b.unique, k)
	}
	if b.space != nil {
		close(b.space)
		b.space = nil
	}
	if b.maxJobs == 0 {
		delete(b.records, r.job.ID)
		return
	}
	b.finished.push(r)
	b.prune(now)
}

// prune drops finished records beyond the retention bounds.
func (b *memBackend) prune(now time.Time) {
	for b.finished.n > b.maxJobs {
		b.evict(b.finished.pop())
	}
	if b.maxAge > 0 {
		for b.finished.n > 0 && now.Sub(b.finished.peek().finishedAt) > b.maxAge {
			b.evict(b.finished.pop())
		}
	}
	if len(b.finished.buf) > 64 && b.finished.n < len(b.finished.buf)/4 {
		b.finished.compact(false)
	}
}

func (b *memBackend) evict(r *record) { delete(b.records, r.job.ID) }

// Job implements Lease.
func (r *record) Job() *Job { return r.job }

// Attempt implements Lease.
func (r *record) Attempt() int { return r.attempts }

// Progress implements Lease.
func (r *record) Progress(_ context.Context, percent float64, message string) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: progress on a job that is %s", r.state)
	}
	r.progress = percent
	r.progressMsg = message
	return nil
}

// Extend implements Lease: memory leases never expire.
func (r *record) Extend(context.Context) error { return nil }

// Ack implements Lease. If Cancel was called while the job ran, the job ends
// canceled and Ack returns an error wrapping ErrCanceled.
func (r *record) Ack(_ context.Context, result json.RawMessage) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: ack of a job that is %s", r.state)
	}
	if r.cancelReq {
		r.lastErr = ErrCanceled.Error()
		b.finish(r, StateCanceled, clockNow())
		return ErrCanceled
	}
	r.result = result
	b.finish(r, StateSucceeded, clockNow())
	return nil
}

// Nack implements Lease. If Cancel was called while the job ran, the job ends
// canceled and Nack returns an error wrapping ErrCanceled.
func (r *record) Nack(_ context.Context, delay time.Duration, err error) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: nack of a job that is %s", r.state)
	}
	if err != nil {
		r.lastErr = err.Error()
	}
	now := clockNow()
	if r.cancelReq {
		b.finish(r, StateCanceled, now)
		return ErrCanceled
	}
	b.running--
	r.retriedAt = now
	mono := b.mono(now)
	if delay <= 0 {
		r.state = StatePending
		r.readyAt = mono
		b.ready.push(r)
		b.wakeOne()
		return nil
	}
	r.state = StateRetrying
	r.nextRunAt = now.Add(delay)
	b.retrying++
	b.schedule(r, mono+int64(delay))
	return nil
}

// Term implements Lease.
func (r *record) Term(_ context.Context, st State, err error) error {
	if st != StateFailed && st != StateCanceled {
		return fmt.Errorf("jobqueue: term with state %s", st)
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != StateRunning {
		return fmt.Errorf("jobqueue: term of a job that is %s", r.state)
	}
	if err != nil {
		r.lastErr = err.Error()
	}
	b.finish(r, st, clockNow())
	return nil
}

func (r *record) info() JobInfo {
	return JobInfo{
		Job:             *r.job,
		State:           r.state,
		Attempts:        r.attempts,
		Progress:        r.progress,
		ProgressMessage: r.progressMsg,
		LastError:       r.lastErr,
		Result:          r.result,
		StartedAt:       r.startedAt,
		RetriedAt:       r.retriedAt,
		FinishedAt:      r.finishedAt,
		NextRunAt:       r.nextRunAt,
		Worker:          r.worker,
	}
}

// Get implements Backend.
func (b *memBackend) Get(_ context.Context, id string) (JobInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune(clockNow())
	r := b.records[id]
	if r == nil {
		return JobInfo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return r.info(), nil
}

// List implements Backend. It costs O(n log n) in the jobs kept.
func (b *memBackend) List(_ context.Context, f ListFilter) ([]JobInfo, error) {
	b.mu.Lock()
	b.prune(clockNow())
	var out []JobInfo
	for _, r := range b.records {
		if (f.Type == "" || f.Type == r.job.Type) && (f.State == StateUnknown || f.State == r.state) {
			out = append(out, r.info())
		}
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(x, y JobInfo) int { return cmp.Compare(y.ID, x.ID) })
	if l := f.limit(); l >= 0 && len(out) > l {
		out = out[:l]
	}
	return out, nil
}

// Cancel implements Backend.
func (b *memBackend) Cancel(_ context.Context, id string) (JobInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.records[id]
	if r == nil {
		return JobInfo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	switch {
	case r.state.Final():
		return r.info(), fmt.Errorf("%w: %s is %s", ErrFinished, id, r.state)
	case r.state == StateRunning:
		r.cancelReq = true
		return r.info(), nil
	}
	r.lastErr = ErrCanceled.Error()
	b.finish(r, StateCanceled, clockNow())
	info := r.info()
	return info, nil
}

// Stats implements Backend.
func (b *memBackend) Stats(context.Context) (BackendStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune(clockNow())
	s := BackendStats{
		Scheduled: len(b.sched) - b.retrying,
		Retrying:  b.retrying,
		Running:   b.running,
		Retained:  b.finished.n,
	}
	copy(s.Depth[:], b.ready.live[:])
	s.Pending = b.ready.len()
	return s, nil
}

// Close implements Backend. It stops the scheduler goroutine and waits for
// it; Fetch and Enqueue calls blocked in the backend return ErrClosed.
func (b *memBackend) Close(context.Context) error {
	b.mu.Lock()
	if b.closed || !b.opened {
		b.closed = true
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.closing)
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// The scheduled jobs form a binary min-heap on due, with each record's index
// kept in heapIdx so Cancel can remove one in O(log n).

func (b *memBackend) heapPush(r *record) {
	r.heapIdx = len(b.sched)
	b.sched = append(b.sched, r)
	b.heapUp(r.heapIdx)
}

func (b *memBackend) heapPop() *record {
	r := b.sched[0]
	b.heapRemove(r)
	return r
}

func (b *memBackend) heapRemove(r *record) {
	i := r.heapIdx
	last := len(b.sched) - 1
	if i != last {
		b.heapSwap(i, last)
	}
	b.sched[last] = nil
	b.sched = b.sched[:last]
	r.heapIdx = -1
	if i != last {
		b.heapDown(i)
		b.heapUp(i)
	}
	if cap(b.sched) > 64 && len(b.sched) < cap(b.sched)/4 {
		b.sched = slices.Clip(slices.Clone(b.sched))
	}
}

func (b *memBackend) heapSwap(i, j int) {
	h := b.sched
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (b *memBackend) heapUp(i int) {
	h := b.sched
	for i > 0 {
		p := (i - 1) / 2
		if h[p].due <= h[i].due {
			break
		}
		b.heapSwap(i, p)
		i = p
	}
}

func (b *memBackend) heapDown(i int) {
	h := b.sched
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		c := l
		if r := l + 1; r < len(h) && h[r].due < h[l].due {
			c = r
		}
		if h[i].due <= h[c].due {
			return
		}
		b.heapSwap(i, c)
		i = c
	}
}

package jobqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// record is the memory backend's job: the stored state and, while leased,
// the Lease handed to the worker (a record is its own lease, so leasing
// allocates nothing). Fields are guarded by memBackend.mu except job and
// prio, which are immutable, and attempts, which only Fetch writes before
// it hands the lease out.
type record struct {
	// The fields the ready queue reads come first, to share a cache line.
	job      *Job
	owner    *owner // the job's owner group while the job is active
	readySeq uint64 // with aging: number of its latest arrival in b.ready, 0 once taken
	readyAt  int64  // monotonic ns since b.epoch when the job became ready
	prio     uint8  // job.Priority, read without touching job
	removed  bool   // canceled while in b.ready: a tombstone there
	state    State
	// cancelReq is set when Cancel was called while the job ran.
	cancelReq bool

	b           *memBackend
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
	due         int64 // monotonic ns since b.epoch when a scheduled job becomes ready
	heapIdx     int   // index in b.sched while scheduled or retrying
}

// size is the record's stored bytes: payload and result.
func (r *record) size() int64 { return int64(len(r.job.Payload) + len(r.result)) }

// uniqueKey is a UniqueKey in its owner's name space.
type uniqueKey struct{ owner, key string }

// memBackend is the in-memory Backend. One mutex guards the whole state:
// every operation under it is O(1) except List and Cancel of a scheduled
// job (O(log n)), so it stays short.
//
// Each owner with active jobs has an owner record (the jobs with no owner
// share anon) holding the counts Quota is checked against, updated on every
// state change under the lock, and the owner's ready queues (see levels).
// Bytes are counted in two sums: activeBytes (payloads of active jobs,
// which Enqueue checks against MaxBytes) and keptBytes (payloads and
// results of retained jobs, which are evicted oldest first while the two
// sums together exceed it).
type memBackend struct {
	mu       sync.Mutex
	cfg      BackendConfig
	maxJobs  int
	maxAge   time.Duration
	maxBytes int64 // zero: no bound
	epoch    time.Time

	ready    levels
	sched    []*record // min-heap on due
	records  map[string]*record
	unique   map[uniqueKey]*record
	owners   map[string]*owner // owners with active jobs, and up to idleOwners idle ones; anon apart
	idle     int               // owners in the map with no active job
	anon     owner             // the jobs with no owner
	finished fifo              // finished records in finishing order, for retention

	active      int // pending + scheduled + running + retrying
	running     int
	retrying    int
	activeBytes int64 // payload bytes of the active jobs
	keptBytes   int64 // payload and result bytes of the retained jobs

	sleepers int           // Fetch calls blocked for lack of ready jobs
	tokens   int           // wake-ups sent to wake and not yet consumed
	wake     chan struct{} // one token wakes one sleeping Fetch
	space    chan struct{} // closed when room frees; nil unless Enqueue waits

	ticks map[string]time.Time // ScheduleStore: each schedule's latest tick

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
	b.cfg = cfg.withDefaults()
	b.maxJobs = max(b.cfg.Retention.MaxJobs, 0)
	b.maxAge = b.cfg.Retention.MaxAge // negative: no age limit
	b.maxBytes = max(b.cfg.MaxBytes, 0)
	b.ready.aging = b.cfg.AgingInterval > 0
	b.epoch = time.Now()
	b.records = make(map[string]*record)
	b.unique = make(map[uniqueKey]*record)
	b.owners = make(map[string]*owner)
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
func (b *memBackend) Enqueue(ctx context.Context, job *Job, quota Quota) (string, error) {
	// The Queue stamps SubmittedAt with time.Now just before; reuse it
	// unless Enqueue has to wait for room.
	now := job.SubmittedAt
	if now.IsZero() {
		now = clockNow()
	}
	size := int64(len(job.Payload))
	b.mu.Lock()
	for {
		id, done, err := b.admit(job, quota, now, size)
		if done {
			b.mu.Unlock()
			return id, err
		}
		if err == nil {
			break
		}
		if !b.cfg.BlockOnFull {
			b.mu.Unlock()
			return "", err
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
	o := b.ownerOf(job.Owner)
	r := &record{b: b, job: job, heapIdx: -1, owner: o, prio: uint8(job.Priority)}
	b.records[job.ID] = r
	b.active++
	if o.active == 0 && o != &b.anon {
		b.idle--
	}
	o.active++
	b.activeBytes += size
	o.bytes += size
	if job.UniqueKey != "" {
		b.unique[uniqueKey{job.Owner, job.UniqueKey}] = r
	}
	if job.RunAt.After(now) {
		r.state = StateScheduled
		r.nextRunAt = job.RunAt
		o.delayed++
		b.schedule(r, b.mono(now)+int64(job.RunAt.Sub(now)))
	} else {
		r.state = StatePending
		r.readyAt = b.mono(now)
		b.ready.push(r)
		b.wakeOne()
	}
	if b.maxBytes > 0 && b.activeBytes+b.keptBytes > b.maxBytes {
		b.prune(now)
	}
	if b.cfg.OnQueued != nil {
		b.cfg.OnQueued(job, r.state)
	}
	b.mu.Unlock()
	return job.ID, nil
}

// admit decides, under b.mu, whether job may be stored now. done reports
// a final answer (id and err to return: closed, a repeated ID, a
// deduplicated key, a quota or a request that can never fit); otherwise a
// nil err admits the job, and an error wrapping ErrQueueFull says there is
// no room yet.
func (b *memBackend) admit(job *Job, quota Quota, now time.Time, size int64) (id string, done bool, err error) {
	if b.closed {
		return "", true, ErrClosed
	}
	if r := b.records[job.ID]; r != nil {
		if r.job.Owner != job.Owner {
			return "", true, fmt.Errorf("%w: ID in use", ErrInvalidJob)
		}
		return job.ID, true, nil
	}
	if job.UniqueKey != "" {
		if r := b.unique[uniqueKey{job.Owner, job.UniqueKey}]; r != nil {
			return r.job.ID, true, nil
		}
	}
	if job.Owner != "" {
		var u Usage
		if o := b.owners[job.Owner]; o != nil {
			u = Usage{Active: o.active, Delayed: o.delayed, Bytes: o.bytes}
		}
		if err := quota.Check(u, job, now); err != nil {
			return "", true, err
		}
	}
	if b.active >= b.cfg.Capacity {
		return "", false, fmt.Errorf("%w: %d active jobs", ErrQueueFull, b.active)
	}
	if b.maxBytes > 0 && b.activeBytes+size > b.maxBytes {
		err := fmt.Errorf("%w: %d payload bytes stored, %d more would exceed %d", ErrQueueFull, b.activeBytes, size, b.maxBytes)
		return "", size > b.maxBytes, err // a payload that can never fit is not waited for
	}
	return "", false, nil
}

// idleOwners is how many idle owner records the memory backend keeps at
// least before sweeping them.
const idleOwners = 256

// sweepOwners drops the records of owners with no active job.
func (b *memBackend) sweepOwners() {
	for name, o := range b.owners {
		if o.active == 0 {
			delete(b.owners, name)
		}
	}
	b.idle = 0
}

// ownerOf returns the owner record of name, making it if needed. A new
// record counts as idle until its first job is counted.
func (b *memBackend) ownerOf(name string) *owner {
	if name == "" {
		return &b.anon
	}
	o := b.owners[name]
	if o == nil {
		o = &owner{name: name}
		b.owners[name] = o
		b.idle++
	}
	return o
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
		} else {
			r.owner.delayed--
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
		} else {
			r.owner.delayed--
		}
		b.heapRemove(r)
	}
	r.state = st
	r.finishedAt = now
	r.nextRunAt = time.Time{}
	size := int64(len(r.job.Payload))
	b.active--
	b.activeBytes -= size
	o := r.owner
	o.active--
	o.bytes -= size
	if o.active == 0 && o != &b.anon && b.owners[o.name] == o {
		// The record stays for the owner's next job (an owner that keeps
		// one job at a time would otherwise cost an allocation per job);
		// idle records are swept once they outnumber the busy ones.
		b.idle++
		if b.idle > idleOwners && b.idle > len(b.owners)/2 {
			b.sweepOwners()
		}
	}
	r.owner = nil
	if k := r.job.UniqueKey; k != "" {
		if uk := (uniqueKey{r.job.Owner, k}); b.unique[uk] == r {
			delete(b.unique, uk)
		}
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
	b.keptBytes += r.size()
	b.prune(now)
}

// prune drops finished records beyond the retention bounds, and the
// oldest while the bytes kept exceed maxBytes.
func (b *memBackend) prune(now time.Time) {
	for b.finished.n > b.maxJobs {
		b.evict(b.finished.pop())
	}
	for b.maxBytes > 0 && b.finished.n > 0 && b.activeBytes+b.keptBytes > b.maxBytes {
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

func (b *memBackend) evict(r *record) {
	delete(b.records, r.job.ID)
	b.keptBytes -= r.size()
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

// LastTick implements ScheduleStore, for the life of the process.
func (b *memBackend) LastTick(_ context.Context, name string) (time.Time, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.ticks[name]
	return t, ok, nil
}

// MarkTick implements ScheduleStore.
func (b *memBackend) MarkTick(_ context.Context, name string, t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ticks == nil {
		b.ticks = make(map[string]time.Time)
	}
	if last, ok := b.ticks[name]; !ok || t.After(last) {
		b.ticks[name] = t
	}
	return nil
}

package procpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/affinity"
)

// Pool is a set of worker processes running registered tasks. Create it with
// New; its methods are safe for concurrent use. Call Shutdown or Close when
// done: until then the workers stay alive.
type Pool struct {
	o       options
	exe     string
	env     []string
	allowed affinity.CPUSet         // the CPUs pinned slots take in turn
	slots   atomic.Pointer[[]*slot] // the slots in service, in ID order; see Resize

	resizeMu sync.Mutex         // one Resize at a time
	lifeMu   sync.Mutex         // guards running, and orders Resize before a stop begins
	running  map[*slot]struct{} // slots whose goroutine runs, removed ones that still finish work included

	queue  chan *request
	retryQ struct {
		sync.Mutex
		q []*request
	}
	retryN atomic.Int64
	kick   chan struct{}
	rr     atomic.Uint32 // rotates sendDirect's first choice

	spawnCh   chan func()
	spawnDone chan struct{}
	wg        sync.WaitGroup // slot goroutines
	finished  chan struct{}  // all goroutines of the pool have ended

	active    atomic.Int64 // calls in progress (Call, Map, Stream)
	idle      chan struct{}
	closing   atomic.Bool   // intake stopped
	stopping  chan struct{} // graceful stop: workers retire when idle
	done      chan struct{} // Close: workers are killed
	stopOnce  sync.Once
	closeOnce sync.Once

	outMu sync.Mutex

	restarts  atomic.Uint64
	crashes   atomic.Uint64
	completed atomic.Uint64
	failed    atomic.Uint64
}

// New starts a pool of worker processes: this program's own binary,
// re-executed with a marker in its environment, so main must call Main
// first. The pool has runtime.GOMAXPROCS(0) workers unless WithWorkers says
// otherwise (WithWorkers(0) means that default too; a negative count is an
// error). New blocks until every worker has run its WorkerInit hooks and
// reported ready (a few milliseconds each); it fails if an option is
// invalid, if a worker cannot be started or its init hook fails, with the
// workers already started stopped. On Windows it fails with an error
// matching errors.ErrUnsupported.
func New(opts ...Option) (*Pool, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.workers == 0 {
		o.workers = runtime.GOMAXPROCS(0)
	}
	var allowed affinity.CPUSet
	if o.pinned {
		var err error
		if allowed, err = affinity.Allowed(); err != nil {
			return nil, fmt.Errorf("procpool: pinned workers: %w", err)
		}
		if len(allowed) == 0 {
			return nil, errors.New("procpool: pinned workers: no allowed CPU")
		}
	}
	exe, err := executable()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		o:         o,
		exe:       exe,
		allowed:   allowed,
		running:   make(map[*slot]struct{}),
		queue:     make(chan *request, 4096),
		kick:      make(chan struct{}, 1),
		spawnCh:   make(chan func()),
		spawnDone: make(chan struct{}),
		finished:  make(chan struct{}),
		idle:      make(chan struct{}, 1),
		stopping:  make(chan struct{}),
		done:      make(chan struct{}),
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			p.env = append(p.env, kv)
		}
	}
	p.env = append(p.env,
		envFrame+"="+strconv.Itoa(o.maxFrame),
		envParent+"="+strconv.Itoa(os.Getpid()))
	go p.spawnLoop()
	ready := make(chan error, o.workers)
	slots := make([]*slot, o.workers)
	for i := range slots {
		slots[i] = p.newSlot(i)
	}
	p.slots.Store(&slots)
	p.wg.Add(len(slots))
	for _, s := range slots {
		go s.run(ready)
	}
	go p.reap()
	var errs []error
	for range slots {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		p.Close()
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// newSlot makes slot id and counts it as running; its goroutine must be
// started. lifeMu must be held, except in New.
func (p *Pool) newSlot(id int) *slot {
	s := &slot{p: p, id: id, cpu: -1, quit: make(chan struct{})}
	if len(p.allowed) > 0 {
		s.cpu = p.allowed[id%len(p.allowed)]
	}
	p.running[s] = struct{}{}
	return s
}

// slotList returns the slots in service.
func (p *Pool) slotList() []*slot { return *p.slots.Load() }

// Workers returns the number of worker processes the pool keeps: the
// count given to New, or to the latest Resize.
func (p *Pool) Workers() int { return len(p.slotList()) }

// Resize changes the number of worker processes the pool keeps to n, at
// least one. Growing starts the new workers and waits until they are
// ready, as New does; if one cannot start, Resize stops those it started,
// keeps the count it had and returns why. Shrinking removes the
// highest-numbered workers at once from the choice of new work, and lets
// each finish the requests already sent to it before its process exits, in
// the background: no call is lost or retried, and Resize does not wait for
// them (Stats counts them no more; Shutdown and Close end them with the
// rest). Pinned workers take the allowed CPUs in turn, as in New. Resize
// is safe for concurrent use with calls and with itself; once Shutdown or
// Close has begun it fails with ErrClosed. An autoscaler can call it with
// the queue it feeds (jobqueue.Autoscale's OnResize).
func (p *Pool) Resize(n int) error {
	if n < 1 {
		return fmt.Errorf("procpool: Resize(%d): a pool needs at least one worker", n)
	}
	p.resizeMu.Lock()
	defer p.resizeMu.Unlock()
	p.lifeMu.Lock()
	if p.closing.Load() || p.stopped() {
		p.lifeMu.Unlock()
		return ErrClosed
	}
	old := p.slotList()
	switch {
	case n == len(old):
		p.lifeMu.Unlock()
		return nil
	case n < len(old):
		keep := old[:n:n]
		p.slots.Store(&keep)
		for _, s := range old[n:] {
			close(s.quit)
		}
		p.lifeMu.Unlock()
		p.log(slog.LevelInfo, "procpool: resized", slog.Int("from", len(old)), slog.Int("to", n))
		return nil
	}
	added := make([]*slot, 0, n-len(old))
	for id := len(old); id < n; id++ {
		added = append(added, p.newSlot(id))
	}
	grown := append(old[:len(old):len(old)], added...)
	p.slots.Store(&grown)
	ready := make(chan error, len(added))
	p.wg.Add(len(added))
	for _, s := range added {
		go s.run(ready)
	}
	p.lifeMu.Unlock()
	var errs []error
	for range added {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		p.log(slog.LevelInfo, "procpool: resized", slog.Int("from", len(old)), slog.Int("to", n))
		return nil
	}
	p.lifeMu.Lock()
	if cur := p.slotList(); len(cur) == len(grown) {
		p.slots.Store(&old)
	}
	for _, s := range added {
		close(s.quit) // those that started finish what they were sent, then exit
	}
	closing := p.closing.Load()
	p.lifeMu.Unlock()
	if closing {
		return ErrClosed
	}
	return errors.Join(errs...)
}

// spawnLoop starts every worker process from one goroutine locked to its OS
// thread for the pool's whole life: Linux sends a child its Pdeathsig when
// the thread that forked it exits, so that thread must outlive the workers.
func (p *Pool) spawnLoop() {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	defer close(p.spawnDone)
	for fn := range p.spawnCh {
		fn()
	}
}

// onSpawnThread runs fn on the spawning thread and waits for it.
func (p *Pool) onSpawnThread(fn func()) {
	done := make(chan struct{})
	p.spawnCh <- func() {
		defer close(done)
		fn()
	}
	<-done
}

// reap waits for the slots, then stops the spawning thread.
func (p *Pool) reap() {
	p.wg.Wait()
	close(p.spawnCh)
	<-p.spawnDone
	close(p.finished)
}

// enter registers a call; it fails once Shutdown or Close has begun.
func (p *Pool) enter() bool {
	p.active.Add(1)
	if p.closing.Load() {
		p.leave()
		return false
	}
	return true
}

func (p *Pool) leave() {
	if p.active.Add(-1) == 0 && p.closing.Load() {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
}

// enqueue queues r for the workers' senders.
func (p *Pool) enqueue(ctx context.Context, r *request) error {
	select {
	case p.queue <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return ErrClosed
	}
}

// requeue puts r back for another worker, ahead of new work.
func (p *Pool) requeue(r *request) {
	r.w.Store(nil)
	r.state.Store(stQueued)
	p.retryQ.Lock()
	p.retryQ.q = append(p.retryQ.q, r)
	p.retryQ.Unlock()
	p.retryN.Add(1)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Pool) popRetry() *request {
	if p.retryN.Load() == 0 {
		return nil
	}
	p.retryQ.Lock()
	defer p.retryQ.Unlock()
	if len(p.retryQ.q) == 0 {
		return nil
	}
	r := p.retryQ.q[0]
	p.retryQ.q[0] = nil
	p.retryQ.q = p.retryQ.q[1:]
	if p.retryN.Add(-1) > 0 {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	return r
}

const (
	takeOK = iota
	takeStop
	takeRetire
)

// take waits for the next request for a worker, whose slot Resize removes
// by closing quit.
func (p *Pool) take(stop, quit <-chan struct{}) (*request, int) {
	for {
		if isDone(quit) {
			return nil, takeRetire
		}
		if r := p.popRetry(); r != nil {
			return r, takeOK
		}
		select {
		case r := <-p.queue:
			return r, takeOK
		case <-p.kick:
		case <-stop:
			return nil, takeStop
		case <-quit:
			return nil, takeRetire
		case <-p.stopping:
			if r, ok := p.tryTake(); ok {
				return r, takeOK
			}
			return nil, takeRetire
		}
	}
}

func (p *Pool) tryTake() (*request, bool) {
	if r := p.popRetry(); r != nil {
		return r, true
	}
	select {
	case r := <-p.queue:
		return r, true
	default:
		return nil, false
	}
}

// Shutdown stops intake (new calls fail with ErrClosed), waits for the
// calls in progress to finish, then closes the workers' request pipes and
// waits for them to exit. If ctx ends first, it calls Close and returns
// ctx.Err(). Calling it again, or after Close, waits for the same end.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.closing.Store(true)
	for p.active.Load() > 0 {
		select {
		case <-p.idle:
		case <-p.finished:
			return nil
		case <-ctx.Done():
			p.Close()
			return ctx.Err()
		}
	}
	p.stopOnce.Do(func() {
		p.lifeMu.Lock()
		close(p.stopping)
		p.lifeMu.Unlock()
	})
	select {
	case <-p.finished:
		return nil
	case <-ctx.Done():
		p.Close()
		return ctx.Err()
	}
}

// Close stops the pool now: intake stops, every worker is killed (SIGKILL)
// and waited for, and calls still queued or in flight return ErrClosed. It
// blocks until every goroutine and process of the pool has ended, normally
// a few milliseconds. It is idempotent and always returns nil.
func (p *Pool) Close() error {
	p.closing.Store(true)
	p.closeOnce.Do(func() {
		p.lifeMu.Lock()
		close(p.done)
		for s := range p.running {
			if w := s.cur.Load(); w != nil {
				w.kill(killClose)
			}
		}
		p.lifeMu.Unlock()
	})
	<-p.finished
	for {
		r, ok := p.tryTake()
		if !ok {
			break
		}
		r.failWith(ErrClosed)
	}
	return nil
}

// Stats returns a snapshot of the pool's counters and of every worker. It
// reads /proc once per worker on Linux (for the CPU it last ran on).
func (p *Pool) Stats() Stats {
	slots := p.slotList()
	st := Stats{
		Workers:   len(slots),
		Restarts:  p.restarts.Load(),
		Crashes:   p.crashes.Load(),
		Completed: p.completed.Load(),
		Failed:    p.failed.Load(),
		Queued:    len(p.queue) + int(p.retryN.Load()),
	}
	for _, s := range slots {
		ws := WorkerStats{ID: s.id, PID: -1, CPU: -1, PinnedCPU: s.cpu, Tasks: s.tasks.Load()}
		if w := s.cur.Load(); w != nil {
			ws.PID = w.pid
			ws.InFlight = int(w.inflight.Load())
			if cpu, err := affinity.LastCPU(w.pid); err == nil {
				ws.CPU = cpu
			}
			st.Alive++
			st.InFlight += ws.InFlight
		}
		if e := s.lastErr.Load(); e != nil {
			ws.LastError = *e
		}
		st.PerWorker = append(st.PerWorker, ws)
	}
	return st
}

// Stats is a snapshot of a Pool. Counters only grow; gauges are read at the
// call.
type Stats struct {
	Workers   int    // configured number of workers (New, or the latest Resize)
	Alive     int    // worker processes running now
	Restarts  uint64 // workers started in place of one that ended (crash, kill, recycling)
	Crashes   uint64 // workers that ended without being asked to (cancellation kills excluded)
	Queued    int    // requests waiting for a worker
	InFlight  int    // requests sent to workers and not answered yet
	Completed uint64 // inputs that returned an output
	Failed    uint64 // inputs that returned an error (handler error, panic, crash, ...)
	PerWorker []WorkerStats
}

// WorkerStats describes one worker slot.
type WorkerStats struct {
	ID        int    // slot, 0 to Workers-1
	PID       int    // process now in the slot, -1 while none runs
	CPU       int    // CPU the process last ran on, -1 if unknown
	PinnedCPU int    // CPU the slot is pinned to, -1 if not pinned
	Tasks     uint64 // inputs sent to this slot's processes so far
	InFlight  int    // requests sent and not answered yet
	LastError error  // why the slot's last process ended or failed to start, if it crashed
}

// retryDelay is the wait before starting a worker again after a start or
// init failure.
func retryDelay(n int) time.Duration {
	return min(50*time.Millisecond<<min(n, 6), 2*time.Second)
}

package procpool

import (
	"context"
	"errors"
	"fmt"
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
	o     options
	exe   string
	env   []string
	slots []*slot

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
	for i := range o.workers {
		s := &slot{p: p, id: i, cpu: -1}
		if o.pinned {
			s.cpu = allowed[i%len(allowed)]
		}
		p.slots = append(p.slots, s)
	}
	p.wg.Add(len(p.slots))
	for _, s := range p.slots {
		go s.run(ready)
	}
	go p.reap()
	var errs []error
	for range p.slots {
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

// take waits for the next request for a worker.
func (p *Pool) take(stop <-chan struct{}) (*request, int) {
	for {
		if r := p.popRetry(); r != nil {
			return r, takeOK
		}
		select {
		case r := <-p.queue:
			return r, takeOK
		case <-p.kick:
		case <-stop:
			return nil, takeStop
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
	p.stopOnce.Do(func() { close(p.stopping) })
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
		close(p.done)
		for _, s := range p.slots {
			if w := s.cur.Load(); w != nil {
				w.kill(killClose)
			}
		}
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
	st := Stats{
		Workers:   len(p.slots),
		Restarts:  p.restarts.Load(),
		Crashes:   p.crashes.Load(),
		Completed: p.completed.Load(),
		Failed:    p.failed.Load(),
		Queued:    len(p.queue) + int(p.retryN.Load()),
	}
	for _, s := range p.slots {
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
	Workers   int    // configured number of workers
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

package pool

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // for go:linkname

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/panics"
)

// nanotime is the runtime's monotonic clock: the same clock time.Since uses,
// without the wall-clock read that time.Now adds to every call.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

type task struct {
	fn  func()
	enq int64 // nanotime at submission
}

// pad keeps counters written by submitters and by workers on separate cache
// lines, so the two sides do not slow each other down.
type pad [64]byte

// Pool runs tasks on at most Size worker goroutines. The zero value is not
// usable; create one with New. All methods are safe for concurrent use.
type Pool struct {
	tasks chan task
	opts  options
	cpus  affinity.CPUSet // CPUs for pinned workers

	size    atomic.Int64
	workers atomic.Int64
	exiting atomic.Int64 // workers in the middle of an idle exit
	closed  atomic.Bool
	stop    atomic.Bool

	_         pad
	submitted atomic.Uint64
	_         pad
	started   atomic.Uint64
	completed atomic.Uint64
	panicked  atomic.Uint64
	waitTotal atomic.Int64 // over sampled tasks
	waitMax   atomic.Int64
	_         pad
	// waitSampled counts the timed tasks; kept apart so that sampled tasks
	// alone write it.
	waitSampled atomic.Uint64

	firstPanic atomic.Pointer[panics.Error]

	mu        sync.Mutex
	idle      chan struct{} // closed when every submitted task completed
	slots     []bool        // pinned worker slots in use
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns a pool of at most size workers. size > 0 means exactly size
// workers; 0 means the default, runtime.GOMAXPROCS(0), which on Linux
// already follows the CPU affinity mask and the cgroup CPU quota. New panics,
// with a "pool: " message, if size is negative. Workers start on demand, so
// New itself starts no goroutine.
func New(size int, opts ...Option) *Pool {
	size = workerCount("New", size)
	p := &Pool{}
	for _, o := range opts {
		o(&p.opts)
	}
	if !p.opts.queueSet {
		p.opts.queue = 8 * size
	}
	p.tasks = make(chan task, p.opts.queue)
	p.size.Store(int64(size))
	if p.opts.pinned {
		if cpus, err := affinity.Allowed(); err == nil && len(cpus) > 0 {
			p.cpus = cpus
		}
	}
	return p
}

// Go runs fn on a worker. It blocks while every worker is busy and the
// waiting queue is full. Go panics if fn is nil or the pool is closed; use
// Submit to get an error instead. A panic in fn is recovered: see the
// package documentation for where it goes.
func (p *Pool) Go(fn func()) {
	if fn == nil {
		panic("pool: Go called with a nil function")
	}
	t, ok := p.begin()
	if !ok {
		panic("pool: Go called after Close")
	}
	t.fn = fn
	if p.spawn(t) {
		return
	}
	p.tasks <- t
	p.afterEnqueue()
}

// TryGo runs fn on a worker if it can do so without blocking: a worker is
// free, a new one may start, or the waiting queue has room. It reports
// whether fn was accepted; it returns false once the pool is closed.
func (p *Pool) TryGo(fn func()) bool {
	if fn == nil {
		panic("pool: TryGo called with a nil function")
	}
	t, ok := p.begin()
	if !ok {
		return false
	}
	t.fn = fn
	if p.spawn(t) {
		return true
	}
	select {
	case p.tasks <- t:
		p.afterEnqueue()
		return true
	default:
		p.undo()
		return false
	}
}

// Submit runs fn on a worker like Go, but returns ctx.Err() if ctx ends
// before fn is accepted (fn then never runs) and ErrClosed once the pool is
// closed. It blocks only while every worker is busy and the queue is full.
func (p *Pool) Submit(ctx context.Context, fn func()) error {
	if fn == nil {
		panic("pool: Submit called with a nil function")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t, ok := p.begin()
	if !ok {
		return ErrClosed
	}
	t.fn = fn
	if p.spawn(t) {
		return nil
	}
	select {
	case p.tasks <- t:
		p.afterEnqueue()
		return nil
	case <-ctx.Done():
		p.undo()
		return ctx.Err()
	}
}

// Wait blocks until every task submitted before the call has finished. The
// pool stays usable. If a task started with Go, TryGo or Submit panicked and
// no panic handler is set, Wait re-raises the first such panic (as a
// *panics.Error) once the other tasks have finished.
func (p *Pool) Wait() {
	p.waitIdle()
	if pe := p.firstPanic.Swap(nil); pe != nil {
		panic(pe)
	}
}

// Close stops intake, lets every queued task run, and returns when every
// worker goroutine has exited. Go after Close panics; Submit returns
// ErrClosed. Close is idempotent and safe to call concurrently with Wait.
// Like Wait, it re-raises a task panic that no Wait has reported.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.waitIdle()
		p.mu.Lock()
		p.stop.Store(true)
		// Every submitted task has completed and no submitter can send
		// any more, so closing the channel is safe: it tells the workers
		// to exit.
		close(p.tasks)
		p.mu.Unlock()
		p.wg.Wait()
	})
	if pe := p.firstPanic.Swap(nil); pe != nil {
		panic(pe)
	}
}

// Resize changes the maximum number of workers, with the rule of New: n > 0
// means exactly n, 0 means runtime.GOMAXPROCS(0), and a negative n panics
// with a "pool: " message. Growing lets queued tasks start at once;
// shrinking lets surplus workers exit after their current task. Running
// tasks are never interrupted. Resize after Close does nothing.
func (p *Pool) Resize(n int) {
	n = workerCount("Resize", n)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop.Load() {
		return
	}
	old := p.size.Swap(int64(n))
	if int64(n) < old {
		// Wake idle workers so the surplus ones see the new size and
		// exit; busy ones check it after their current task.
		for i := int64(n); i < old; i++ {
			select {
			case p.tasks <- task{}:
			default:
				return
			}
		}
		return
	}
	for i := len(p.tasks); i > 0; i-- {
		if !p.spawnLocked() {
			break
		}
	}
}

// workerCount applies the worker-count rule of New and Resize.
func workerCount(fn string, n int) int {
	switch {
	case n < 0:
		panic(fmt.Sprintf("pool: %s called with a negative size (%d)", fn, n))
	case n == 0:
		return runtime.GOMAXPROCS(0)
	}
	return n
}

// Size returns the maximum number of workers.
func (p *Pool) Size() int { return int(p.size.Load()) }

// Stats returns the pool's counters. It takes no lock and costs a few
// atomic loads.
func (p *Pool) Stats() Stats {
	completed := p.completed.Load()
	started := p.started.Load()
	submitted := p.submitted.Load()
	s := Stats{
		Size:         int(p.size.Load()),
		Workers:      int(p.workers.Load()),
		Submitted:    submitted,
		Completed:    completed,
		Panicked:     p.panicked.Load(),
		QueueWaitMax: time.Duration(p.waitMax.Load()),
	}
	if n := p.waitSampled.Load(); n > 0 {
		s.QueueWaitSampled = n
		s.QueueWaitTotal = time.Duration(float64(p.waitTotal.Load()) * float64(started) / float64(n))
	}
	if started > completed {
		s.Running = int(started - completed)
	}
	if submitted > started {
		s.Waiting = int(submitted - started)
	}
	return s
}

// begin counts a submission, or reports false when the pool is closed. The
// count comes first so that Close, which sets closed and then waits for
// completed to catch up with submitted, cannot miss a submission in flight.
func (p *Pool) begin() (task, bool) {
	n := p.submitted.Add(1)
	if p.closed.Load() {
		p.undo()
		return task{}, false
	}
	if n%waitSample == 0 {
		return task{enq: nanotime()}, true
	}
	return task{}, true
}

// waitSample is the sampling ratio of queue-wait timing: one task in
// waitSample is timed. Reading the clock twice per task would cost more
// than the rest of the pool's work on a tiny task.
const waitSample = 8

// undo takes back a submission whose task will never run.
func (p *Pool) undo() {
	p.submitted.Add(^uint64(0))
	p.checkIdle()
}

// checkIdle wakes Wait callers when every submitted task has completed.
// completed never exceeds submitted, so reading completed first and then
// submitted and finding them equal proves the pool was idle at the second
// read.
func (p *Pool) checkIdle() {
	if p.completed.Load() != p.submitted.Load() {
		return
	}
	p.signalIdle()
}

func (p *Pool) signalIdle() {
	p.mu.Lock()
	if p.idle != nil && p.completed.Load() == p.submitted.Load() {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
}

func (p *Pool) waitIdle() {
	p.mu.Lock()
	if p.completed.Load() == p.submitted.Load() {
		p.mu.Unlock()
		return
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	ch := p.idle
	p.mu.Unlock()
	<-ch
}

// spawn starts a new worker with t as its first task if the pool is below
// its size.
func (p *Pool) spawn(t task) bool {
	if !p.reserve() {
		return false
	}
	slot := -1
	if p.cpus != nil {
		p.mu.Lock()
		slot = p.allocSlot()
		p.mu.Unlock()
	}
	p.wg.Add(1)
	go p.worker(slot, t)
	return true
}

// spawnLocked starts a worker with no first task; p.mu is held.
func (p *Pool) spawnLocked() bool {
	if !p.reserve() {
		return false
	}
	slot := -1
	if p.cpus != nil {
		slot = p.allocSlot()
	}
	p.wg.Add(1)
	go p.worker(slot, task{})
	return true
}

// reserve counts one more worker if the pool is below its size.
func (p *Pool) reserve() bool {
	for {
		w := p.workers.Load()
		if w >= p.size.Load() {
			return false
		}
		if p.workers.CompareAndSwap(w, w+1) {
			return true
		}
	}
}

// afterEnqueue makes sure a task just put in the queue has a worker to run
// it: a worker in the middle of an idle exit may have looked at the queue
// just before the task arrived.
func (p *Pool) afterEnqueue() {
	if p.exiting.Load() == 0 && p.workers.Load() != 0 {
		return
	}
	p.mu.Lock()
	if !p.stop.Load() && len(p.tasks) > 0 {
		p.spawnLocked()
	}
	p.mu.Unlock()
}

func (p *Pool) allocSlot() int {
	for i, used := range p.slots {
		if !used {
			p.slots[i] = true
			return i
		}
	}
	p.slots = append(p.slots, true)
	return len(p.slots) - 1
}

func (p *Pool) worker(slot int, t task) {
	defer p.wg.Done()
	if slot >= 0 {
		if release, err := affinity.PinThread(p.cpus[slot%len(p.cpus)]); err == nil {
			defer release()
		}
	}
	if t.fn != nil {
		p.run(t)
	}
	var timer *time.Timer
	if p.opts.idleTimeout > 0 {
		timer = time.NewTimer(p.opts.idleTimeout)
		defer timer.Stop()
	}
	var ok bool
	for {
		if w := p.workers.Load(); w > p.size.Load() && p.workers.CompareAndSwap(w, w-1) {
			p.release(slot)
			return
		}
		if timer == nil {
			// A task with a nil fn is a wake-up sent by Resize; a closed
			// channel is Close telling the worker to exit.
			if t, ok = <-p.tasks; !ok {
				p.exit(slot)
				return
			}
			p.handle(t)
			continue
		}
		select {
		case t, ok = <-p.tasks:
		default:
			timer.Reset(p.opts.idleTimeout)
			select {
			case t, ok = <-p.tasks:
			case <-timer.C:
				if p.idleExit(slot) {
					return
				}
				continue
			}
		}
		if !ok {
			p.exit(slot)
			return
		}
		p.handle(t)
	}
}

// handle runs a task taken from the queue. A nil fn is a wake-up sent by
// Resize; while it sat in the queue it may have hidden the pool's idleness
// from run, so look again.
func (p *Pool) handle(t task) {
	if t.fn == nil {
		p.checkIdle()
		return
	}
	p.run(t)
}

// idleExit ends a worker that has been idle for the idle timeout. Under
// p.mu it takes one more look at the queue: a submitter that enqueued
// before this look is served by this worker, and one that enqueues after it
// sees exiting > 0 or the lower worker count and starts a new worker
// (afterEnqueue). It reports whether the worker exited.
func (p *Pool) idleExit(slot int) bool {
	p.exiting.Add(1)
	defer p.exiting.Add(-1)
	p.mu.Lock()
	select {
	case t, ok := <-p.tasks:
		p.mu.Unlock()
		if !ok {
			p.exit(slot)
			return true
		}
		p.handle(t)
		return false
	default:
	}
	p.workers.Add(-1)
	if slot >= 0 {
		p.slots[slot] = false
	}
	p.mu.Unlock()
	return true
}

func (p *Pool) exit(slot int) {
	p.workers.Add(-1)
	p.release(slot)
}

func (p *Pool) release(slot int) {
	if slot >= 0 {
		p.mu.Lock()
		p.slots[slot] = false
		p.mu.Unlock()
	}
}

func (p *Pool) run(t task) {
	p.started.Add(1)
	if t.enq != 0 {
		w := nanotime() - t.enq
		p.waitSampled.Add(1)
		p.waitTotal.Add(w)
		for m := p.waitMax.Load(); w > m && !p.waitMax.CompareAndSwap(m, w); m = p.waitMax.Load() {
		}
	}
	p.call(t.fn)
	// While tasks wait in the queue the pool cannot be idle; skipping the
	// read of submitted then keeps its cache line with the submitters.
	if c := p.completed.Add(1); len(p.tasks) == 0 && c == p.submitted.Load() {
		p.signalIdle()
	}
}

func (p *Pool) call(fn func()) {
	defer p.recoverTask()
	fn()
}

func (p *Pool) recoverTask() {
	r := recover()
	if r == nil {
		return
	}
	pe := panics.New("pool", "", r)
	p.panicked.Add(1)
	if h := p.opts.panicHandler; h != nil {
		h(pe)
		return
	}
	p.firstPanic.CompareAndSwap(nil, pe)
}

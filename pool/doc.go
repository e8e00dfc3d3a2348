// Package pool runs functions on a bounded set of worker goroutines.
//
// A Pool never has more than its size of tasks running at once, applies
// backpressure when every worker is busy and its waiting queue is full, and
// costs under a hundred nanoseconds and no allocation per task (67-97 ns on
// a 2-core VM, BenchmarkGo):
//
//	p := pool.New(0) // 0: one worker per GOMAXPROCS
//	defer p.Close()
//	for _, f := range files {
//		p.Go(func() { process(f) })
//	}
//	p.Wait()
//
// Go blocks while the pool is saturated; TryGo never blocks; Submit blocks
// until its context ends and then returns ctx.Err(). Wait waits for what was
// submitted so far and leaves the pool usable; Close stops intake, runs what
// was queued and releases every goroutine. Resize changes the size at run
// time, WithIdleTimeout lets an idle pool hold no goroutine at all, and
// WithPinnedWorkers pins worker i to the i-th allowed CPU (see package
// affinity for when that helps).
//
// The size follows one rule in pool, procpool and jobqueue: n > 0 means
// exactly n workers, 0 means runtime.GOMAXPROCS(0) (on Linux that already
// follows the CPU affinity mask and the cgroup CPU quota), and a negative n
// is invalid: New and Resize panic.
//
// For tasks that return errors, Pool.Group gives errgroup semantics (the
// first error cancels the others, or WithCollectErrors joins them all) with
// an optional per-task timeout (WithTaskTimeout); Map returns results in
// input order, and MapSeq streams them in input order with a bounded number
// in flight (WithInFlight) so memory stays flat on a long input.
//
// # Goroutines or processes
//
// A goroutine serves I/O-bound and CPU-bound work alike: Go has no global
// interpreter lock, so a pool of GOMAXPROCS workers keeps every core busy.
// Reach for package procpool only when work must be isolated: a crash must
// not take the program down, a task must be killable, or memory must be
// returned to the system by ending a worker.
//
// # Panics
//
// A panic in a task never crashes a worker and is never lost. It is
// recovered and turned into a *panics.Error (Source "pool") holding the
// panic value and the stack of the goroutine that panicked; procpool and
// jobqueue report their panics with the same type, so one errors.As catches
// a panic from any of them:
//
//	var pe *panics.Error
//	if errors.As(err, &pe) {
//		log.Printf("%s: %v\n%s", pe.Source, pe.Value, pe.Stack)
//	}
//
// In a Group, Map or MapSeq the *panics.Error is that task's error. For
// tasks started with Go, TryGo or Submit it goes to the handler set with
// WithPanicHandler; without one, the first such panic is re-raised (as a
// *panics.Error) by the next Wait (or Close) once the other tasks have
// finished, and later ones are counted in Stats.Panicked.
package pool

package pool

import (
	"time"

	"github.com/corework/corework/panics"
)

// Option configures a Pool in New.
type Option func(*options)

type options struct {
	queue        int
	queueSet     bool
	idleTimeout  time.Duration
	pinned       bool
	panicHandler func(*panics.Error)
}

// WithQueueSize sets how many submitted tasks may wait for a free worker
// before Go and Submit block. 0 means no waiting queue: a submitter blocks
// until a worker takes its task. The default is 8 per worker, which keeps
// workers fed without letting a fast producer run far ahead.
func WithQueueSize(n int) Option {
	return func(o *options) {
		if n < 0 {
			n = 0
		}
		o.queue = n
		o.queueSet = true
	}
}

// WithIdleTimeout lets a worker goroutine exit after it has been idle for d,
// so an idle pool holds no goroutine at all. Workers are started again on
// demand. The default, 0, keeps workers alive until Close.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) { o.idleTimeout = d }
}

// WithPinnedWorkers locks each worker goroutine to its OS thread and pins
// that thread to one CPU: worker i runs on the i-th CPU of affinity.Allowed
// (wrapping around when there are more workers than CPUs). Pinning costs a
// thread per worker and a system call at worker start; see package affinity
// for when it pays off. Where the OS has no thread affinity the workers run
// unpinned.
func WithPinnedWorkers() Option {
	return func(o *options) { o.pinned = true }
}

// WithPanicHandler sets a function called with every panic recovered from a
// task started with Go, TryGo or Submit, as a *panics.Error (Source "pool",
// no Task name) holding the panic value and the stack. With a handler set,
// Wait no longer re-raises such panics. The handler runs on the worker
// goroutine and must not block for long.
func WithPanicHandler(h func(*panics.Error)) Option {
	return func(o *options) { o.panicHandler = h }
}

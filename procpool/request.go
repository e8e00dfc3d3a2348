package procpool

import (
	"context"
	"iter"
	"sync/atomic"
)

// request states
const (
	stQueued uint32 = iota
	stSent
	stDone
)

// request is one frame's worth of work: a single input (Call, unchunked
// Map) or a chunk of inputs. Its sink encodes the input and receives the
// result; exactly one of sink.decode and sink.fail is called, by whoever
// wins finish.
type request struct {
	task     *taskMeta
	sink     sink
	lo, n    int  // the inputs [lo, lo+n) of the sink
	chunk    bool // encode a []In even when n is 1
	deadline int64
	attempts int   // crashes survived; owned by the slot that holds the request
	cost     int64 // estimated handler time at the worker it was sent to, ns

	id        uint64 // assigned when encoded for a worker
	state     atomic.Uint32
	abandoned atomic.Bool // nobody wants the result: drop it
	kill      atomic.Bool // the caller's context ended: kill the worker if it runs this
	w         atomic.Pointer[proc]
}

type sink interface {
	// encode writes the request's input with enc (sender goroutine).
	encode(r *request, enc encoder) error
	// decode reads the request's output from dec; errs are the failed items
	// of a chunk, indexes relative to r.lo (reader goroutine). An error
	// means the output could not be decoded.
	decode(r *request, dec decoder, errs []itemErr) error
	// fail reports that the whole request failed.
	fail(r *request, err error)
}

func (r *request) init(t *taskMeta, s sink, lo, n int, chunk bool, ctx context.Context) {
	r.task, r.sink, r.lo, r.n, r.chunk = t, s, lo, n, chunk
	if d, ok := ctx.Deadline(); ok {
		r.deadline = d.UnixNano()
	}
}

// finish claims the right to complete r; it returns false if r is done.
func (r *request) finish() bool {
	for {
		s := r.state.Load()
		if s == stDone {
			return false
		}
		if r.state.CompareAndSwap(s, stDone) {
			return true
		}
	}
}

func (r *request) failWith(err error) {
	if r.finish() && !r.abandoned.Load() {
		r.sink.fail(r, err)
	}
}

// cancel abandons r because its caller's context ended; a worker running
// it is killed.
func (r *request) cancel() {
	r.kill.Store(true)
	r.abandoned.Store(true)
	if w := r.w.Load(); w != nil {
		w.killIfRunning(r)
	}
}

// cancelAll cancels every request of rs, marking them all first, so that
// a worker killed for one does not send the others again.
func cancelAll(rs iter.Seq[*request]) {
	for r := range rs {
		r.kill.Store(true)
		r.abandoned.Store(true)
	}
	for r := range rs {
		if w := r.w.Load(); w != nil {
			w.killIfRunning(r)
		}
	}
}

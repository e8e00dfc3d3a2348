package procpool

import (
	"context"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
)

// Call runs the task with in on one worker of p and returns its output. It
// blocks until the reply arrives, ctx ends, or p is closed.
//
// When ctx ends first, Call returns ctx.Err() at once; if the task is
// already running, its worker (and its process group) is killed and
// replaced, and the calls queued behind it on that worker are sent again.
// A crash of the worker while it runs this call returns a *CrashError
// (errors.Is ErrWorkerCrashed) unless WithRetry allows another try; a
// crash while the call waits behind another on that worker sends it to
// another worker, unseen by the caller. A handler error returns a *TaskError, a panic a *panics.Error. An
// input gob cannot encode, or one over the frame limit, fails here with
// ErrEncode or ErrFrameTooLarge and is never sent. On an idle pool the
// caller's goroutine writes the request and reads the reply itself: the
// cost is one round trip, through the shared-memory rings on Linux (see
// Wire): 1.3 to 2.9 microseconds for a tiny task taking and returning an
// int on a 2-core virtual machine (BenchmarkCall, median 1.6), more for
// inputs and outputs that need gob, and about a millisecond when other
// processes keep every CPU busy, so that neither side can spin.
func (t *Task[In, Out]) Call(ctx context.Context, p *Pool, in In) (Out, error) {
	var zero Out
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if !p.enter() {
		return zero, ErrClosed
	}
	defer p.leave()
	c := &call[In, Out]{in: in, done: make(chan struct{})}
	c.req.init(&t.meta, c, 0, 1, false, ctx)
	if sent, w := p.sendDirect(&c.req, true); w != nil {
		w.readFor(ctx, &c.req) // read the reply here: no hand-off
	} else if !sent {
		if err := p.enqueue(ctx, &c.req); err != nil {
			return zero, err
		}
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.req.cancel()
		return zero, ctx.Err()
	case <-p.done:
		select {
		case <-c.done:
		default:
			c.req.abandoned.Store(true)
			return zero, ErrClosed
		}
	}
	if c.err != nil {
		return zero, c.err
	}
	return c.out, nil
}

type call[In, Out any] struct {
	req  request
	in   In
	out  Out
	err  error
	done chan struct{}
}

func (c *call[In, Out]) encode(_ *request, enc encoder) error { return safeEncode(enc, &c.in) }

func (c *call[In, Out]) decode(r *request, dec decoder, _ []itemErr) error {
	if err := dec.Decode(&c.out); err != nil {
		return err
	}
	close(c.done)
	return nil
}

func (c *call[In, Out]) fail(_ *request, err error) {
	c.err = err
	close(c.done)
}

// Map runs the task on every input, spread over the workers of p, and
// returns the outputs in input order. Inputs are sent in chunks (see
// WithChunkSize; automatic by default). It blocks until every output is back,
// or the first failure, which it returns (wrapped with the input's index)
// after abandoning the rest: inputs not yet sent are dropped, those in
// flight run to completion and are discarded. When ctx ends, Map returns
// ctx.Err() and the workers running its inputs are killed and replaced, as
// for Call. Map holds one request per chunk besides inputs and outputs.
func (t *Task[In, Out]) Map(ctx context.Context, p *Pool, inputs []In, opts ...MapOption) ([]Out, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !p.enter() {
		return nil, ErrClosed
	}
	defer p.leave()
	if len(inputs) == 0 {
		return []Out{}, nil
	}
	var mo mapOptions
	for _, o := range opts {
		o(&mo)
	}
	size := mo.chunk
	if size == 0 {
		size = autoChunk(len(inputs), p.Workers(), t.meta.est.Load())
	}
	m := &mapJob[In, Out]{inputs: inputs, results: make([]Out, len(inputs)), done: make(chan struct{})}
	reqs := make([]request, (len(inputs)+size-1)/size)
	m.pending.Store(int64(len(reqs)))
	for i := range reqs {
		lo := i * size
		reqs[i].init(&t.meta, m, lo, min(size, len(inputs)-lo), size > 1, ctx)
	}
	abandon := func() {
		for i := range reqs {
			reqs[i].abandoned.Store(true)
		}
	}
	for i := range reqs {
		// While the queue has room, a plain send: a four-way select per
		// request was a sixth of the parent's time on tiny tasks. Every
		// 64th request, and whenever the queue is full, it looks for an
		// end first; requests queued after one are dropped unsent (they
		// are abandoned below).
		if i%64 != 0 {
			select {
			case p.queue <- &reqs[i]:
				continue
			default:
			}
		}
		select {
		case p.queue <- &reqs[i]:
			continue
		case <-m.done:
		case <-ctx.Done():
		case <-p.done:
		}
		break
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		cancelAll(func(yield func(*request) bool) {
			for i := range reqs {
				if !yield(&reqs[i]) {
					return
				}
			}
		})
		return nil, ctx.Err()
	case <-p.done:
		select {
		case <-m.done:
		default:
			abandon()
			return nil, ErrClosed
		}
	}
	if err := m.failure(); err != nil {
		abandon()
		return nil, err
	}
	return m.results, nil
}

// autoChunk picks a chunk size: about 100 us of handler time per chunk when
// the task's time per item is known, and never more than a quarter of the
// inputs per worker, so the load stays balanced. For a task not measured
// yet it sends up to 256 inputs per worker one by one (they may be long)
// and larger batches 16 at a time.
func autoChunk(n, workers int, est int64) int {
	limit := max(1, (n+4*workers-1)/(4*workers))
	c := 16
	switch {
	case est > 0:
		c = int(max(1, 100_000/est))
	case n <= 256*workers:
		c = 1
	}
	return max(1, min(c, limit))
}

type mapJob[In, Out any] struct {
	inputs  []In
	results []Out
	pending atomic.Int64
	once    sync.Once
	err     error
	done    chan struct{}
}

func (m *mapJob[In, Out]) encode(r *request, enc encoder) error {
	if !r.chunk {
		return safeEncode(enc, &m.inputs[r.lo])
	}
	s := m.inputs[r.lo : r.lo+r.n]
	return safeEncode(enc, &s)
}

func (m *mapJob[In, Out]) decode(r *request, dec decoder, errs []itemErr) error {
	if !r.chunk {
		if err := dec.Decode(&m.results[r.lo]); err != nil {
			return err
		}
	} else {
		s := m.results[r.lo : r.lo+r.n : r.lo+r.n]
		if err := dec.Decode(&s); err != nil {
			return err
		}
		if len(s) != r.n || (r.n > 0 && &s[0] != &m.results[r.lo]) {
			return fmt.Errorf("chunk of %d outputs for %d inputs", len(s), r.n)
		}
	}
	if len(errs) > 0 {
		m.fail(r, indexErr(r.lo+errs[0].index, remoteErr(r.task.name, &errs[0])))
		return nil
	}
	if m.pending.Add(-1) == 0 {
		m.once.Do(func() { close(m.done) })
	}
	return nil
}

func (m *mapJob[In, Out]) fail(r *request, err error) {
	if r.n == 1 || !isItemErr(err) {
		err = indexErr(r.lo, err)
	}
	m.once.Do(func() {
		m.err = err
		close(m.done)
	})
}

func (m *mapJob[In, Out]) failure() error {
	<-m.done
	return m.err
}

type indexedErr struct {
	index int
	err   error
}

func (e *indexedErr) Error() string { return fmt.Sprintf("procpool: input %d: %v", e.index, e.err) }
func (e *indexedErr) Unwrap() error { return e.err }

func indexErr(i int, err error) error {
	if _, ok := err.(*indexedErr); ok {
		return err
	}
	return &indexedErr{index: i, err: err}
}

func isItemErr(err error) bool {
	_, ok := err.(*indexedErr)
	return ok
}

// Result is one output of Stream with the index of its input in the
// input sequence.
type Result[Out any] struct {
	Index int // position of the input in the sequence, from 0; -1 with a stream-ending error
	Value Out // the task's output; the zero value when the input failed
}

// Stream runs the task on every input of the sequence and yields the outputs
// as they complete, in no particular order, each with its input's index. A
// failed input yields its index and its error and the stream goes on. Memory
// stays bounded: at most WithInFlight inputs are taken from inputs and not
// yet yielded (inputs is read from the goroutine that ranges over the
// stream, between yields). When ctx ends or p closes, the stream yields
// Result{Index: -1} with ctx.Err() or ErrClosed and stops; workers running
// its inputs are killed when ctx ended. Breaking out of the loop abandons
// the inputs still out: those in flight run to completion and are discarded.
// Each range over the returned sequence runs the task over inputs anew.
func (t *Task[In, Out]) Stream(ctx context.Context, p *Pool, inputs iter.Seq[In], opts ...MapOption) iter.Seq2[Result[Out], error] {
	return func(yield func(Result[Out], error) bool) {
		if err := ctx.Err(); err != nil {
			yield(Result[Out]{Index: -1}, err)
			return
		}
		if !p.enter() {
			yield(Result[Out]{Index: -1}, ErrClosed)
			return
		}
		defer p.leave()
		mo := mapOptions{}
		for _, o := range opts {
			o(&mo)
		}
		size := max(mo.chunk, 1)
		if mo.chunk == 0 {
			size = autoChunk(1<<30, p.Workers(), t.meta.est.Load())
		}
		ahead := mo.inFlight
		if ahead == 0 {
			ahead = p.Workers() * max(64, 4*size)
		}
		size = min(size, ahead)
		s := &streamRun[In, Out]{t: t, p: p, ctx: ctx, yield: yield, size: size, ahead: ahead,
			ch: make(chan *streamReq[In, Out], ahead+1), out: make(map[*streamReq[In, Out]]struct{})}
		s.run(inputs)
	}
}

type streamRun[In, Out any] struct {
	t       *Task[In, Out]
	p       *Pool
	ctx     context.Context
	yield   func(Result[Out], error) bool
	size    int
	ahead   int
	ch      chan *streamReq[In, Out]
	out     map[*streamReq[In, Out]]struct{} // submitted, not yet received
	pending int                              // inputs submitted, not yet yielded
	stopped bool
}

type streamReq[In, Out any] struct {
	request
	run  *streamRun[In, Out]
	ins  []In
	outs []Out
	errs []itemErr
	err  error
}

func (s *streamRun[In, Out]) run(inputs iter.Seq[In]) {
	defer s.abandon()
	var buf []In
	index := 0
	for in := range inputs {
		buf = append(buf, in)
		index++
		if len(buf) < s.size && s.pending+len(buf) < s.ahead {
			continue
		}
		if !s.submit(buf, index-len(buf)) {
			return
		}
		buf = nil
		for s.pending >= s.ahead || s.ready() {
			if !s.receive() {
				return
			}
		}
	}
	if len(buf) > 0 && !s.submit(buf, index-len(buf)) {
		return
	}
	for s.pending > 0 {
		if !s.receive() {
			return
		}
	}
}

func (s *streamRun[In, Out]) ready() bool { return len(s.ch) > 0 }

func (s *streamRun[In, Out]) submit(ins []In, base int) bool {
	r := &streamReq[In, Out]{run: s, ins: ins}
	r.request.init(&s.t.meta, r, base, len(ins), len(ins) > 1, s.ctx)
	select {
	case s.p.queue <- &r.request:
		s.out[r] = struct{}{}
		s.pending += len(ins)
		return true
	case <-s.ctx.Done():
		s.stop(s.ctx.Err())
	case <-s.p.done:
		s.stop(ErrClosed)
	}
	return false
}

// receive waits for one request's outputs and yields them; false means stop.
func (s *streamRun[In, Out]) receive() bool {
	var r *streamReq[In, Out]
	select {
	case r = <-s.ch:
	case <-s.ctx.Done():
		s.stop(s.ctx.Err())
		return false
	case <-s.p.done:
		select {
		case r = <-s.ch:
		default:
			s.stop(ErrClosed)
			return false
		}
	}
	delete(s.out, r)
	s.pending -= len(r.ins)
	next := 0
	for i := range r.ins {
		var err error
		if r.err != nil {
			err = r.err
		} else if next < len(r.errs) && r.errs[next].index == i {
			err = remoteErr(s.t.meta.name, &r.errs[next])
			next++
		}
		res := Result[Out]{Index: r.lo + i}
		if err == nil {
			res.Value = r.outs[i]
		}
		if !s.yield(res, err) {
			s.stopped = true
			return false
		}
	}
	return true
}

func (s *streamRun[In, Out]) stop(err error) {
	if err == s.ctx.Err() {
		cancelAll(func(yield func(*request) bool) {
			for r := range s.out {
				if !yield(&r.request) {
					return
				}
			}
		})
		clear(s.out)
	}
	if !s.stopped {
		s.stopped = true
		s.yield(Result[Out]{Index: -1}, err)
	}
}

func (s *streamRun[In, Out]) abandon() {
	for r := range s.out {
		r.abandoned.Store(true)
	}
}

func (r *streamReq[In, Out]) encode(_ *request, enc encoder) error {
	if !r.chunk {
		return safeEncode(enc, &r.ins[0])
	}
	return safeEncode(enc, &r.ins)
}

func (r *streamReq[In, Out]) decode(_ *request, dec decoder, errs []itemErr) error {
	if !r.chunk {
		r.outs = make([]Out, 1)
		if err := dec.Decode(&r.outs[0]); err != nil {
			return err
		}
	} else {
		if err := dec.Decode(&r.outs); err != nil {
			return err
		}
		if len(r.outs) != len(r.ins) {
			return fmt.Errorf("chunk of %d outputs for %d inputs", len(r.outs), len(r.ins))
		}
	}
	r.errs = errs
	r.run.ch <- r
	return nil
}

func (r *streamReq[In, Out]) fail(_ *request, err error) {
	r.err = err
	r.run.ch <- r
}

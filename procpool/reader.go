package procpool

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"reflect"
	"time"
)

// readLoop reads replies whenever requests are in flight and no caller
// reads them, until the worker's reply pipe ends (io.EOF) or a reply breaks
// the protocol.
func (w *proc) readLoop() error {
	for {
		select {
		case <-w.wake:
		case <-w.exited:
		}
		w.rmu.Lock()
		err := w.readErr
		for err == nil && (w.inflight.Load() > 0 || isDone(w.exited)) {
			err = w.readOne()
		}
		if err != nil && w.readErr == nil {
			w.readErr = err
		}
		w.rmu.Unlock()
		if err != nil {
			return err
		}
	}
}

// readFor reads replies in the caller's goroutine until r is answered,
// saving the hand-off from the slot's goroutine; rmu must be held, and is
// released. An end of ctx interrupts the read and kills the worker (r is
// the request it runs). Replies to other requests are delivered on the way;
// requests still in flight afterwards are left to the slot's goroutine.
func (w *proc) readFor(ctx context.Context, r *request) {
	if ctx.Done() != nil {
		w.intMu.Lock()
		w.intr = r
		w.intMu.Unlock()
		stop := context.AfterFunc(ctx, func() {
			w.intMu.Lock()
			if w.intr == r {
				w.intr, w.intrSet = nil, true
				w.cut.Store(true)
				w.repR.SetReadDeadline(time.Unix(1, 0))
			}
			w.intMu.Unlock()
		})
		defer stop()
	}
	w.eager = true
	for w.readErr == nil && r.state.Load() != stDone {
		if err := w.readOne(); err != nil {
			w.readErr = err
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The frame may be half read: the stream is lost, and the
				// worker runs r, whose caller gave up.
				r.kill.Store(true)
				r.abandoned.Store(true)
				w.kill(killCancel)
			}
		}
	}
	if ctx.Done() != nil {
		w.intMu.Lock()
		w.intr = nil
		if w.intrSet { // fired after the last read: nothing was cut
			w.intrSet = false
			w.cut.Store(false)
			w.repR.SetReadDeadline(time.Time{})
		}
		w.intMu.Unlock()
	}
	w.eager = false
	broken := w.readErr != nil
	w.rmu.Unlock()
	if broken || w.inflight.Load() > 0 {
		w.wakeReader()
	}
}

// readOne reads one reply from the worker's pipe and settles it.
func (w *proc) readOne() error {
	body, reset, err := w.fr.next()
	if err != nil {
		return err
	}
	return w.settleFrame(body, reset, true)
}

// settleFrame settles the reply in body, which must answer the oldest
// request in flight: it parses it (parseReply), updates the counters and
// the window, and hands the output or the error to the request's sink.
// live is set for a reply read from the pipe of a running worker: the
// freed window is then refilled, and a worker about to run a request whose
// caller gave up is killed; a replayed reply (see replay) does neither. An
// error means the reply stream is broken.
func (w *proc) settleFrame(body []byte, reset, live bool) error {
	if reset {
		w.dec = gob.NewDecoder(&w.src)
	}
	r := w.oldest()
	if r == nil {
		id, _ := replyID(body)
		return corrupt("reply %d with no request in flight", id)
	}
	rep, err := parseReply(body, r.n)
	if err != nil {
		return err
	}
	if rep.id != r.id {
		return corrupt("reply %d out of order", rep.id)
	}
	p := w.s.p
	failed := rep.status == statusError
	r.task.observe(rep.dur / int64(max(r.n, 1)))
	// Settle the counters and the window before the caller hears back.
	next := w.pop()
	if live && (!w.fr.complete() || w.inflight.Load() == 0) {
		// No more replies buffered: send what the window now allows
		// in one write before the next read waits.
		w.refill()
	}
	if failed {
		p.failed.Add(uint64(r.n))
	} else {
		p.failed.Add(uint64(len(rep.errs)))
		p.completed.Add(uint64(r.n - len(rep.errs)))
	}
	if live && next {
		w.kill(killCancel)
	}
	if failed {
		r.failWith(remoteErr(r.task.name, &rep.whole))
		return nil
	}
	if rep.status == statusRaw {
		// One output in raw form (codec.go): the gob stream is not
		// involved, and a value that does not decode fails this call only.
		if r.finish() && !r.abandoned.Load() {
			if err := safeSinkDecode(r, &rawDecoder{b: rep.out}, nil); err != nil {
				p.completed.Add(^uint64(r.n - 1))
				p.failed.Add(uint64(r.n))
				r.sink.fail(r, fmt.Errorf("%w output of task %s: %v", ErrDecode, r.task.name, err))
			}
		}
		return nil
	}
	w.src.Reset(rep.out)
	if r.finish() && !r.abandoned.Load() {
		if err := safeSinkDecode(r, w.dec, rep.errs); err != nil {
			if w.src.Len() != 0 {
				w.unpop(r)
				return corrupt("decode output of task %s: %v", r.task.name, err)
			}
			p.completed.Add(^uint64(r.n - len(rep.errs) - 1))
			p.failed.Add(uint64(r.n - len(rep.errs)))
			r.sink.fail(r, fmt.Errorf("%w output of task %s: %v", ErrDecode, r.task.name, err))
		}
	} else if err := w.dec.DecodeValue(reflect.Value{}); err != nil {
		return corrupt("skip output of task %s: %v", r.task.name, err)
	}
	if w.src.Len() != 0 {
		return corrupt("%d bytes after the output", w.src.Len())
	}
	return nil
}

// safeSinkDecode decodes r's output, turning a panic in a GobDecode method
// into an error.
func safeSinkDecode(r *request, dec decoder, errs []itemErr) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return r.sink.decode(r, dec, errs)
}

// pop removes the oldest request in flight, opens the window by one, and
// reports whether the next request's caller gave up on it (the worker must
// then be killed, as it starts running that request now).
func (w *proc) pop() (killNext bool) {
	w.mu.Lock()
	w.queued.Add(-w.fifo[w.head].cost)
	w.fifo[w.head] = nil
	w.head++
	if w.head == len(w.fifo) {
		w.fifo, w.head = w.fifo[:0], 0
	}
	killNext = w.head < len(w.fifo) && w.fifo[w.head].kill.Load()
	w.mu.Unlock()
	w.inflight.Add(-1)
	return killNext
}

// unpop puts r back at the front after a reply that broke the protocol, so
// that finish settles it with the crash.
func (w *proc) unpop(r *request) {
	r.state.Store(stSent)
	w.mu.Lock()
	if w.head > 0 {
		w.head--
		w.fifo[w.head] = r
	} else {
		w.fifo = append([]*request{r}, w.fifo...)
	}
	w.mu.Unlock()
	w.inflight.Add(1)
	w.queued.Add(r.cost)
}

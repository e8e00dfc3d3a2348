package procpool

import (
	"io"
)

// finish ends the process after its reader stopped: it kills the process
// (and its process group) unless it exited in order, stops the sender,
// waits for the process, settles the replies its journal still holds, and
// settles every request still in flight.
func (w *proc) finish(rerr error) {
	p, s := w.s.p, w.s
	w.mu.Lock()
	orderly := rerr == io.EOF && w.retired && w.head == len(w.fifo)
	w.mu.Unlock()
	if !orderly {
		w.kill(killBroken)
	}
	close(w.stop)
	<-w.senderDone
	w.sendMu.Lock()
	w.live = false // no caller sends directly any more
	tasks, recycled := w.sent, w.full()
	w.sendMu.Unlock()
	<-w.exited
	werr := w.waitErr
	// The reply stream was read to its end, so the parent has every reply
	// the worker wrote to its pipe: with those in its journal, it knows
	// exactly which requests the worker finished.
	exact := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
	// Wait for a caller still reading (it sees the end of the pipe too).
	w.rmu.Lock()
	w.readErr = cmpOr(w.readErr, io.EOF)
	if exact && !orderly {
		w.replay()
	}
	w.rmu.Unlock()
	w.stdout.Flush()
	w.stderr.Flush()
	w.closeFiles()
	s.cur.CompareAndSwap(w, nil)

	reason := w.killReason.Load()
	var ce *CrashError
	if !orderly && reason != killCancel && reason != killClose {
		ce = &CrashError{Worker: s.id, PID: w.pid, State: w.cmd.ProcessState, Stderr: w.stderr.Tail(), Cause: w.stderr.Cause()}
		switch {
		case rerr != nil && rerr != io.EOF:
			ce.Err = rerr
		case werr != nil:
			ce.Err = werr
		}
		if !p.stopped() {
			p.crashes.Add(1)
		}
		var crash error = ce
		s.lastErr.Store(&crash)
	}
	retry, fail, resent := w.settle(ce, exact)
	// Log before the callers hear of the crash.
	switch {
	case ce != nil:
		p.logCrashed(ce, tasks, len(fail), len(retry), resent)
	case orderly && recycled:
		p.logEnded(w, "procpool: worker recycled", tasks)
	case reason == killCancel:
		p.logEnded(w, "procpool: worker killed: a call's context ended", tasks)
	case orderly && isDone(s.quit) && !p.stopped():
		p.logEnded(w, "procpool: worker removed by Resize", tasks)
	default:
		p.logEnded(w, "procpool: worker stopped", tasks)
	}
	for _, r := range retry {
		p.requeue(r)
	}
	for _, r := range fail {
		p.failed.Add(uint64(r.n))
		r.failWith(ce)
	}
}

// replay settles the replies the worker had made but not yet written to
// its pipe when it died, from its journal (see journal.go); rmu must be
// held and the process reaped. Replies that came through the pipe too are
// skipped; replay stops at the first frame that does not answer the
// oldest request in flight.
func (w *proc) replay() {
	data := readJournal(w.journal)
	for len(data) > 0 {
		body, reset, rest, err := splitFrame(data, w.s.p.o.maxFrame)
		if err != nil {
			return
		}
		data = rest
		id, err := replyID(body)
		if err != nil {
			return
		}
		w.mu.Lock()
		var head *request
		if w.head < len(w.fifo) {
			head = w.fifo[w.head]
		}
		w.mu.Unlock()
		switch {
		case head == nil:
			return
		case id < head.id:
			continue // answered through the pipe
		case id > head.id:
			return
		}
		if w.settleFrame(body, reset, false) != nil {
			return
		}
	}
}

// settle takes the requests still in flight on an ended process. It ends
// the abandoned ones, fails them all with ErrClosed after Close, and
// otherwise queues them again when the process did not crash (ce nil: it
// was killed for another request, or recycled).
//
// After a crash, only the oldest request in flight, the one the worker ran
// (workers run requests in order and, thanks to the journal, every reply
// it made is known), counts as started: WithRetry allows it another try
// (its attempt counted), or it fails with ce. The requests behind it never
// started and are queued again (resent, their attempts not counted). The
// oldest counts as started even if the worker died before it began, for
// instance while reading it: the parent cannot tell, and assuming it ran
// never runs a task twice without WithRetry. When the reply stream was not
// read to its end (exact false: a protocol error), the worker's progress
// is unknown and every request in flight counts as started.
func (w *proc) settle(ce *CrashError, exact bool) (retry, fail []*request, resent int) {
	p := w.s.p
	w.mu.Lock()
	pending := append([]*request(nil), w.fifo[w.head:]...)
	w.fifo, w.head = nil, 0
	w.mu.Unlock()
	w.inflight.Store(0)
	w.queued.Store(0)
	for i, r := range pending {
		switch {
		case r.abandoned.Load():
			r.finish()
		case isClosed(p):
			p.failed.Add(uint64(r.n))
			r.failWith(ErrClosed)
		case ce == nil:
			p.requeue(r)
		case i > 0 && exact: // never started
			p.requeue(r)
			resent++
		case r.attempts < p.o.retry:
			r.attempts++
			retry = append(retry, r)
		default:
			fail = append(fail, r)
		}
	}
	return retry, fail, resent
}

func cmpOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

func isClosed(p *Pool) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

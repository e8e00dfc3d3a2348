package procpool

// queueBudget is the handler time, in nanoseconds, the parent lets queue up
// at a worker beyond two requests (see WithPipelineDepth).
const queueBudget = 1_000_000

// canSend reports whether the sender may put one more request in flight:
// always up to two (one running, one waiting, so the worker never idles
// between tasks), and beyond that up to the pipeline depth while the
// estimated handler time queued at the worker stays under queueBudget.
func (w *proc) canSend() bool {
	n, win := w.inflight.Load(), int64(w.s.p.o.depth)
	if n < min(2, win) {
		return true
	}
	return n < win && w.queued.Load() < queueBudget
}

// sendLoop moves requests from the pool's queue to the worker, batching
// every request it can take without waiting into one write, whenever the
// reader does not (see refill): at the start of a burst, after a full
// pipe, and for retirement.
func (w *proc) sendLoop() {
	defer close(w.senderDone)
	p := w.s.p
	for {
		// Write what the reader left unsent (see refill), waiting for the
		// pipe if need be.
		w.sendMu.Lock()
		err := w.flush()
		w.sendMu.Unlock()
		if err != nil {
			w.kill(killBroken)
			return
		}
		if !w.canSend() {
			select {
			case <-w.credit:
			case <-w.stop:
				return
			}
			continue
		}
		w.sendMu.Lock()
		full := w.full()
		w.sendMu.Unlock()
		if full {
			w.retire()
			return
		}
		r, how := p.take(w.stop, w.s.quit)
		switch how {
		case takeStop:
			if r != nil {
				p.requeue(r)
			}
			return
		case takeRetire:
			w.retire()
			return
		}
		w.sendMu.Lock()
		if w.full() { // callers sent directly meanwhile
			w.sendMu.Unlock()
			p.requeue(r)
			w.retire()
			return
		}
		if !w.canSend() { // the reader filled the window meanwhile
			w.sendMu.Unlock()
			p.requeue(r)
			continue
		}
		w.add(r)
		for w.canSend() && len(w.ob.b) < flushBytes && !w.full() {
			r, ok := p.tryTake()
			if !ok {
				break
			}
			w.add(r)
		}
		err = w.flush()
		w.sendMu.Unlock()
		w.wakeReader()
		if err != nil {
			w.kill(killBroken)
			return
		}
	}
}

// refill runs in the reader after a reply opened the window: it sends the
// next queued requests itself, writing only what the pipe takes without
// waiting, so that a steady stream of tasks costs the parent one wake-up per
// window (see ring) instead of a hand-off to the sender goroutine (on a
// machine whose every CPU runs a worker, each wake-up of a parent thread
// preempts one).
// It leaves the rest to the sender: the queue's blocking waits, retirement,
// and bytes the pipe did not take.
func (w *proc) refill() {
	p := w.s.p
	if !w.sendMu.TryLock() {
		w.signalCredit()
		return
	}
	if w.live && !w.retired && !isDone(w.stop) && !isDone(w.s.quit) && len(w.ob.b) == 0 {
		for w.canSend() && len(w.ob.b) < flushBytes && !w.full() {
			r, ok := p.tryTake()
			if !ok {
				break
			}
			w.add(r)
		}
		if len(w.ob.b) > 0 {
			n, err := w.out.writeNow(w.ob.b)
			w.ob.b = w.ob.b[:copy(w.ob.b, w.ob.b[n:])]
			if err != nil {
				w.kill(killBroken) // the requests in flight are settled by finish
			}
		}
	}
	more := len(w.ob.b) > 0 || w.full() || w.canSend()
	w.sendMu.Unlock()
	if more {
		w.signalCredit()
	}
}

func (w *proc) signalCredit() {
	select {
	case w.credit <- struct{}{}:
	default:
	}
}

// full reports whether the worker has been sent WithMaxTasksPerWorker tasks;
// sendMu must be held.
func (w *proc) full() bool {
	m := w.s.p.o.maxTasks
	return m > 0 && w.sent >= m
}

// sendDirect sends r from the caller's goroutine when some worker is idle
// and nothing waits in the queue, saving the hand-off to a sender
// goroutine. When read is set and nobody reads that worker's replies, it
// also returns the worker with its read token (rmu) held, for the caller
// to read its own reply (proc.readFor). It reports whether r was sent.
func (p *Pool) sendDirect(r *request, read bool) (sent bool, reader *proc) {
	if len(p.queue) > 0 || p.retryN.Load() > 0 {
		return false, nil
	}
	slots := p.slotList()
	n := len(slots)
	first := int(p.rr.Add(1) % uint32(n))
	for i := range n {
		w := slots[(first+i)%n].cur.Load()
		if w == nil || w.inflight.Load() != 0 || !w.sendMu.TryLock() {
			continue
		}
		// Only to an idle worker, which is reading: the write cannot wait
		// behind a running task while the caller's context goes unwatched.
		if !w.live || w.retired || w.full() || w.inflight.Load() != 0 || isDone(w.s.quit) {
			w.sendMu.Unlock()
			continue
		}
		own := read && w.rmu.TryLock()
		if own && w.readErr != nil {
			w.rmu.Unlock()
			own = false
		}
		w.add(r)
		err := w.flush()
		w.sendMu.Unlock()
		if err != nil {
			w.kill(killBroken) // r is in flight: finish settles it
		}
		if own {
			return true, w
		}
		w.wakeReader()
		return true, nil
	}
	return false, nil
}

// retire closes the request pipe: the worker answers what it holds and exits.
func (w *proc) retire() {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	w.mu.Lock()
	w.retired = true
	w.mu.Unlock()
	w.flush()
	w.reqW.Close()
}

func (w *proc) flush() error {
	if len(w.ob.b) == 0 {
		return nil
	}
	_, err := w.out.Write(w.ob.b)
	if cap(w.ob.b) > 4<<20 {
		w.ob.b = nil
	} else {
		w.ob.b = w.ob.b[:0]
	}
	return err
}

// add encodes r into the batch and records it as in flight.
func (w *proc) add(r *request) {
	if r.abandoned.Load() {
		r.finish()
		return
	}
	if err := w.encode(r); err != nil {
		w.s.p.failed.Add(uint64(r.n))
		r.failWith(err)
		return
	}
	// A task never measured yet counts as the whole budget: at most two
	// such requests go to one worker until the first answer says more.
	r.cost = queueBudget
	if est := r.task.est.Load(); est > 0 {
		r.cost = est * int64(r.n)
	}
	w.queued.Add(r.cost)
	w.mu.Lock()
	w.fifo = append(w.fifo, r)
	r.w.Store(w)
	r.state.Store(stSent)
	running := r.kill.Load() && w.fifo[w.head] == r
	w.mu.Unlock()
	w.inflight.Add(1)
	w.sent += r.n
	w.s.tasks.Add(uint64(r.n))
	if running {
		w.kill(killCancel)
	}
}

package procpool

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/affinity"
)

// queueBudget is the handler time, in nanoseconds, the parent lets queue up
// at a worker beyond two requests (see WithPipelineDepth).
const queueBudget = 200_000

// slot is one worker position of a pool: it owns the successive processes
// that fill it and the goroutine that starts, reads and replaces them.
type slot struct {
	p       *Pool
	id      int
	cpu     int // pinned CPU, -1 if none
	cur     atomic.Pointer[proc]
	tasks   atomic.Uint64
	lastErr atomic.Pointer[error]
}

// kill reasons
const (
	killNone   = iota
	killCancel // a caller's context ended while its request ran
	killClose  // Close
	killBroken // protocol or pipe error
)

// proc is one worker process and the parent's side of its pipes.
type proc struct {
	s      *slot
	cmd    *exec.Cmd
	pid    int
	reqW   *os.File
	repR   *os.File
	reqC   *pipeConn // reqW's writes
	stdout *lineWriter
	stderr *lineWriter

	mu   sync.Mutex
	fifo []*request // sent, unanswered, in the worker's order
	head int

	inflight   atomic.Int64
	queued     atomic.Int64 // estimated handler time of the requests in flight, ns
	killReason atomic.Int32
	credit     chan struct{}
	stop       chan struct{} // closed by the slot to end the sender
	senderDone chan struct{}

	// sender state, guarded by sendMu: the sender goroutine, or a caller
	// sending directly to an idle worker (see Pool.sendDirect)
	sendMu sync.Mutex
	live   bool // handshake done, not finished
	requestWriter
	sent    int
	retired bool

	// reader state, guarded by rmu: the read token, held by the slot's
	// goroutine or by a caller reading its own reply (see Pool.sendDirect)
	rmu     sync.Mutex
	fr      *frameReader
	src     bytes.Reader
	dec     *gob.Decoder
	readErr error         // the reply stream broke: every later read fails with it
	wake    chan struct{} // asks the slot's goroutine to read
	intMu   sync.Mutex    // guards intr, intrSet and repR's read deadline
	intr    *request      // the caller reading now, whose context may interrupt it
	intrSet bool          // repR's read deadline was set to interrupt a caller

	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // cmd.Wait's error, set before exited closes
}

// run keeps the slot filled until the pool stops. The first start reports
// to ready.
func (s *slot) run(ready chan<- error) {
	defer s.p.wg.Done()
	p := s.p
	first := true
	failures := 0
	for {
		if p.stopped() {
			if first {
				ready <- ErrClosed
			}
			return
		}
		w, err := s.start()
		if err == nil {
			if herr := w.handshake(); herr != nil {
				err = w.abort(herr)
			}
		}
		if err != nil {
			s.lastErr.Store(&err)
			if first {
				ready <- fmt.Errorf("procpool: start worker %d: %w", s.id, err)
				return
			}
			failures++
			delay := retryDelay(failures)
			p.logStartFailed(s, err, failures, delay)
			select {
			case <-time.After(delay):
			case <-p.done:
			case <-p.stopping:
			}
			continue
		}
		failures = 0
		p.logSpawned(w)
		if first {
			ready <- nil
			first = false
		}
		w.sendMu.Lock()
		w.live = true
		w.sendMu.Unlock()
		go w.sendLoop()
		rerr := w.readLoop()
		w.finish(rerr)
		if !p.stopped() {
			p.restarts.Add(1)
		}
	}
}

func (p *Pool) stopped() bool {
	select {
	case <-p.done:
		return true
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// start starts a worker process on the spawning thread.
func (s *slot) start() (*proc, error) {
	p := s.p
	w := &proc{
		s:          s,
		credit:     make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
		exited:     make(chan struct{}),
		stop:       make(chan struct{}),
		senderDone: make(chan struct{}),
		stdout:     newLineWriter(&p.outMu, p.o.output, s.id),
		stderr:     newLineWriter(&p.outMu, p.o.output, s.id),
	}
	w.requestWriter.init(p.o.maxFrame)
	w.dec = gob.NewDecoder(&w.src)
	var err error
	p.onSpawnThread(func() { err = w.spawn() })
	if err != nil {
		return nil, err
	}
	w.reqC = newPipeConn(w.reqW)
	w.fr = newFrameReader(newPipeConn(w.repR), p.o.maxFrame)
	// Reap the process as soon as it ends, even while nobody reads its
	// replies: no zombie, and its death wakes the reader.
	go func() {
		w.waitErr = w.cmd.Wait()
		close(w.exited)
	}()
	s.cur.Store(w)
	select {
	case <-p.done:
		w.kill(killClose)
	default:
	}
	return w, nil
}

// spawn creates the pipes and starts the process; it runs on the spawning
// thread.
func (w *proc) spawn() error {
	p, s := w.s.p, w.s
	reqR, reqW, err := pipe(false)
	if err != nil {
		return err
	}
	repR, repW, err := pipe(true)
	if err != nil {
		reqR.Close()
		reqW.Close()
		return err
	}
	cmd := exec.Command(p.exe)
	cmd.Args = []string{os.Args[0]}
	cmd.Env = append(p.env[:len(p.env):len(p.env)], envWorker+"="+strconv.Itoa(s.id))
	cmd.ExtraFiles = []*os.File{reqR, repW}
	cmd.Stdout = w.stdout
	cmd.Stderr = w.stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second
	if s.cpu >= 0 {
		err = affinity.Start(cmd, affinity.CPUSet{s.cpu})
	} else {
		err = cmd.Start()
	}
	reqR.Close()
	repW.Close()
	if err != nil {
		reqW.Close()
		repR.Close()
		return fmt.Errorf("procpool: start worker: %w", err)
	}
	w.cmd, w.pid, w.reqW, w.repR = cmd, cmd.Process.Pid, reqW, repR
	return nil
}

// handshake reads the worker's hello, or its init error.
func (w *proc) handshake() error {
	body, _, err := w.fr.next()
	if err != nil {
		return fmt.Errorf("no hello from worker: %w", err)
	}
	pr := parser{b: body}
	switch pr.byte() {
	case repHello:
		pid := pr.uvarint()
		if pr.err == nil && pid != uint64(w.pid) {
			return fmt.Errorf("hello from pid %d, started %d", pid, w.pid)
		}
		return pr.err
	case repInitError:
		msg := pr.bytes(len(body))
		if pr.err != nil {
			return pr.err
		}
		return &initError{msg: string(msg)}
	}
	return corrupt("expected hello")
}

// abort ends a process whose handshake failed and returns why.
func (w *proc) abort(herr error) error {
	w.kill(killBroken)
	<-w.exited
	w.stdout.Flush()
	w.stderr.Flush()
	w.reqW.Close()
	w.repR.Close()
	w.s.cur.CompareAndSwap(w, nil)
	var ie *initError
	if errors.As(herr, &ie) {
		return herr
	}
	return &CrashError{Worker: w.s.id, PID: w.pid, State: w.cmd.ProcessState, Stderr: w.stderr.Tail(), Err: herr}
}

// initError is a WorkerInit hook's failure reported by a worker.
type initError struct{ msg string }

func (e *initError) Error() string { return "procpool: worker init: " + e.msg }

// kill sends SIGKILL once; the reader then sees the end of the reply pipe.
func (w *proc) kill(reason int32) {
	if w.killReason.CompareAndSwap(killNone, reason) {
		w.cmd.Process.Kill()
	}
}

// killIfRunning kills the worker if r is the oldest request it holds,
// which is the one it runs (or has just answered). A request further back
// is killed for when it reaches the front (see readLoop).
func (w *proc) killIfRunning(r *request) {
	w.mu.Lock()
	running := w.head < len(w.fifo) && w.fifo[w.head] == r
	w.mu.Unlock()
	if running {
		w.kill(killCancel)
	}
}

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
		r, how := p.take(w.stop)
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
// reply instead of a hand-off to the sender goroutine (on a machine whose
// every CPU runs a worker, each wake-up of a parent thread preempts one).
// It leaves the rest to the sender: the queue's blocking waits, retirement,
// and bytes the pipe did not take.
func (w *proc) refill() {
	p := w.s.p
	if !w.sendMu.TryLock() {
		w.signalCredit()
		return
	}
	if w.live && !w.retired && !isDone(w.stop) && len(w.ob.b) == 0 {
		for w.canSend() && len(w.ob.b) < flushBytes && !w.full() {
			r, ok := p.tryTake()
			if !ok {
				break
			}
			w.add(r)
		}
		if len(w.ob.b) > 0 {
			n, err := w.reqC.writeNow(w.ob.b)
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
	n := len(p.slots)
	first := int(p.rr.Add(1) % uint32(n))
	for i := range n {
		w := p.slots[(first+i)%n].cur.Load()
		if w == nil || w.inflight.Load() != 0 || !w.sendMu.TryLock() {
			continue
		}
		// Only to an idle worker, which is reading: the write cannot wait
		// behind a running task while the caller's context goes unwatched.
		if !w.live || w.retired || w.full() || w.inflight.Load() != 0 {
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
	_, err := w.reqC.Write(w.ob.b)
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
				w.repR.SetReadDeadline(time.Unix(1, 0))
			}
			w.intMu.Unlock()
		})
		defer stop()
	}
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
			w.repR.SetReadDeadline(time.Time{})
		}
		w.intMu.Unlock()
	}
	broken := w.readErr != nil
	w.rmu.Unlock()
	if broken || w.inflight.Load() > 0 {
		w.wakeReader()
	}
}

func (w *proc) wakeReader() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// readOne reads and settles one reply.
func (w *proc) readOne() error {
	p := w.s.p
	{
		body, reset, err := w.fr.next()
		if err != nil {
			return err
		}
		if reset {
			w.dec = gob.NewDecoder(&w.src)
		}
		pr := parser{b: body}
		kind := pr.byte()
		id := pr.uvarint()
		dur := int64(min(pr.uvarint(), 1<<62))
		status := pr.byte()
		if pr.err != nil {
			return pr.err
		}
		if kind != repResult {
			return corrupt("reply kind %d", kind)
		}
		w.mu.Lock()
		var r *request
		if w.head < len(w.fifo) {
			r = w.fifo[w.head]
		}
		w.mu.Unlock()
		if r == nil || r.id != id {
			return corrupt("reply %d out of order", id)
		}
		var errs []itemErr
		var whole *itemErr
		switch status {
		case statusOK:
		case statusError:
			whole = new(itemErr)
			pr.itemErr(whole, len(body))
		case statusItems:
			n := pr.count(r.n)
			for range n {
				e := itemErr{index: pr.count(r.n - 1)}
				pr.itemErr(&e, len(body))
				errs = append(errs, e)
			}
		default:
			return corrupt("reply status %d", status)
		}
		if pr.err != nil {
			return pr.err
		}
		if whole == nil {
			if err := checkGob(pr.b); err != nil {
				return err
			}
		} else if len(pr.b) != 0 {
			return corrupt("bytes after an error reply")
		}
		r.task.observe(dur / int64(max(r.n, 1)))
		// Settle the counters and the window before the caller hears back.
		next := w.pop()
		if !w.fr.complete() || w.inflight.Load() == 0 {
			// No more replies buffered: send what the window now allows
			// in one write before the next read waits.
			w.refill()
		}
		if whole != nil {
			p.failed.Add(uint64(r.n))
		} else {
			p.failed.Add(uint64(len(errs)))
			p.completed.Add(uint64(r.n - len(errs)))
		}
		if next {
			w.kill(killCancel)
		}
		if whole != nil {
			r.failWith(remoteErr(r.task.name, whole))
			return nil
		}
		w.src.Reset(pr.b)
		if r.finish() && !r.abandoned.Load() {
			if err := safeSinkDecode(r, w.dec, errs); err != nil {
				if w.src.Len() != 0 {
					w.unpop(r)
					return corrupt("decode output of task %s: %v", r.task.name, err)
				}
				p.completed.Add(^uint64(r.n - len(errs) - 1))
				p.failed.Add(uint64(r.n - len(errs)))
				r.sink.fail(r, fmt.Errorf("%w output of task %s: %v", ErrDecode, r.task.name, err))
			}
		} else if err := w.dec.DecodeValue(reflect.Value{}); err != nil {
			return corrupt("skip output of task %s: %v", r.task.name, err)
		}
		if w.src.Len() != 0 {
			return corrupt("%d bytes after the output", w.src.Len())
		}
	}
	return nil
}

// safeSinkDecode decodes r's output, turning a panic in a GobDecode method
// into an error.
func safeSinkDecode(r *request, dec *gob.Decoder, errs []itemErr) (err error) {
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

// finish ends the process after its reader stopped: it kills the process
// unless it exited in order, stops the sender, waits for the process, and
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
	// Wait for a caller still reading (it sees the end of the pipe too).
	w.rmu.Lock()
	w.readErr = cmpOr(w.readErr, io.EOF)
	w.rmu.Unlock()
	w.stdout.Flush()
	w.stderr.Flush()
	w.reqW.Close()
	w.repR.Close()
	s.cur.CompareAndSwap(w, nil)

	reason := w.killReason.Load()
	var ce *CrashError
	if !orderly && reason != killCancel && reason != killClose {
		ce = &CrashError{Worker: s.id, PID: w.pid, State: w.cmd.ProcessState, Stderr: w.stderr.Tail()}
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
	retry, fail := w.settle(ce)
	// Log before the callers hear of the crash.
	switch {
	case ce != nil:
		p.logCrashed(ce, tasks, len(fail), len(retry))
	case orderly && recycled:
		p.logEnded(w, "procpool: worker recycled", tasks)
	case reason == killCancel:
		p.logEnded(w, "procpool: worker killed: a call's context ended", tasks)
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

// settle takes the requests still in flight on an ended process. It ends
// the abandoned ones, fails them all with ErrClosed after Close, and
// otherwise queues them again when the process did not crash (ce nil: it
// was killed for another request, or recycled). After a crash it returns
// those WithRetry allows another try (their attempt counted) and those
// that fail with ce, for the caller to act on.
func (w *proc) settle(ce *CrashError) (retry, fail []*request) {
	p := w.s.p
	w.mu.Lock()
	pending := append([]*request(nil), w.fifo[w.head:]...)
	w.fifo, w.head = nil, 0
	w.mu.Unlock()
	w.inflight.Store(0)
	w.queued.Store(0)
	for _, r := range pending {
		switch {
		case r.abandoned.Load():
			r.finish()
		case isClosed(p):
			p.failed.Add(uint64(r.n))
			r.failWith(ErrClosed)
		case ce == nil:
			p.requeue(r)
		case r.attempts < p.o.retry:
			r.attempts++
			retry = append(retry, r)
		default:
			fail = append(fail, r)
		}
	}
	return retry, fail
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

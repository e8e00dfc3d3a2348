package procpool

import (
	"bytes"
	"encoding/gob"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"
)

// kill reasons
const (
	killNone   = iota
	killCancel // a caller's context ended while its request ran
	killClose  // Close
	killBroken // protocol or pipe error, or the worker died by itself
)

// proc is one worker process and the parent's side of its pipes.
type proc struct {
	s       *slot
	cmd     *exec.Cmd
	pid     int // also the ID of the worker's process group (unix)
	reqW    *os.File
	repR    *os.File
	journal *os.File    // the worker's reply journal, read after it dies (see replay)
	reqC    *pipeConn   // reqW's writes
	out     reqOut      // where requests go: reqC, or the request ring (see ring)
	shm     []byte      // the journal file with its rings, mapped; nil if not
	rep     *ring       // the reply ring, if used; guarded by mu once set
	cut     atomic.Bool // a caller's context ended: its ring read fails (see readFor)
	stdout  *lineWriter
	stderr  *lineWriter

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
	eager   bool          // a caller reads its own reply: wake at every reply (see replyWant)
	wake    chan struct{} // asks the slot's goroutine to read
	intMu   sync.Mutex    // guards intr, intrSet and repR's read deadline
	intr    *request      // the caller reading now, whose context may interrupt it
	intrSet bool          // repR's read deadline was set to interrupt a caller

	gmu     sync.Mutex    // orders group kills before the reaping that frees the group's ID
	ended   bool          // the process ended and its group was killed; guarded by gmu
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // cmd.Wait's error, set before exited closes
}

// reap waits for the process, kills what is left of its process group,
// and reaps it. Where the system can wait without reaping (Linux), the
// group is killed while the dead worker, a zombie, still holds the group's
// ID, so the ID cannot have been reused by then; elsewhere the group is
// killed just after the reaping, which would also reach a process that, in
// the microseconds between, was given the same PID and made itself a group
// leader: too unlikely to give up the sweep for.
func (w *proc) reap() {
	if waitExited(w.pid) {
		w.gmu.Lock()
		killGroup(w.pid)
		w.ended = true // nothing left to kill
		w.gmu.Unlock()
		w.waitErr = w.cmd.Wait()
	} else {
		err := w.cmd.Wait()
		w.gmu.Lock()
		w.ended = true
		w.gmu.Unlock()
		killGroup(w.pid)
		w.waitErr = err
	}
	close(w.exited)
}

// kill sends SIGKILL once, to the worker's whole process group where there
// is one (unix): the worker and every process its tasks started and left
// in the group. The reader then sees the end of the reply pipe.
func (w *proc) kill(reason int32) {
	if !w.killReason.CompareAndSwap(killNone, reason) {
		return
	}
	w.gmu.Lock()
	done := w.ended || killGroup(w.pid)
	w.gmu.Unlock()
	if !done {
		w.cmd.Process.Kill()
	}
}

// killIfRunning kills the worker if r is the oldest request it holds,
// which is the one it runs, unless its reply is known to be made (see
// answered). A request further back is killed for when it reaches the
// front (see pop).
func (w *proc) killIfRunning(r *request) {
	w.mu.Lock()
	running := w.head < len(w.fifo) && w.fifo[w.head] == r && !w.answered()
	w.mu.Unlock()
	if running {
		w.kill(killCancel)
	}
}

// answered reports whether the reply ring holds bytes the reader has not
// taken: replies come in order and only after their request ran, so the
// oldest request in flight then ran to its end, and killing the worker
// would hit the request it runs now, whose caller has not given up. The
// reader settles the reply and kills the worker then if that request's
// caller gave up too (see pop). mu must be held: closeFiles clears rep
// under it before it unmaps the ring.
func (w *proc) answered() bool {
	return w.rep != nil && w.rep.tail.Load() != w.rep.head.Load()
}

// closeFiles closes the parent's ends of the pipes and the journal, and
// unmaps the rings.
func (w *proc) closeFiles() {
	w.reqW.Close()
	w.repR.Close()
	w.journal.Close()
	if w.shm != nil {
		w.mu.Lock()
		w.rep = nil // see answered
		w.mu.Unlock()
		unmapShared(w.shm)
		w.shm = nil
	}
}

// reqOut is what the parent writes request batches to.
type reqOut interface {
	Write(p []byte) (int, error)    // all of p, waiting for room
	writeNow(p []byte) (int, error) // what fits now
}

// useRings switches the worker's frames to the rings if the worker
// acknowledged them (see ring); it runs after hello, before anything else
// is sent or read.
func (w *proc) useRings() {
	if !ringsOn(w.shm) {
		return
	}
	req, rep := rings(w.shm)
	token := []byte{0}
	w.out = &ringWriter{r: req,
		wake: func() error {
			_, err := w.reqC.writeNow(token)
			return err
		},
		dead: func() error {
			if isDone(w.exited) {
				return errGone
			}
			return nil
		},
	}
	rr := &ringReader{r: rep, tok: w.fr.src, cut: &w.cut, limit: w.replySpin}
	rr.want = w.replyWant
	w.rep = rep
	rr.spin.budget = parentSpin
	w.fr = newFrameReader(rr, w.s.p.o.maxFrame)
}

// replySpin is how long the reader may spin for a reply now (see ring):
// parentSpin when the oldest request in flight is expected to take at most
// spinTaskMax of handler time, else nothing.
func (w *proc) replySpin() time.Duration {
	r := w.oldest()
	if r == nil {
		return 0
	}
	if est := r.task.est.Load(); est <= 0 || est*int64(r.n) > spinTaskMax {
		return 0
	}
	return parentSpin
}

// replyWant is how many replies the reader waits for before the worker
// wakes it (see ring): one while a caller reads its own reply, otherwise
// all but the last request in flight, so that the reader refills the
// window while the worker runs that one.
func (w *proc) replyWant() uint64 {
	if w.eager {
		return 1
	}
	return uint64(max(1, w.inflight.Load()-1))
}

// oldest returns the oldest request in flight, the one the worker runs or
// answers next, or nil.
func (w *proc) oldest() *request {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.head < len(w.fifo) {
		return w.fifo[w.head]
	}
	return nil
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

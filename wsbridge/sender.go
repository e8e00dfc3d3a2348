package wsbridge

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// This file holds the sender, the write half of the frame layer (see
// wire.go): a queue of frames per connection, bounded in bytes on the
// server, written by one goroutine at a time.

// outMsg is one frame to send. data is never modified once queued, so one
// encoded event can be queued to many connections.
type outMsg struct {
	op    ws.OpCode
	reply bool // a reply to a command: paced by the budget, not refused
	data  []byte
}

// frameOverhead is what a queued frame costs beyond its payload, as a
// budget counts it: the outMsg, the frame header, a share of the slice.
const frameOverhead = 64

// sendBudget is the accounting a Server puts on a sender: a byte limit on
// its pushed frames and the group (principal) whose in-flight replies and
// queued bytes it adds to. A Client's sender has none.
type sendBudget struct {
	g         *group
	pushLimit int64 // bytes of pushed frames queued to this connection
}

// batchCost is what a batch of frames holds of a budget.
type batchCost struct {
	pushed, replied int64 // bytes
	replies         int64 // reply frames
}

func (b *batchCost) add(m *outMsg) {
	n := int64(len(m.data)) + frameOverhead
	switch {
	case m.op == ws.OpClose:
	case m.reply:
		b.replied += n
		b.replies++
	default:
		b.pushed += n
	}
}

// senderOwner is told what a sender's writer goroutine did.
type senderOwner interface {
	// writeFailed is called once when a write fails (or times out); the
	// owner should close the connection.
	writeFailed(err error)
	// closeWritten is called after the close frame has been written.
	closeWritten()
}

// Sender states.
const (
	senderOpen    = iota
	senderClosing // a close frame is queued; nothing more is accepted
	senderDead    // the close frame is written, or writing failed, or killed
)

var (
	errQueueFull  = errors.New("wsbridge: send queue full")
	errSendClosed = errors.New("wsbridge: connection closing")
)

// sender queues frames for one connection and writes them from a single
// goroutine at a time, which it starts when the queue becomes non-empty and
// which exits when the queue is drained: an idle connection holds no writer
// goroutine and no write buffer. Every frame the connection sends, pongs and
// the close frame included, goes through it, so writes never interleave.
type sender struct {
	nc      net.Conn
	mask    bool          // client side: mask every frame
	timeout time.Duration // write deadline per write
	limit   int           // queued frames beyond which send fails
	wg      *sync.WaitGroup
	owner   senderOwner
	budget  *sendBudget // server side: byte limits instead of limit

	mu       sync.Mutex
	q, spare []outMsg
	pushed   int64 // bytes of pushed frames queued, with a budget
	writing  bool
	state    uint8
	done     chan struct{} // closed when the state becomes dead

	closeCode   ws.StatusCode // of the close frame queued, if any
	closeReason string
}

func (s *sender) init(nc net.Conn, mask bool, timeout time.Duration, limit int, wg *sync.WaitGroup, owner senderOwner) {
	s.nc, s.mask, s.timeout, s.limit, s.wg, s.owner = nc, mask, timeout, limit, wg, owner
	s.done = make(chan struct{})
}

// send queues a data, ping or pong frame. It returns errQueueFull when
// limit frames wait already (pongs count: a peer that pings without reading
// fills the queue like any other) or, with a budget, when the frame would
// take the pushed bytes of this connection or the queued bytes of its group
// over their limits (a connection with nothing pushed queued may always
// queue one frame, whatever its size); and errSendClosed once a close frame
// is queued. It never blocks on the network.
func (s *sender) send(op ws.OpCode, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != senderOpen {
		return errSendClosed
	}
	if b := s.budget; b != nil {
		n := int64(len(data)) + frameOverhead
		if s.pushed > 0 && (s.pushed+n > b.pushLimit || b.g.overQueued(n)) {
			return errQueueFull
		}
		s.pushed += n
		b.g.queued.Add(n)
	} else if len(s.q) >= s.limit {
		return errQueueFull
	}
	s.q = append(s.q, outMsg{op: op, data: data})
	s.startLocked()
	return nil
}

// reply queues a text frame that answers a command. With a budget it is
// never refused for space: it adds to the group's in-flight replies and
// queued bytes, which pace the reading of commands instead (see
// group.acquire). It returns errSendClosed once a close frame is queued.
func (s *sender) reply(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != senderOpen {
		return errSendClosed
	}
	if b := s.budget; b != nil {
		b.g.inflight.Add(1)
		b.g.queued.Add(int64(len(data)) + frameOverhead)
	}
	s.q = append(s.q, outMsg{op: ws.OpText, reply: true, data: data})
	s.startLocked()
	return nil
}

// pushedBytes returns the bytes of pushed frames queued, with a budget.
func (s *sender) pushedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pushed
}

// dropQueueLocked empties the queue and returns what it held of the
// budget to the group.
func (s *sender) dropQueueLocked() {
	if b := s.budget; b != nil && len(s.q) > 0 {
		var c batchCost
		for i := range s.q {
			c.add(&s.q[i])
		}
		s.pushed -= c.pushed
		b.g.release(c.replies, c.pushed+c.replied)
	}
	clear(s.q)
	s.q = s.q[:0]
}

// written returns what a written (or failed) batch held of the budget.
func (s *sender) written(c *batchCost) {
	b := s.budget
	if b == nil {
		return
	}
	s.mu.Lock()
	s.pushed -= c.pushed
	s.mu.Unlock()
	b.g.release(c.replies, c.pushed+c.replied)
}

func (s *sender) startLocked() {
	if !s.writing {
		s.writing = true
		s.wg.Add(1)
		go s.run()
	}
}

// close queues a close frame with code and reason after the frames already
// queued, or instead of them when drop is set. It returns false if a close
// frame was queued before or the sender is dead.
func (s *sender) close(code ws.StatusCode, reason string, drop bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != senderOpen {
		return false
	}
	s.state = senderClosing
	s.closeCode, s.closeReason = code, reason
	if drop {
		s.dropQueueLocked()
	}
	s.q = append(s.q, outMsg{op: ws.OpClose, data: ws.NewCloseFrameBody(code, reason)})
	s.startLocked()
	return true
}

// sentClose returns the code and reason of the close frame queued by close,
// and whether there was one.
func (s *sender) sentClose() (ws.StatusCode, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCode, s.closeReason, s.closeCode != 0
}

// kill drops whatever is queued and makes every later send fail. A writer in
// the middle of a write finishes or fails that write, then exits.
func (s *sender) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropQueueLocked()
	s.dieLocked()
}

func (s *sender) dieLocked() {
	if s.state != senderDead {
		s.state = senderDead
		close(s.done)
	}
}

// writeBufPool holds the buffers writers encode batches into.
var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}

// flushAt is the buffered size at which a writer writes before encoding the
// rest of its batch.
const flushAt = 32 << 10

// run is the writer goroutine: it takes the queue in batches, encodes each
// batch into one buffer and writes it with one call, until the queue is
// empty or the close frame is out.
func (s *sender) run() {
	defer s.wg.Done()
	bp := writeBufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooled {
			*bp = (*bp)[:0]
			writeBufPool.Put(bp)
		}
	}()
	var hdr [ws.MaxHeaderSize]byte
	for {
		// A write costs far more than the frames it carries: yield once so
		// that the goroutines that were made runnable with this one (the
		// router with a job's event, other callers of send) can queue
		// their frames into this batch.
		runtime.Gosched()
		s.mu.Lock()
		batch := s.q
		if len(batch) == 0 || s.state == senderDead {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.q, s.spare = s.spare[:0], batch
		s.mu.Unlock()

		buf := (*bp)[:0]
		wroteClose := false
		var err error
		var cost batchCost // of the whole batch, written or not
		if s.budget != nil {
			for i := range batch {
				cost.add(&batch[i])
			}
		}
		for _, m := range batch {
			buf = appendFrame(buf, &hdr, m, s.mask)
			if m.op == ws.OpClose {
				wroteClose = true
				break
			}
			if len(buf) >= flushAt {
				if err = s.write(buf); err != nil {
					break
				}
				buf = buf[:0]
			}
		}
		if err == nil && len(buf) > 0 {
			err = s.write(buf)
		}
		*bp = buf[:0]
		s.written(&cost)
		clear(batch)
		if err != nil {
			s.mu.Lock()
			s.dieLocked()
			s.writing = false
			s.mu.Unlock()
			s.owner.writeFailed(err)
			return
		}
		if wroteClose {
			s.mu.Lock()
			s.dropQueueLocked()
			s.dieLocked()
			s.writing = false
			s.mu.Unlock()
			s.owner.closeWritten()
			return
		}
	}
}

func (s *sender) write(b []byte) error {
	if s.timeout > 0 {
		if err := s.nc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil {
			return err
		}
	}
	_, err := s.nc.Write(b)
	return err
}

// appendFrame appends the frame of m to buf, masked when mask is set.
func appendFrame(buf []byte, hdr *[ws.MaxHeaderSize]byte, m outMsg, mask bool) []byte {
	h := ws.Header{Fin: true, OpCode: m.op, Length: int64(len(m.data))}
	if mask {
		h.Masked = true
		h.Mask = ws.NewMask()
	}
	w := appendWriter{buf}
	// WriteHeaderBuffer only fails on a short buffer or a negative length,
	// neither of which can happen here.
	_ = ws.WriteHeaderBuffer(&w, h, hdr[:])
	buf = w.b
	start := len(buf)
	buf = append(buf, m.data...)
	if mask {
		ws.Cipher(buf[start:], h.Mask, 0)
	}
	return buf
}

// appendWriter is an io.Writer that appends to a slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

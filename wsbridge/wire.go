package wsbridge

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// This file holds the frame layer shared by the server's connections and the
// Client: a message reader that assembles fragmented messages under a size
// limit and hands control frames to its owner, and a sender that serializes
// every write of a connection on one goroutine.

// closeErr ends a connection with a close frame of code.
type closeErr struct {
	code   ws.StatusCode
	reason string
}

func (e *closeErr) Error() string { return "wsbridge: " + e.reason }

// Is lets errors.Is match the sentinels of the codes that have one.
func (e *closeErr) Is(target error) bool {
	switch e.code {
	case ws.StatusMessageTooBig:
		return target == ErrMessageTooBig
	case CloseSlowConsumer:
		return target == ErrSlowConsumer
	}
	return false
}

var (
	errTooBig    = &closeErr{ws.StatusMessageTooBig, "message too big"}
	errBadUTF8   = &closeErr{ws.StatusInvalidFramePayloadData, "invalid UTF-8 in text message"}
	errBinary    = &closeErr{ws.StatusUnsupportedData, "binary messages are not supported"}
	errSlow      = &closeErr{CloseSlowConsumer, "slow consumer: send queue full"}
	errGoingAway = &closeErr{ws.StatusGoingAway, "server shutting down"}
)

// protocolErr wraps a frame-level violation as a 1002 close.
func protocolErr(err error) *closeErr {
	return &closeErr{ws.StatusProtocolError, err.Error()}
}

// readChunk bounds how much a payload buffer grows before the bytes of a
// peer-declared length actually arrive.
const readChunk = 32 << 10

// bufPool holds message buffers; buffers above maxPooled are not kept.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooled = 64 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(bp *[]byte) {
	if bp == nil || cap(*bp) > maxPooled {
		return
	}
	*bp = (*bp)[:0]
	bufPool.Put(bp)
}

// frameOwner is told about every frame a msgReader reads.
type frameOwner interface {
	// frameRead is called after each frame header (any opcode).
	frameRead()
	// control handles a ping, pong or close frame, unmasked. p is only valid
	// during the call. A non-nil error ends the read.
	control(h ws.Header, p []byte) error
}

// msgReader reads whole data messages from a WebSocket stream.
type msgReader struct {
	r     io.Reader
	state ws.State // StateServerSide or StateClientSide
	max   int      // message size limit, across fragments
	owner frameOwner
	hdr   [ws.MaxHeaderSize - 2]byte
	ctl   [ws.MaxControlFramePayloadSize]byte
}

// next reads frames until a whole data message has arrived and returns its
// opcode and payload in a pooled buffer (release it with putBuf). Control
// frames between fragments go to the owner as they come. Errors are
// *closeErr for violations of the protocol or of the limits, or the read
// error of the stream.
func (r *msgReader) next() (op ws.OpCode, bp *[]byte, err error) {
	state := r.state
	defer func() {
		if err != nil && bp != nil {
			putBuf(bp)
			bp = nil
		}
	}()
	for {
		h, err := ws.ReadHeaderBuffer(r.r, r.hdr[:])
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
				return 0, bp, protocolErr(err)
			}
			return 0, bp, err
		}
		r.owner.frameRead()
		if err := ws.CheckHeader(h, state); err != nil {
			return 0, bp, protocolErr(err)
		}
		if h.OpCode.IsControl() {
			p := r.ctl[:h.Length]
			if _, err := io.ReadFull(r.r, p); err != nil {
				return 0, bp, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			if err := r.owner.control(h, p); err != nil {
				return 0, bp, err
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			op = h.OpCode
			bp = getBuf()
		}
		n := 0
		if bp != nil {
			n = len(*bp)
		}
		if h.Length > int64(r.max-n) {
			return 0, bp, errTooBig
		}
		if op == ws.OpBinary {
			// Refuse before reading: the payload is of no use.
			return 0, bp, errBinary
		}
		if err := readPayload(r.r, bp, int(h.Length), h); err != nil {
			return 0, bp, err
		}
		if !h.Fin {
			state = state.Set(ws.StateFragmented)
			continue
		}
		if op == ws.OpText && !utf8.Valid(*bp) {
			return 0, bp, errBadUTF8
		}
		return op, bp, nil
	}
}

// readPayload appends n payload bytes of a frame with header h to *bp,
// growing it as the bytes arrive, and unmasks them.
func readPayload(r io.Reader, bp *[]byte, n int, h ws.Header) error {
	b := *bp
	start := len(b)
	for left := n; left > 0; {
		c := min(left, readChunk)
		if cap(b)-len(b) < c {
			nb := make([]byte, len(b), len(b)+max(c, min(left, cap(b))))
			copy(nb, b)
			b = nb
		}
		m := len(b)
		b = b[:m+c]
		if _, err := io.ReadFull(r, b[m:]); err != nil {
			*bp = b[:m]
			return err
		}
		left -= c
	}
	if h.Masked {
		ws.Cipher(b[start:], h.Mask, 0)
	}
	*bp = b
	return nil
}

// outMsg is one frame to send. data is never modified once queued, so one
// encoded event can be queued to many connections.
type outMsg struct {
	op   ws.OpCode
	data []byte
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

	mu       sync.Mutex
	q, spare []outMsg
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
// fills the queue like any other), and errSendClosed once a close frame is
// queued. It never blocks on the network.
func (s *sender) send(op ws.OpCode, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != senderOpen {
		return errSendClosed
	}
	if len(s.q) >= s.limit {
		return errQueueFull
	}
	s.q = append(s.q, outMsg{op, data})
	s.startLocked()
	return nil
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
		clear(s.q)
		s.q = s.q[:0]
	}
	s.q = append(s.q, outMsg{ws.OpClose, ws.NewCloseFrameBody(code, reason)})
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
	clear(s.q)
	s.q = s.q[:0]
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
			clear(s.q)
			s.q = s.q[:0]
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

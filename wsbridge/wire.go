package wsbridge

import (
	"errors"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// This file holds the frame layer shared by the server's connections and the
// Client: a message reader that assembles fragmented messages under a size
// limit and hands control frames to its owner, and a sender (sender.go) that
// serializes every write of a connection on one goroutine.

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

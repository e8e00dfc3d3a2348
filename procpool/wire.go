package procpool

import (
	"bufio"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
)

// The wire format, in both directions, is a sequence of frames:
//
//	uint32 big-endian: bit 31 = reset (the receiver starts a fresh gob.Decoder
//	                   before this frame), bits 0-30 = body length
//	body:              a binary header (varints, see below), then the gob
//	                   section: the messages one long-lived gob.Encoder wrote
//	                   for this frame (type definitions the first time, then
//	                   the value)
//
// Request header: kind byte (reqOne, reqChunk or reqRaw), id uvarint,
// deadline varint (Unix nanoseconds, 0 for none), count uvarint (items in a
// chunk), task name (uvarint length + bytes). The gob section is one In
// (reqOne) or one []In (reqChunk); after reqRaw the rest of the frame is
// one In in raw form (codec.go) instead.
//
// Reply header: kind byte. repHello: pid uvarint. repInitError: message.
// repResult: id uvarint, duration uvarint (nanoseconds spent in handlers),
// status byte; statusError: errKind byte, message, stack, and no gob
// section; statusOK and statusItems (count uvarint, then per failed item:
// index uvarint, errKind byte, message, stack): a gob section with Out or
// []Out; statusRaw: the rest of the frame is one Out in raw form.
//
// The reader checks the length against the frame limit before it reads the
// body, grows its buffer only as bytes arrive, and checks that the gob
// section is a whole number of gob messages inside the frame before gob sees
// it, so no length in the input makes it allocate more than the frame limit.

const (
	reqOne   = 1
	reqChunk = 2
	reqRaw   = 3 // one input, raw (see codec.go)

	repResult    = 1
	repHello     = 2
	repInitError = 3

	statusOK    = 0
	statusError = 1
	statusItems = 2
	statusRaw   = 3 // one output, raw (see codec.go)

	resetBit  = 1 << 31
	headerLen = 4

	// maxNameLen bounds a task name on the wire.
	maxNameLen = 1 << 10
	// minFrameLimit and maxFrameLimit bound MaxFrame.
	minFrameLimit = 1 << 10
	maxFrameLimit = 1<<31 - 1
)

// DefaultMaxFrame is the frame size limit, in bytes, used when MaxFrame is
// not given.
const DefaultMaxFrame = 64 << 20

// errKind says what kind of failure a reply carries.
type errKind uint8

const (
	kindNone errKind = iota
	kindHandler
	kindPanic
	kindUnknownTask
	kindDecode
	kindEncode
	kindFrameTooLarge
	kindMax
)

// errCorrupt marks a frame that does not follow the wire format.
var errCorrupt = errors.New("procpool: corrupt frame")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
}

// frameReader reads frames from r, refusing bodies longer than limit.
type frameReader struct {
	src   io.Reader // what r reads
	r     *bufio.Reader
	limit int
	buf   []byte
	hdr   [headerLen]byte
}

func newFrameReader(r io.Reader, limit int) *frameReader {
	return &frameReader{src: r, r: bufio.NewReaderSize(r, 64<<10), limit: limit}
}

// complete reports whether a whole frame is already buffered, so reading it
// will not block.
func (f *frameReader) complete() bool {
	if f.r.Buffered() < headerLen {
		return false
	}
	h, err := f.r.Peek(headerLen)
	if err != nil {
		return false
	}
	n := int(binary.BigEndian.Uint32(h) &^ resetBit)
	return f.r.Buffered() >= headerLen+n
}

// next reads one frame. It returns io.EOF at a clean end between frames,
// an error wrapping ErrFrameTooLarge for a length over the limit, and
// io.ErrUnexpectedEOF for a frame cut short. The body is valid until the
// next call.
func (f *frameReader) next() (body []byte, reset bool, err error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		return nil, false, err
	}
	v := binary.BigEndian.Uint32(f.hdr[:])
	reset = v&resetBit != 0
	n := int(v &^ resetBit)
	if n > f.limit {
		return nil, false, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrFrameTooLarge, n, f.limit)
	}
	if cap(f.buf) > 1<<20 && n <= 1<<20 {
		f.buf = nil // give back a buffer grown for one big frame
	}
	if n <= cap(f.buf) {
		f.buf = f.buf[:n]
		if _, err := io.ReadFull(f.r, f.buf); err != nil {
			return nil, false, unexpected(err)
		}
		return f.buf, reset, nil
	}
	// Grow with the bytes that actually arrive, never past n: a length that
	// lies costs no more memory than the data sent.
	b := f.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			c := min(n, max(2*cap(b), 64<<10))
			nb := make([]byte, len(b), c)
			copy(nb, b)
			b = nb
		}
		m, err := io.ReadFull(f.r, b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil {
			return nil, false, unexpected(err)
		}
	}
	f.buf = b
	return b, reset, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkGob verifies that b is a sequence of whole gob messages (each a
// length-prefixed count), so gob never reads, or allocates for, a message
// longer than the frame.
func checkGob(b []byte) error {
	if len(b) == 0 {
		return corrupt("empty gob section")
	}
	for len(b) > 0 {
		n, w, ok := gobUint(b)
		if !ok || n == 0 || n > uint64(len(b)-w) {
			return corrupt("gob message length")
		}
		b = b[w+int(n):]
	}
	return nil
}

// gobValueLen returns the length that the first value message of a gob
// section declares for a top-level slice, so a chunk's length can be
// checked before gob allocates for it.
func gobValueLen(b []byte) (uint64, bool) {
	for len(b) > 0 {
		n, w, ok := gobUint(b)
		if !ok || n > uint64(len(b)-w) {
			return 0, false
		}
		msg := b[w : w+int(n)]
		b = b[w+int(n):]
		id, k, ok := gobUint(msg)
		if !ok {
			return 0, false
		}
		if id&1 != 0 {
			continue // negative type id: a type definition
		}
		msg = msg[k:]
		delta, k, ok := gobUint(msg)
		if !ok || delta != 0 {
			return 0, false
		}
		l, _, ok := gobUint(msg[k:])
		return l, ok
	}
	return 0, false
}

// gobUint decodes one gob unsigned integer: a byte below 0x80 is the value;
// otherwise the byte is the negated count of big-endian bytes that follow.
func gobUint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	c := b[0]
	if c < 0x80 {
		return uint64(c), 1, true
	}
	k := -int(int8(c))
	if k > 8 || len(b) < 1+k {
		return 0, 0, false
	}
	for _, d := range b[1 : 1+k] {
		v = v<<8 | uint64(d)
	}
	return v, 1 + k, true
}

// parser reads the binary header of a frame body.
type parser struct {
	b   []byte
	err error
}

func (p *parser) byte() byte {
	if p.err != nil {
		return 0
	}
	if len(p.b) == 0 {
		p.err = corrupt("short header")
		return 0
	}
	c := p.b[0]
	p.b = p.b[1:]
	return c
}

func (p *parser) uvarint() uint64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Uvarint(p.b)
	if n <= 0 {
		p.err = corrupt("bad uvarint")
		return 0
	}
	p.b = p.b[n:]
	return v
}

func (p *parser) varint() int64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Varint(p.b)
	if n <= 0 {
		p.err = corrupt("bad varint")
		return 0
	}
	p.b = p.b[n:]
	return v
}

// bytes returns a length-prefixed byte string of at most max bytes, aliasing
// the frame.
func (p *parser) bytes(max int) []byte {
	n := p.uvarint()
	if p.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(p.b)) {
		p.err = corrupt("string length %d", n)
		return nil
	}
	s := p.b[:n:n]
	p.b = p.b[n:]
	return s
}

// count returns a uvarint that must not exceed max.
func (p *parser) count(max int) int {
	n := p.uvarint()
	if p.err == nil && n > uint64(max) {
		p.err = corrupt("count %d", n)
		return 0
	}
	return int(n)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// outBuf is the batch of frames waiting to be written; the gob encoder
// appends to it directly.
type outBuf struct{ b []byte }

func (o *outBuf) Write(p []byte) (int, error) {
	o.b = append(o.b, p...)
	return len(p), nil
}

// begin starts a frame and returns its offset for finish.
func (o *outBuf) begin() int {
	start := len(o.b)
	o.b = append(o.b, 0, 0, 0, 0)
	return start
}

// finish writes the length of the frame started at start. It returns false
// (and drops the frame) when the body exceeds limit.
func (o *outBuf) finish(start, limit int, reset bool) bool {
	n := len(o.b) - start - headerLen
	if n > limit {
		o.b = o.b[:start]
		return false
	}
	v := uint32(n)
	if reset {
		v |= resetBit
	}
	binary.BigEndian.PutUint32(o.b[start:], v)
	return true
}

// itemErr is one failed item of a chunk, or the failure of a whole request.
type itemErr struct {
	index int
	kind  errKind
	msg   string
	stack []byte
}

func appendItemErr(b []byte, e *itemErr) []byte {
	b = append(b, byte(e.kind))
	b = appendString(b, e.msg)
	return appendBytes(b, e.stack)
}

func (p *parser) itemErr(e *itemErr, limit int) {
	e.kind = errKind(p.byte())
	if p.err == nil && (e.kind == kindNone || e.kind >= kindMax) {
		p.err = corrupt("error kind %d", e.kind)
	}
	e.msg = string(p.bytes(limit))
	if s := p.bytes(limit); len(s) > 0 {
		e.stack = append([]byte(nil), s...)
	}
}

// requestWriter encodes request frames into a batch with one long-lived
// gob.Encoder.
type requestWriter struct {
	ob        outBuf
	enc       *gob.Encoder
	resetNext bool
	seq       uint64
	limit     int
}

func (w *requestWriter) init(limit int) {
	w.limit = limit
	w.enc = gob.NewEncoder(&w.ob)
}

// encode appends r's frame and gives r its id. If the input cannot be
// encoded or the frame is over the limit, nothing is appended.
func (w *requestWriter) encode(r *request) error {
	st := w.ob.begin()
	kind := byte(reqOne)
	switch {
	case r.chunk:
		kind = reqChunk
	case r.task.inRaw:
		kind = reqRaw
	}
	w.seq++
	r.id = w.seq
	w.ob.b = append(w.ob.b, kind)
	w.ob.b = binary.AppendUvarint(w.ob.b, r.id)
	w.ob.b = binary.AppendVarint(w.ob.b, r.deadline)
	if r.chunk {
		w.ob.b = binary.AppendUvarint(w.ob.b, uint64(r.n))
	}
	w.ob.b = appendString(w.ob.b, r.task.name)
	if kind == reqRaw {
		if err := r.sink.encode(r, rawEncoder{&w.ob}); err != nil || !w.ob.finish(st, w.limit, false) {
			w.ob.b = w.ob.b[:st] // gob's state is untouched
			if err != nil {
				return fmt.Errorf("%w input of task %s: %w", ErrEncode, r.task.name, err)
			}
			return fmt.Errorf("%w: input of task %s over %d bytes", ErrFrameTooLarge, r.task.name, w.limit)
		}
		return nil
	}
	err := r.sink.encode(r, w.enc)
	if err == nil {
		if w.ob.finish(st, w.limit, w.resetNext) {
			w.resetNext = false
			return nil
		}
		err = fmt.Errorf("%w: input of task %s over %d bytes", ErrFrameTooLarge, r.task.name, w.limit)
	} else {
		err = fmt.Errorf("%w input of task %s: %w", ErrEncode, r.task.name, err)
	}
	// gob may have recorded types as sent in the dropped frame: start a
	// fresh encoder and tell the worker to start a fresh decoder.
	w.ob.b = w.ob.b[:st]
	w.enc = gob.NewEncoder(&w.ob)
	w.resetNext = true
	return err
}

package procpool

import (
	"encoding/binary"
	"fmt"
	"os"
)

// The journal keeps a worker's unwritten replies where its parent can read
// them after the worker dies.
//
// A worker batches its replies: while more requests are buffered, it runs
// the next one before writing the replies it has made, which saves a
// system call per task in a stream of tiny tasks. Were those replies kept
// in the worker's own memory, a worker that dies in the next task would
// take them with it, and requests that completed would fail as if they
// had crashed. So the batch lives in a file the parent created and passed
// as descriptor 5 (a memfd on Linux, an unlinked temporary file elsewhere),
// which the worker maps: after each reply, before it runs the next task,
// the worker stores the batch's length in the journal's header (a plain
// store, no system call); after writing the batch to its pipe, it resets
// the length to 0. After a death, the parent reads the header and the
// batch and settles the replies it did not get through the pipe (see
// proc.replay), skipping those it did, by request ID.
//
// Layout: a header of journalHeader bytes, whose first 8 bytes are the
// committed length (little-endian) and whose second cache line holds the
// rings' handshake (see ring), then the batch: frames as written to the
// pipe. A reply that does not fit in the journal is written to the
// pipe before the next task runs.
const (
	journalSize   = 1 << 20
	journalHeader = 128
)

// useJournal makes mem (journalSize bytes, shared with the parent) the
// home of the reply batch; the batch must be empty.
func (s *server) useJournal(mem []byte) {
	s.jmem = mem
	s.ob.b = mem[journalHeader:journalHeader:len(mem)]
}

// inJournal reports whether the batch is in the journal (a reply too
// large for it moved the batch to the heap).
func (s *server) inJournal() bool {
	if s.jmem == nil || cap(s.ob.b) != len(s.jmem)-journalHeader {
		return false
	}
	return &s.ob.b[:1][0] == &s.jmem[journalHeader]
}

// commit makes the replies made so far survive the worker: it records the
// batch's length in the journal, or, without a journal or for a batch that
// outgrew it, writes the batch to the pipe. serve calls it after each
// task, before the next one runs.
func (s *server) commit() error {
	if s.inJournal() {
		binary.LittleEndian.PutUint64(s.jmem, uint64(len(s.ob.b)))
		return nil
	}
	return s.flush()
}

// flush writes the batch to the pipe and empties it.
func (s *server) flush() error {
	if len(s.ob.b) == 0 {
		return nil
	}
	_, err := s.w.Write(s.ob.b)
	if err == nil && s.rw != nil {
		s.held, err = s.rw.notify(s.unsent)
	}
	s.unsent = 0
	switch {
	case s.jmem != nil:
		// Written: the journal holds nothing the parent will not read.
		binary.LittleEndian.PutUint64(s.jmem, 0)
		s.ob.b = s.jmem[journalHeader:journalHeader:len(s.jmem)]
	case cap(s.ob.b) > 4<<20:
		s.ob.b = nil
	default:
		s.ob.b = s.ob.b[:0]
	}
	return err
}

// readJournal returns the batch a dead worker left in its journal f (nil
// if none, or if the header is out of bounds).
func readJournal(f *os.File) []byte {
	if f == nil {
		return nil
	}
	var hdr [8]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil
	}
	n := binary.LittleEndian.Uint64(hdr[:])
	if n == 0 || n > journalSize-journalHeader {
		return nil
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, journalHeader); err != nil {
		return nil
	}
	return b
}

// splitFrame splits the first frame off b: its body (aliasing b), its
// reset bit and the bytes after it. A frame cut short or over limit is an
// error.
func splitFrame(b []byte, limit int) (body []byte, reset bool, rest []byte, err error) {
	if len(b) < headerLen {
		return nil, false, nil, corrupt("short frame header")
	}
	v := binary.BigEndian.Uint32(b)
	n := int(v &^ resetBit)
	if n > limit {
		return nil, false, nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrFrameTooLarge, n, limit)
	}
	if n > len(b)-headerLen {
		return nil, false, nil, corrupt("frame of %d bytes, %d left", n, len(b)-headerLen)
	}
	return b[headerLen : headerLen+n], v&resetBit != 0, b[headerLen+n:], nil
}

package procpool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// Shared memory: a large input handed to a worker without copying it
// through the request pipe (Python's multiprocessing.shared_memory).
//
// The parent owns a Shared and lends it, read-only, for the duration of a
// function (Lend); the SharedRef that function receives is a gob-encodable
// handle to put in task inputs. What crosses the pipe is the handle (a few
// dozen bytes); the worker maps the memory while it decodes the request and
// unmaps it after the task (releaseViews, called by serve after each
// request). The platform files hold the rest: shm_linux.go (a memfd the
// worker opens through /proc/<parent>/fd; the reasons are there) and
// shm_other.go (the bytes themselves, copied through the pipe).
//
// Why read-only: procpool lets a call return while a worker still runs its
// task (a Map that failed leaves the other inputs in flight to finish and be
// discarded; a cancelled call's worker is killed asynchronously). A worker
// that could write would then write into memory its owner already got
// back. Read-only views keep the owner's bytes the owner's: a late worker
// can only read, and its result is discarded. Results come back in the
// task's output, as usual.

var (
	// ErrSharedClosed is returned by the methods of a Shared after Close.
	// A call whose input holds a SharedRef of a closed Shared fails with
	// ErrEncode that also matches this one (errors.Is).
	ErrSharedClosed = errors.New("procpool: shared buffer closed")

	// ErrSharedLent is returned by Shared.Bytes while a Lend of the buffer
	// is running: the buffer belongs to the calls it was lent to.
	ErrSharedLent = errors.New("procpool: shared buffer is lent")

	// ErrNotLent is returned when a SharedRef is used outside its loan: by
	// SharedRef.Bytes in the parent, in a worker after its task ended, or
	// for the zero SharedRef. A call made with a SharedRef after its Lend
	// returned fails with ErrEncode that also matches this one (errors.Is).
	ErrNotLent = errors.New("procpool: shared buffer not lent")
)

// MaxSharedSize is the largest Shared NewShared creates: 1 TiB, beyond
// which a size is more likely a bug than a buffer.
const MaxSharedSize = 1 << 40

// Shared is a byte buffer that the parent lends to worker processes
// without copying it through the pipes: memory mapped in both processes on
// Linux, a copy sent with the request elsewhere (see NewShared). The
// parent owns it: it writes the buffer through Bytes, lends it with Lend,
// and frees it with Close. Its methods are safe for concurrent use.
//
// The ownership rules, enforced by the methods: Bytes fails with
// ErrSharedLent while a Lend runs, so the parent cannot change what a
// worker reads; workers get a read-only view valid during their task only;
// after Close, Bytes and Lend fail with ErrSharedClosed and calls that
// would send it fail with ErrEncode. What the methods cannot check is a
// slice kept beyond its time: the slice from Bytes must not be used during
// a Lend nor after Close (after Close its memory is unmapped and an access
// crashes the program), and a worker must not keep SharedRef.Bytes past
// its task.
type Shared struct {
	mu     sync.Mutex
	mem    []byte // the parent's mapping (Linux) or a heap buffer
	size   int
	lends  int // Lend calls running
	closed bool
	plat   sharedPlat // the platform's resources (shm_linux.go, shm_other.go)
}

// NewShared returns a zeroed Shared of size bytes (1 to MaxSharedSize).
// On Linux it is a memfd of that size, sealed against resizing, mapped in
// the parent; it costs a descriptor and one mapping until Close, and
// memory as its pages are written. Elsewhere it is a heap buffer, and each
// call that sends a SharedRef copies the whole buffer into its request, as
// a []byte field would (mind WithMaxFrame). Call Close when done: an
// unreachable Shared is not freed, so that no stray slice from Bytes can
// outlive its memory.
func NewShared(size int) (*Shared, error) {
	if size < 1 || uint64(size) > MaxSharedSize {
		return nil, fmt.Errorf("procpool: NewShared(%d): want 1 to %d bytes", size, MaxSharedSize)
	}
	s := &Shared{size: size}
	mem, err := s.plat.create(size)
	if err != nil {
		return nil, fmt.Errorf("procpool: NewShared(%d): %w", size, err)
	}
	s.mem = mem
	return s, nil
}

// Len returns the size of the buffer in bytes, also after Close.
func (s *Shared) Len() int { return s.size }

// Bytes returns the buffer, for the parent to fill or read. It fails with
// ErrSharedLent while a Lend of s runs and with ErrSharedClosed after
// Close. The slice is valid until Close, and must not be written while s is
// lent (get it again after Lend returns). It does not block.
func (s *Shared) Bytes() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, ErrSharedClosed
	case s.lends > 0:
		return nil, ErrSharedLent
	}
	return s.mem, nil
}

// Lend lends s to the calls fn makes and returns fn's error: fn receives
// ref, a handle to put in task inputs (a SharedRef field), which calls made
// while fn runs send to their workers, read-only. While fn runs, Bytes
// fails with ErrSharedLent; Lends may nest or run concurrently (readers
// share). When fn returns, so does the loan: a call made later with ref
// fails with ErrEncode and ErrNotLent (errors.Is matches both). A task of the
// loan that runs on after fn returned (an abandoned input of a failed Map,
// a cancelled call whose worker is being killed) only reads, and its
// result is discarded. Lend itself does not block and costs no system
// call; it fails with ErrSharedClosed after Close. A panic in fn ends the
// loan and propagates.
func (s *Shared) Lend(fn func(ref SharedRef) error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSharedClosed
	}
	s.lends++
	s.mu.Unlock()
	l := &loan{s: s}
	defer func() {
		l.done.Store(true)
		s.mu.Lock()
		s.lends--
		s.mu.Unlock()
	}()
	return fn(SharedRef{loan: l})
}

// Close unmaps the buffer and releases its memory and descriptor. Workers
// still mapping it (a task of an abandoned call) keep their own mapping
// until their task ends, so Close during a Lend is safe, though calls of
// that Lend then fail with ErrSharedClosed. It is idempotent: later calls
// return nil.
func (s *Shared) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.mem = nil
	if err := s.plat.release(); err != nil {
		return fmt.Errorf("procpool: Shared.Close: %w", err)
	}
	return nil
}

// loan is one Lend of a Shared.
type loan struct {
	s    *Shared
	done atomic.Bool
}

// SharedRef is a handle to a Shared lent by Shared.Lend, to carry in a
// task's input (a field of type SharedRef). gob encodes it as a few dozen
// bytes on Linux (the whole buffer elsewhere, see NewShared). In the
// worker, Bytes returns the buffer, read-only, during the task. The zero
// SharedRef refers to nothing: it crosses as the zero value and its Bytes
// fails with ErrNotLent.
type SharedRef struct {
	loan *loan // in the parent
	view *view // in a worker
}

// Len returns the size of the referenced buffer in bytes, 0 for the zero
// SharedRef.
func (r SharedRef) Len() int {
	switch {
	case r.view != nil:
		return r.view.size
	case r.loan != nil:
		return r.loan.s.size
	}
	return 0
}

// Bytes returns the worker's view of the lent buffer: read-only (on Linux
// a write faults and crashes the worker, elsewhere it is a private copy
// whose changes the parent never sees), valid until the task returns,
// when it is unmapped; do not keep it, or anything that aliases it,
// beyond. It fails with ErrNotLent after the task, in the parent (use
// Shared.Bytes there), and for the zero SharedRef.
func (r SharedRef) Bytes() ([]byte, error) {
	if r.view == nil || r.view.released.Load() {
		return nil, ErrNotLent
	}
	return r.view.mem, nil
}

// Handle encodings, the first byte of GobEncode's output.
const (
	refNone   = 0 // the zero SharedRef
	refInline = 1 // uvarint length, the bytes
	refMemfd  = 2 // uvarints: parent pid, fd, dev, ino, size
)

// GobEncode encodes the handle, in the parent, for a call made during its
// Lend. It fails with ErrNotLent after the Lend, ErrSharedClosed after
// Close, and for a SharedRef a worker received (a worker cannot lend).
func (r SharedRef) GobEncode() ([]byte, error) {
	if r.loan == nil && r.view == nil {
		return []byte{refNone}, nil
	}
	if r.loan == nil {
		return nil, fmt.Errorf("%w: only the process that lent a buffer can send its SharedRef", ErrNotLent)
	}
	if r.loan.done.Load() {
		return nil, fmt.Errorf("%w: SharedRef used after its Lend returned", ErrNotLent)
	}
	s := r.loan.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSharedClosed
	}
	if b, ok := s.plat.handle(s.size); ok {
		return b, nil
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(s.mem))
	b = append(b, refInline)
	b = binary.AppendUvarint(b, uint64(len(s.mem)))
	return append(b, s.mem...), nil
}

// GobDecode decodes the handle in a worker and maps the buffer (or keeps
// the copy), until the end of the task; it is meant for procpool's
// workers, which release what it maps after each request. It fails when the handle is
// corrupt, does not come from this worker's parent, or the buffer can no
// longer be opened (closed, or refused by the system: see shm_linux.go).
func (r *SharedRef) GobDecode(b []byte) error {
	if len(b) == 0 {
		return errors.New("procpool: empty SharedRef")
	}
	p := parser{b: b[1:]}
	var v *view
	switch b[0] {
	case refNone:
		if len(b) != 1 {
			return errors.New("procpool: corrupt SharedRef")
		}
		r.loan, r.view = nil, nil
		return nil
	case refInline:
		n := p.uvarint()
		if p.err != nil || n != uint64(len(p.b)) {
			return errors.New("procpool: corrupt SharedRef")
		}
		v = &view{mem: append([]byte(nil), p.b...), size: int(n)}
	case refMemfd:
		var h memfdHandle
		h.pid, h.fd, h.dev, h.ino, h.size = p.uvarint(), p.uvarint(), p.uvarint(), p.uvarint(), p.uvarint()
		if p.err != nil || len(p.b) != 0 || h.size == 0 || h.size > min(MaxSharedSize, math.MaxInt) {
			return errors.New("procpool: corrupt SharedRef")
		}
		if v = reuseView(&h); v != nil {
			r.loan, r.view = nil, v
			return nil
		}
		mem, err := mapHandle(&h)
		if err != nil {
			return fmt.Errorf("procpool: map shared buffer: %w", err)
		}
		v = &view{mem: mem, mapped: true, size: int(h.size), dev: h.dev, ino: h.ino}
	default:
		return fmt.Errorf("procpool: SharedRef encoding %d unknown", b[0])
	}
	views.mu.Lock()
	views.list = append(views.list, v)
	views.mu.Unlock()
	r.loan, r.view = nil, v
	return nil
}

// memfdHandle names a parent's memfd for mapHandle.
type memfdHandle struct {
	pid, fd, dev, ino, size uint64
}

// view is a worker's mapping (or copy) of a lent buffer.
type view struct {
	mem      []byte
	size     int
	mapped   bool
	dev, ino uint64 // the memfd's identity, when mapped
	released atomic.Bool
}

// reuseView returns the view of h's buffer that the current request
// already mapped (the inputs of a chunk often share one buffer), or nil.
func reuseView(h *memfdHandle) *view {
	views.mu.Lock()
	defer views.mu.Unlock()
	for _, v := range views.list {
		if v.mapped && v.dev == h.dev && v.ino == h.ino && uint64(v.size) == h.size {
			return v
		}
	}
	return nil
}

// views are the buffers the current request mapped.
var views struct {
	mu   sync.Mutex
	list []*view
}

// releaseViews unmaps the buffers the request just served mapped; serve
// calls it after each request. In the parent, which decodes no SharedRef,
// it does nothing.
func releaseViews() {
	views.mu.Lock()
	list := views.list
	views.list = nil
	views.mu.Unlock()
	for _, v := range list {
		v.released.Store(true)
		if v.mapped {
			unmapView(v.mem)
		}
	}
}

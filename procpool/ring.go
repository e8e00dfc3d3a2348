package procpool

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Rings: where the parent can map a worker's journal file (Linux), the
// frames travel through two byte rings in that file, shared memory, instead
// of through the pipes: one for requests, one for replies. The frames, the
// journal and the order of everything are unchanged; only the copy into
// the kernel and out again is gone, and with it the system calls, which
// cost microseconds each on a virtual machine.
//
// Each ring is a single-producer, single-consumer byte stream: the producer
// copies bytes in and then publishes its tail index, the consumer copies
// them out and publishes its head index. A consumer that finds its ring
// empty spins a little (see spinner), then raises its sleep flag, checks
// the ring once more, and sleeps in read(2) on the pipe, which now carries
// only wake-up tokens: a producer that publishes bytes and finds the flag
// raised lowers it and writes one byte to the pipe. The parent's flag says
// more: how many replies it waits for. It asks for all but the last request
// the worker holds, so that it sends the next ones while the worker runs
// that one; the worker counts its replies off the flag and wakes the parent
// when they are all made, when it finds its request ring empty (it would
// wait), when the reply ring is full, or when a reply it made has waited
// holdMax unheard of (a task that runs longer than its estimate). A steady
// stream of tasks then wakes the parent once per window instead of once
// per reply, which on a machine whose every CPU runs a worker is one
// preemption of a worker per window. A producer that finds
// the ring full waits with short sleeps for the consumer to make room (the
// window and the worker's batching keep that rare). The pipes keep their
// other roles: their end tells each side that the other is gone (a worker
// drains its ring, then exits; the parent drains the reply ring, then
// settles the crash as before), and a read deadline on the reply pipe
// interrupts a caller reading its own reply.
//
// The worker turns the rings on: it finds the parent's magic in the
// journal's header, maps the rings, and stores its acknowledgement there
// before it sends hello through the pipe; the parent uses the rings only
// if it finds the acknowledgement after hello. A worker cannot harm the
// parent through a ring: the parent keeps its own copies of the indexes
// it owns and bounds every copy by the ring, so a scribbled header yields,
// at worst, frames the protocol rejects.
const (
	ringOn    = 64 // the parent stores ringMagic here before the worker starts
	ringAck   = 72 // the worker stores ringMagic here when it uses the rings
	ringMagic = 0x676e6972_6c6f6f70

	ringHdr   = 4096      // head, tail and sleep flag, a cache line each
	ringData  = 256 << 10 // a power of two
	ringSize  = ringHdr + ringData
	shmSize   = journalSize + 2*ringSize // the journal file with its rings
	ringHead  = 0
	ringTail  = 64
	ringSleep = 128

	// workerSpin is how long a worker whose request ring is empty watches
	// it before it sleeps.
	workerSpin = 50 * time.Microsecond
	// parentSpin is how long the parent watches the reply ring before it
	// sleeps, when the oldest request in flight is expected to take at most
	// spinTaskMax of handler time (see proc.expectSoon).
	parentSpin  = 50 * time.Microsecond
	spinTaskMax = 20_000 // ns

	// holdMax is how long a reply the worker made may wait before a
	// sleeping parent that counts on more replies hears of it.
	holdMax = 500 * time.Microsecond
)

// ring is one ring in shared memory.
type ring struct {
	head, tail, sleep *atomic.Uint64
	data              []byte
}

func u64At(mem []byte, off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

// ringAt returns the ring in mem, ringSize bytes.
func ringAt(mem []byte) *ring {
	return &ring{head: u64At(mem, ringHead), tail: u64At(mem, ringTail), sleep: u64At(mem, ringSleep),
		data: mem[ringHdr:ringSize:ringSize]}
}

// rings returns the request and reply rings of shm, a mapped journal file
// of shmSize bytes.
func rings(shm []byte) (req, rep *ring) {
	return ringAt(shm[journalSize : journalSize+ringSize]), ringAt(shm[journalSize+ringSize : shmSize])
}

// ringWriter is the producer's end of a ring.
type ringWriter struct {
	r    *ring
	tail uint64       // the producer's own copy
	wake func() error // writes a token to the consumer's pipe
	dead func() error // non-nil once the consumer is gone (while waiting for room)
	lazy bool         // wake the consumer only through notify and kick (the reply ring)
}

// writeNow copies as much of p as the ring takes without waiting.
func (w *ringWriter) writeNow(p []byte) (int, error) {
	size := uint64(len(w.r.data))
	used := w.tail - w.r.head.Load()
	if used > size {
		used = size // a scribbled head: take nothing
	}
	n := min(uint64(len(p)), size-used)
	if n == 0 {
		return 0, nil
	}
	off := w.tail & (size - 1)
	c := copy(w.r.data[off:], p[:n])
	copy(w.r.data, p[c:n])
	w.tail += n
	w.r.tail.Store(w.tail)
	if w.lazy {
		return int(n), nil
	}
	return int(n), w.kick()
}

// kick wakes the consumer if it sleeps, whatever it waits for.
func (w *ringWriter) kick() error {
	for {
		v := w.r.sleep.Load()
		if v == 0 {
			return nil
		}
		if w.r.sleep.CompareAndSwap(v, 0) {
			return w.wake()
		}
	}
}

// notify tells a sleeping consumer that m more frames were published: it
// wakes it once the frames it waits for (its sleep word) have come, and
// otherwise counts them off. It reports whether the consumer still sleeps
// with frames published that it has not heard of.
func (w *ringWriter) notify(m uint64) (held bool, err error) {
	for {
		v := w.r.sleep.Load()
		if v == 0 {
			return false, nil
		}
		if m >= v {
			if w.r.sleep.CompareAndSwap(v, 0) {
				return false, w.wake()
			}
			continue
		}
		if w.r.sleep.CompareAndSwap(v, v-m) {
			return m > 0, nil
		}
	}
}

// Write copies all of p, waiting for room with short sleeps.
func (w *ringWriter) Write(p []byte) (int, error) {
	done := 0
	pause := 20 * time.Microsecond
	for {
		n, err := w.writeNow(p[done:])
		done += n
		if err != nil || done == len(p) {
			return done, err
		}
		if n > 0 {
			pause = 20 * time.Microsecond
			continue
		}
		if err := w.dead(); err != nil {
			return done, err
		}
		if err := w.kick(); err != nil {
			return done, err
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}

// ringReader is the consumer's end of a ring.
type ringReader struct {
	r     *ring
	head  uint64 // the consumer's own copy
	spin  spinner
	limit func() time.Duration // how long to spin now
	want  func() uint64        // frames to wait for before a wake-up (nil: one)
	idle  func()               // called when the ring is found empty (nil: nothing)
	tok   io.Reader            // the pipe: wake-up tokens, then its end
	cut   *atomic.Bool         // if set and true, Read fails at once (a read deadline)
	eof   error                // the pipe's end or error, returned once the ring is empty
	tbuf  [64]byte
}

func (r *ringReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if r.cut != nil && r.cut.Load() {
			return 0, &os.PathError{Op: "read", Path: "procpool-ring", Err: os.ErrDeadlineExceeded}
		}
		if n := r.get(p); n > 0 {
			return n, nil
		}
		if r.eof != nil {
			return 0, r.eof
		}
		if r.idle != nil {
			r.idle()
		}
		if r.spin.wait(r.r.tail, r.head, r.limit()) {
			continue
		}
		want := uint64(1)
		if r.want != nil {
			want = max(1, r.want())
		}
		r.r.sleep.Store(want)
		if r.r.tail.Load() != r.head {
			r.r.sleep.Store(0)
			continue
		}
		_, err := r.tok.Read(r.tbuf[:])
		r.r.sleep.Store(0) // a token the producer wrote earlier may have woken it
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, err
			}
			r.eof = err // drain what the producer left first
		}
	}
}

// get copies what the ring holds, up to len(p).
func (r *ringReader) get(p []byte) int {
	size := uint64(len(r.r.data))
	n := min(uint64(len(p)), r.r.tail.Load()-r.head, size)
	if n == 0 {
		return 0
	}
	off := r.head & (size - 1)
	c := copy(p[:n], r.r.data[off:])
	copy(p[c:n], r.r.data)
	r.head += n
	r.r.head.Store(r.head)
	return int(n)
}

// ringsOn reports whether the worker acknowledged the rings in shm.
func ringsOn(shm []byte) bool {
	return len(shm) >= shmSize && u64At(shm, ringAck).Load() == ringMagic
}

// offerRings stores the parent's magic in shm, before the worker starts.
func offerRings(shm []byte) { u64At(shm, ringOn).Store(ringMagic) }

// acceptRings is the worker's side: if the parent offered the rings in
// shm, it acknowledges them and returns them.
func acceptRings(shm []byte) (req, rep *ring) {
	if len(shm) < shmSize || u64At(shm, ringOn).Load() != ringMagic {
		return nil, nil
	}
	u64At(shm, ringAck).Store(ringMagic)
	return rings(shm)
}

var errGone = &os.PathError{Op: "write", Path: "procpool-ring", Err: syscall.EPIPE}

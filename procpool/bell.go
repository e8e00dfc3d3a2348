package procpool

import (
	"io"
	"sync/atomic"
	"time"
	"unsafe"
)

// Doorbells: how each side of a worker's pipes learns that bytes wait in
// the pipe without sleeping in the kernel.
//
// Writing to a pipe whose reader sleeps in read(2) or epoll_wait(2) costs
// the writer a wake-up of that thread (several microseconds on a virtual
// machine, where waking another CPU traps to the hypervisor), and the
// reader as much again to be scheduled; on a stream of short tasks that is
// most of a round trip. So where the parent can map the worker's journal
// (Linux), the journal's header also carries two counters: the bytes the
// parent has written to the request pipe (bellReq) and the bytes the worker
// has written to the reply pipe (bellRep), each stored after its write(2)
// returns. A side about to wait for bytes it expects soon first spins a
// few tens of microseconds on the other's counter, reading its own count
// of bytes read; when the counter passes it, the bytes are in the pipe and
// the read returns at once, and the writer woke nobody.
//
// The counters are hints only: every byte still goes through the pipes,
// whose end (EOF) and errors keep their meaning, and a wrong or stale
// counter (a worker that scribbles on its journal) costs at most one spin
// before the usual blocking read.
const (
	bellOn    = 64  // the parent stores bellMagic here before the worker starts
	bellReq   = 128 // uint64: bytes the parent has written to the request pipe
	bellRep   = 192 // uint64: bytes the worker has written to the reply pipe
	bellMagic = 0x6c6c6562_6c6f6f70

	// workerSpin is how long a worker that has answered everything it
	// holds watches for the next request before it sleeps in read(2).
	workerSpin = 50 * time.Microsecond
	// parentSpin is how long the parent watches for a reply before it
	// sleeps in the netpoller, when the oldest request in flight is
	// expected to take at most spinTaskMax of handler time.
	parentSpin  = 50 * time.Microsecond
	spinTaskMax = 20_000 // ns
)

// bell is the pair of counters in a journal's header.
type bell struct {
	req, rep *atomic.Uint64
}

// bellAt returns the counters in mem, a mapped journal, or nil if the
// parent did not turn them on (or mem is not a whole journal).
func bellAt(mem []byte) *bell {
	if len(mem) < journalHeader {
		return nil
	}
	on := (*atomic.Uint64)(unsafe.Pointer(&mem[bellOn]))
	if on.Load() != bellMagic {
		return nil
	}
	return &bell{
		req: (*atomic.Uint64)(unsafe.Pointer(&mem[bellReq])),
		rep: (*atomic.Uint64)(unsafe.Pointer(&mem[bellRep])),
	}
}

// ringBell turns the counters of mem, a mapped journal the worker has not
// seen yet, on.
func ringBell(mem []byte) *bell {
	(*atomic.Uint64)(unsafe.Pointer(&mem[bellOn])).Store(bellMagic)
	return bellAt(mem)
}

// spinner spins on a doorbell, learning how long spinning pays: a spin
// that sees the bytes arrive lets the next one spin twice as long, up to
// the limit; one that gives up halves the next, down to nothing, after
// which every 64th wait probes with a short spin. After a short busy
// phase it spins politely, yielding its CPU at every turn (see yield), so
// that on a machine with more runnable threads than CPUs the spin costs
// the others little. A spinner belongs to one goroutine at a time.
type spinner struct {
	budget time.Duration
	skips  int
}

const (
	spinBusy  = 2 * time.Microsecond // before the first yield
	spinProbe = 4 * time.Microsecond
	spinLost  = 20 * time.Microsecond // off the CPU that long: it is contended
)

// wait spins until c passes n, for at most the current budget (limit
// when new), and reports whether it did.
func (s *spinner) wait(c *atomic.Uint64, n uint64, limit time.Duration) bool {
	if limit <= 0 {
		return false
	}
	d := s.budget
	if d == 0 {
		if s.skips++; s.skips < 64 {
			return false
		}
		s.skips, d = 0, spinProbe
	}
	ok, lost := spinPast(c, n, d)
	switch {
	case ok:
		s.budget = min(limit, max(2*d, spinProbe))
	case lost:
		s.budget = 0
	default:
		if s.budget = d / 2; s.budget < spinProbe {
			s.budget = 0
		}
	}
	return ok
}

// init sets the budget to limit, for a spinner that has not spun yet.
func (s *spinner) init(limit time.Duration) { s.budget = limit }

// spinPast spins until c passes n, for at most d, and reports whether it
// did. It gives up early when it finds it lost its CPU for a while (a
// yield or a preemption that lasted past spinLost): the machine has more
// runnable threads than CPUs, the other side may not run either, and a
// sleeper woken by the pipe gets its CPU back sooner than a spinner.
func spinPast(c *atomic.Uint64, n uint64, d time.Duration) (ok, lost bool) {
	start := time.Now()
	last := time.Duration(0)
	for i := 0; ; i++ {
		if c.Load() > n {
			return true, false
		}
		if i&15 == 15 {
			t := time.Since(start)
			if t-last > spinLost {
				return false, true
			}
			if t > d {
				return false, false
			}
			last = t
			if t > spinBusy {
				yield()
			}
		}
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n uint64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(max(n, 0))
	return n, err
}

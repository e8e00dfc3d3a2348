package procpool

import (
	"sync/atomic"
	"time"
)

// spinner spins on a ring's index (see ring), learning how long spinning
// pays: a spin that sees the bytes arrive lets the next one spin twice as
// long, up to the limit; one that gives up halves the next, down to
// nothing, after which every 64th wait probes with a short spin. After a
// short busy phase it spins politely, yielding its CPU at every turn, and
// it stops spinning for a while when it finds it lost its CPU (see
// spinPast). A spinner belongs to one goroutine at a time.
type spinner struct {
	budget time.Duration
	skips  int
}

const (
	spinBusy  = 2 * time.Microsecond // before the first yield
	spinProbe = 4 * time.Microsecond // the shortest spin
	// spinLost: off the CPU that long, it is contended. A contended CPU
	// takes a scheduler slice away, a millisecond or more; interrupts and
	// a virtual machine's host take tens of microseconds now and then
	// with nothing else of ours waiting, and a spinner that gave up on
	// those fell back to sleeping for 64 waits (BenchmarkCall on a quiet
	// 2-core VM: 5.0-7.3 us with a 20 us threshold, 2.0-2.8 us with this).
	spinLost = 200 * time.Microsecond
)

// wait spins until c passes n, for at most the current budget (limit when
// new), and reports whether it did.
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

// spinPast spins until c passes n, for at most d, and reports whether it
// did. It gives up early (lost) when it finds it was off its CPU for more
// than spinLost: the machine has more runnable threads than CPUs, the
// other side may not be running either, and a sleeper woken by a pipe gets
// a CPU back sooner than a spinner that keeps yielding.
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

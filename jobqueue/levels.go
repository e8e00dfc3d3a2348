package jobqueue

import "math/bits"

// fifo is a growable ring buffer of records: O(1) push and pop, no
// allocation once it has grown to the queue's working depth.
type fifo struct {
	buf  []*record // len is zero or a power of two
	head int
	n    int
}

func (f *fifo) push(r *record) {
	if f.n == len(f.buf) {
		f.grow()
	}
	f.buf[(f.head+f.n)&(len(f.buf)-1)] = r
	f.n++
}

func (f *fifo) grow() {
	size := 2 * len(f.buf)
	if size == 0 {
		size = 16
	}
	nb := make([]*record, size)
	for i := 0; i < f.n; i++ {
		nb[i] = f.buf[(f.head+i)&(len(f.buf)-1)]
	}
	f.buf, f.head = nb, 0
}

func (f *fifo) peek() *record { return f.buf[f.head] }

func (f *fifo) pop() *record {
	r := f.buf[f.head]
	f.buf[f.head] = nil
	f.head = (f.head + 1) & (len(f.buf) - 1)
	f.n--
	return r
}

// compact shrinks the buffer when it is mostly empty and, with dropRemoved,
// drops the records removed while queued (canceled while pending).
func (f *fifo) compact(dropRemoved bool) {
	size := len(f.buf)
	for size > 16 && size/4 >= f.n {
		size /= 2
	}
	nb := make([]*record, size)
	k := 0
	for i := 0; i < f.n; i++ {
		r := f.buf[(f.head+i)&(len(f.buf)-1)]
		if !dropRemoved || !r.removed {
			nb[k] = r
			k++
		}
	}
	f.buf, f.head, f.n = nb, 0, k
}

// levels is the ready queue: one FIFO per priority level and a bitmap of the
// non-empty ones, so taking the highest job is a bit scan plus a ring pop.
// Records removed while queued (canceled) stay in their ring as tombstones
// until popped or compacted; live counts them out.
type levels struct {
	q     [NumPriorities]fifo
	live  [NumPriorities]int
	dead  [NumPriorities]int
	nonEm uint16 // bit p set when q[p] holds any record, tombstones included
}

func (l *levels) push(r *record) {
	p := r.job.Priority
	l.q[p].push(r)
	l.live[p]++
	l.nonEm |= 1 << p
}

// remove marks a queued record as removed; the ring is compacted once
// tombstones are the majority, which keeps memory bounded by live jobs.
func (l *levels) remove(r *record) {
	p := r.job.Priority
	r.removed = true
	l.live[p]--
	l.dead[p]++
	if l.dead[p] > 32 && l.dead[p] > l.live[p] {
		l.q[p].compact(true)
		l.dead[p] = 0
		if l.q[p].n == 0 {
			l.nonEm &^= 1 << p
		}
	}
}

// clean pops tombstones at the head of level p and reports whether the level
// still holds a live record.
func (l *levels) clean(p int) bool {
	f := &l.q[p]
	for f.n > 0 && f.peek().removed {
		f.pop()
		l.dead[p]--
	}
	if f.n == 0 {
		l.nonEm &^= 1 << p
		return false
	}
	return true
}

// pop returns the next record by strict priority, FIFO within a level, or
// nil if none is queued.
func (l *levels) pop() *record {
	for l.nonEm != 0 {
		p := bits.Len16(l.nonEm) - 1
		if !l.clean(p) {
			continue
		}
		return l.take(p)
	}
	return nil
}

// popAged returns the next record when aging is on: the head of each level
// (its oldest record) is ranked at its level plus one per interval waited,
// capped at MaxPriority; the highest rank wins, the longer wait on a tie.
// now and interval are in nanoseconds on the readyAt clock.
func (l *levels) popAged(now, interval int64) *record {
	best, bestRank := -1, -1
	var bestAt int64
	for m := l.nonEm; m != 0; {
		p := bits.Len16(m) - 1
		m &^= 1 << p
		if !l.clean(p) {
			continue
		}
		h := l.q[p].peek()
		rank := p
		if w := now - h.readyAt; w > 0 {
			if up := w / interval; up >= int64(MaxPriority) {
				rank = int(MaxPriority)
			} else {
				rank = min(p+int(up), int(MaxPriority))
			}
		}
		if rank > bestRank || (rank == bestRank && h.readyAt < bestAt) {
			best, bestRank, bestAt = p, rank, h.readyAt
		}
	}
	if best < 0 {
		return nil
	}
	return l.take(best)
}

func (l *levels) take(p int) *record {
	r := l.q[p].pop()
	l.live[p]--
	if l.q[p].n == 0 {
		l.nonEm &^= 1 << p
	}
	return r
}

func (l *levels) len() int {
	n := 0
	for _, c := range l.live {
		n += c
	}
	return n
}

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

// ownerQueue is one owner's ready jobs at one level, FIFO. Records removed
// while queued (canceled) stay in it as tombstones until popped or
// compacted. It is linked into its level's round-robin ring by the push
// that finds it unlinked, and unlinked when the ring finds it empty, unless
// it is the ring's only queue.
type ownerQueue struct {
	fifo
	dead   int         // tombstones among the n records
	next   *ownerQueue // the next queue of the ring, while linked
	linked bool
}

// owner is what the memory backend keeps for one owner: the counts its
// Quota is checked against and its ready jobs at each level. The jobs with
// no owner form one group of their own.
type owner struct {
	name    string
	active  int   // pending, scheduled, running, retrying
	delayed int   // scheduled
	bytes   int64 // payload bytes of the active jobs
	q       [NumPriorities]ownerQueue
}

// levels is the ready queue. Each level is a ring of the owners with ready
// jobs at that level; taking a job takes the head of the first owner's
// queue and moves that owner to the back of the ring (round robin), so a
// level serves its owners in turn and each owner's jobs in FIFO order. A
// bitmap of the non-empty levels makes the highest one a bit scan away.
//
// With aging, each level also keeps its ready records in arrival order
// (arr), so that a level is ranked by its oldest ready job, whichever
// owner holds it. Entries of records taken out of arrival order (by the
// round robin) or removed go stale and are dropped lazily.
type levels struct {
	tail  [NumPriorities]*ownerQueue // ring of each level; tail.next is served next
	live  [NumPriorities]int         // ready records per level, tombstones excluded
	nonEm uint16                     // bit p set when ring p may hold a record (clear: it holds none)

	aging bool
	seq   uint64                  // numbers the arrivals
	arr   [NumPriorities]arrivals // with aging: arrival order per level
}

// push appends r to its owner's queue at its level, linking the queue at
// the back of the level's ring if it was not linked.
func (l *levels) push(r *record) {
	p := r.prio
	oq := &r.owner.q[p]
	oq.push(r)
	l.live[p]++
	l.nonEm |= 1 << p
	if !oq.linked {
		oq.linked = true
		if t := l.tail[p]; t == nil {
			oq.next = oq
		} else {
			oq.next = t.next
			t.next = oq
		}
		l.tail[p] = oq
	}
	if l.aging {
		l.seq++
		r.readySeq = l.seq
		a := &l.arr[p]
		a.push(arrival{r, l.seq})
		if a.n > 2*l.live[p]+64 {
			a.compact()
		}
	}
}

// remove marks a queued record as removed; its owner's queue is compacted
// once tombstones are the majority, which keeps memory bounded by live jobs.
func (l *levels) remove(r *record) {
	p := r.prio
	oq := &r.owner.q[p]
	r.removed = true
	r.readySeq = 0
	oq.dead++
	l.live[p]--
	if oq.dead > 32 && 2*oq.dead > oq.n {
		oq.compact(true)
		oq.dead = 0
	}
}

// take returns the next live record of level p in round-robin order, or
// nil if the level holds none. Level p's bit must be set in nonEm.
func (l *levels) take(p int) *record {
	t := l.tail[p]
	oq := t.next
	if oq.n == 0 || oq.peek().removed {
		if oq = l.cleanFront(p); oq == nil {
			return nil
		}
		t = l.tail[p]
	}
	r := oq.pop()
	l.live[p]--
	if l.aging {
		r.readySeq = 0
	}
	switch {
	case oq == t: // the ring's only queue
		if oq.n == 0 {
			l.nonEm &^= 1 << p
		}
	case oq.n == 0:
		t.next = oq.next
		oq.unlink()
	default:
		l.tail[p] = oq // served: to the back of the ring
	}
	return r
}

// cleanFront drops the tombstones at the head of ring p's front queue and
// unlinks the queues left empty, and returns the first front queue whose
// head is live, or nil (clearing p's bit in nonEm) if none is.
func (l *levels) cleanFront(p int) *ownerQueue {
	for t := l.tail[p]; t != nil; t = l.tail[p] {
		oq := t.next
		for oq.n > 0 && oq.peek().removed {
			oq.pop()
			oq.dead--
		}
		switch {
		case oq.n > 0:
			return oq
		case oq == t:
			// The ring's only queue, empty: it stays linked, as it does
			// when take empties it, so that an owner alone at a level
			// does not relink its queue for every job.
			l.nonEm &^= 1 << p
			return nil
		}
		t.next = oq.next
		oq.unlink()
	}
	l.nonEm &^= 1 << p
	return nil
}

// unlink marks oq, just taken out of its ring, unlinked, and frees its
// buffer if it had grown for a burst (past 2 KiB), so that an owner's past
// burst does not hold memory while it has other jobs.
func (oq *ownerQueue) unlink() {
	oq.next, oq.linked = nil, false
	if len(oq.buf) > 256 {
		oq.buf, oq.head = nil, 0
	}
}

// pop returns the next record by strict priority, round robin between the
// owners of a level and FIFO within an owner, or nil if none is queued.
func (l *levels) pop() *record {
	for l.nonEm != 0 {
		if r := l.take(bits.Len16(l.nonEm) - 1); r != nil {
			return r
		}
	}
	return nil
}

// popAged returns the next record when aging is on. Each level is ranked
// by its oldest ready record: its level plus one per interval waited,
// capped at MaxPriority; the highest rank wins, the longer wait on a tie.
// The winning level then serves its next owner in turn (take), which may
// hold a younger record than the one that ranked the level. now and
// interval are in nanoseconds on the readyAt clock.
func (l *levels) popAged(now, interval int64) *record {
	for l.nonEm != 0 {
		best, bestRank := -1, -1
		var bestAt int64
		for m := l.nonEm; m != 0; {
			p := bits.Len16(m) - 1
			m &^= 1 << p
			h := l.arr[p].oldest()
			if h == nil {
				continue
			}
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
			// Only tombstones are left: let take clear them.
			for m := l.nonEm; m != 0; {
				p := bits.Len16(m) - 1
				m &^= 1 << p
				if r := l.take(p); r != nil {
					return r
				}
			}
			return nil
		}
		if r := l.take(best); r != nil {
			return r
		}
	}
	return nil
}

func (l *levels) len() int {
	n := 0
	for _, c := range l.live {
		n += c
	}
	return n
}

// arrival is an entry of a level's arrival order: valid while rec is still
// ready from the same push (rec.readySeq == seq).
type arrival struct {
	rec *record
	seq uint64
}

// arrivals is a growable ring buffer of arrival entries.
type arrivals struct {
	buf  []arrival // len is zero or a power of two
	head int
	n    int
}

func (a *arrivals) push(e arrival) {
	if a.n == len(a.buf) {
		a.resize(max(16, 2*len(a.buf)))
	}
	a.buf[(a.head+a.n)&(len(a.buf)-1)] = e
	a.n++
}

// oldest drops the stale entries at the head and returns the oldest ready
// record, or nil.
func (a *arrivals) oldest() *record {
	for a.n > 0 {
		e := a.buf[a.head]
		if e.rec.readySeq == e.seq {
			return e.rec
		}
		a.buf[a.head] = arrival{}
		a.head = (a.head + 1) & (len(a.buf) - 1)
		a.n--
	}
	return nil
}

// compact drops the stale entries and shrinks the buffer to fit.
func (a *arrivals) compact() {
	k := 0
	for i := 0; i < a.n; i++ {
		if e := a.buf[(a.head+i)&(len(a.buf)-1)]; e.rec.readySeq == e.seq {
			a.buf[(a.head+k)&(len(a.buf)-1)] = e
			k++
		}
	}
	for i := k; i < a.n; i++ {
		a.buf[(a.head+i)&(len(a.buf)-1)] = arrival{}
	}
	a.n = k
	size := len(a.buf)
	for size > 16 && size/4 >= a.n {
		size /= 2
	}
	if size != len(a.buf) {
		a.resize(size)
	}
}

func (a *arrivals) resize(size int) {
	nb := make([]arrival, size)
	for i := 0; i < a.n; i++ {
		nb[i] = a.buf[(a.head+i)&(len(a.buf)-1)]
	}
	a.buf, a.head = nb, 0
}

package jobqueue

import "slices"

// The scheduled jobs form a binary min-heap on due, with each record's index
// kept in heapIdx so Cancel can remove one in O(log n).

func (b *memBackend) heapPush(r *record) {
	r.heapIdx = len(b.sched)
	b.sched = append(b.sched, r)
	b.heapUp(r.heapIdx)
}

func (b *memBackend) heapPop() *record {
	r := b.sched[0]
	b.heapRemove(r)
	return r
}

func (b *memBackend) heapRemove(r *record) {
	i := r.heapIdx
	last := len(b.sched) - 1
	if i != last {
		b.heapSwap(i, last)
	}
	b.sched[last] = nil
	b.sched = b.sched[:last]
	r.heapIdx = -1
	if i != last {
		b.heapDown(i)
		b.heapUp(i)
	}
	if cap(b.sched) > 64 && len(b.sched) < cap(b.sched)/4 {
		b.sched = slices.Clip(slices.Clone(b.sched))
	}
}

func (b *memBackend) heapSwap(i, j int) {
	h := b.sched
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (b *memBackend) heapUp(i int) {
	h := b.sched
	for i > 0 {
		p := (i - 1) / 2
		if h[p].due <= h[i].due {
			break
		}
		b.heapSwap(i, p)
		i = p
	}
}

func (b *memBackend) heapDown(i int) {
	h := b.sched
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		c := l
		if r := l + 1; r < len(h) && h[r].due < h[l].due {
			c = r
		}
		if h[i].due <= h[c].due {
			return
		}
		b.heapSwap(i, c)
		i = c
	}
}

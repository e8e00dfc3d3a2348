package jobqueue

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// Get implements Backend.
func (b *memBackend) Get(_ context.Context, id string) (JobInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune(clockNow())
	r := b.records[id]
	if r == nil {
		return JobInfo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return r.info(), nil
}

// List implements Backend. Under the lock, it costs O(n) in the jobs kept
// plus O(k log k) for a page of k jobs (a bounded heap keeps the k newest
// matches); with no limit it snapshots every match and sorts them after.
func (b *memBackend) List(_ context.Context, f ListFilter) ([]JobInfo, error) {
	limit := f.limit()
	b.mu.Lock()
	b.prune(clockNow())
	if limit < 0 {
		var out []JobInfo
		for _, r := range b.records {
			if f.match(r.job, r.state) {
				out = append(out, r.info())
				if f.Summary {
					out[len(out)-1].summarize()
				}
			}
		}
		b.mu.Unlock()
		slices.SortFunc(out, func(x, y JobInfo) int { return cmp.Compare(y.ID, x.ID) })
		return out, nil
	}
	defer b.mu.Unlock()
	var h newest
	for _, r := range b.records {
		if f.match(r.job, r.state) {
			h.offer(r, limit)
		}
	}
	slices.SortFunc(h, func(x, y *record) int { return cmp.Compare(y.job.ID, x.job.ID) })
	out := make([]JobInfo, len(h))
	for i, r := range h {
		out[i] = r.info()
		if f.Summary {
			out[i].summarize()
		}
	}
	return out, nil
}

// newest is a min-heap on ID of at most k records: the k newest offered.
type newest []*record

// offer adds r if fewer than k records are held or r is newer than the
// oldest one held, which it then replaces.
func (h *newest) offer(r *record, k int) {
	s := *h
	switch {
	case len(s) < k:
		s = append(s, r)
		for i := len(s) - 1; i > 0; {
			p := (i - 1) / 2
			if s[p].job.ID <= s[i].job.ID {
				break
			}
			s[p], s[i] = s[i], s[p]
			i = p
		}
	case k > 0 && r.job.ID > s[0].job.ID:
		s[0] = r
		for i := 0; ; {
			c := 2*i + 1
			if c >= len(s) {
				break
			}
			if c+1 < len(s) && s[c+1].job.ID < s[c].job.ID {
				c++
			}
			if s[i].job.ID <= s[c].job.ID {
				break
			}
			s[i], s[c] = s[c], s[i]
			i = c
		}
	}
	*h = s
}

// Usage implements UsageReporter.
func (b *memBackend) Usage(_ context.Context, owner string) (Usage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := &b.anon
	if owner != "" {
		if o = b.owners[owner]; o == nil {
			return Usage{}, nil
		}
	}
	return Usage{Active: o.active, Delayed: o.delayed, Bytes: o.bytes}, nil
}

// Cancel implements Backend.
func (b *memBackend) Cancel(_ context.Context, id string) (JobInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.records[id]
	if r == nil {
		return JobInfo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	switch {
	case r.state.Final():
		return r.info(), fmt.Errorf("%w: %s is %s", ErrFinished, id, r.state)
	case r.state == StateRunning:
		r.cancelReq = true
		return r.info(), nil
	}
	r.lastErr = ErrCanceled.Error()
	b.finish(r, StateCanceled, clockNow())
	info := r.info()
	return info, nil
}

// Stats implements Backend.
func (b *memBackend) Stats(context.Context) (BackendStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune(clockNow())
	s := BackendStats{
		Scheduled: len(b.sched) - b.retrying,
		Retrying:  b.retrying,
		Running:   b.running,
		Retained:  b.finished.n,
	}
	copy(s.Depth[:], b.ready.live[:])
	s.Pending = b.ready.len()
	return s, nil
}

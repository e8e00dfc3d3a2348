package jobqueue

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// anonOwner is the owner group of the records newRec makes: one group, as
// the memory backend has for jobs with no owner.
var anonOwner owner

func newRec(p Priority, readyAt int64) *record {
	return newOwnedRec(&anonOwner, p, readyAt)
}

func newOwnedRec(o *owner, p Priority, readyAt int64) *record {
	return &record{job: &Job{Owner: o.name, Priority: p}, prio: uint8(p), readyAt: readyAt, owner: o}
}

func TestLevelsStrictOrder(t *testing.T) {
	anonOwner = owner{}
	var l levels
	var want []*record
	for i := range 100 {
		r := newRec(Priority(i*7%NumPriorities), int64(i))
		l.push(r)
		want = append(want, r)
	}
	slices.SortStableFunc(want, func(a, b *record) int { return int(b.job.Priority - a.job.Priority) })
	for i, w := range want {
		if got := l.pop(); got != w {
			t.Fatalf("pop %d: got priority %d ready %d, want priority %d ready %d", i, got.job.Priority, got.readyAt, w.job.Priority, w.readyAt)
		}
	}
	if l.pop() != nil || l.nonEm != 0 {
		t.Fatal("levels not empty after popping everything")
	}
}

func TestLevelsAging(t *testing.T) {
	anonOwner = owner{}
	l := levels{aging: true}
	low := newRec(Low, 0)
	l.push(low)
	for i := 1; i <= 5; i++ {
		l.push(newRec(Critical, int64(i)))
	}
	// At time 8 with interval 1, low ranks 0+8 = 8 < 9: a critical job wins.
	if r := l.popAged(8, 1); r.job.Priority != Critical {
		t.Fatalf("popAged(8) took priority %d, want critical", r.job.Priority)
	}
	// At time 9 low ranks 9, ties with critical, and has waited longer.
	if r := l.popAged(9, 1); r != low {
		t.Fatalf("popAged(9) took priority %d, want the aged low job", r.job.Priority)
	}
	if got := l.len(); got != 4 {
		t.Fatalf("len = %d, want 4", got)
	}
}

func TestLevelsRoundRobin(t *testing.T) {
	var l levels
	a, b, c := &owner{name: "a"}, &owner{name: "b"}, &owner{name: "c"}
	for i := range 4 {
		l.push(newOwnedRec(a, Normal, int64(i)))
	}
	l.push(newOwnedRec(b, Normal, 10))
	l.push(newOwnedRec(c, Normal, 11))
	l.push(newOwnedRec(b, Normal, 12))
	crit := newOwnedRec(a, Critical, 13)
	l.push(crit)
	if r := l.pop(); r != crit {
		t.Fatal("round robin broke strict priority")
	}
	var got []string
	for r := l.pop(); r != nil; r = l.pop() {
		got = append(got, fmt.Sprintf("%s%d", r.owner.name, r.readyAt))
	}
	if want := "a0 b10 c11 a1 b12 a2 a3"; strings.Join(got, " ") != want {
		t.Fatalf("order %v, want %s: owners in turn, FIFO within an owner", got, want)
	}
	if l.nonEm != 0 || l.live[Normal] != 0 {
		t.Fatal("ring not empty after popping everything")
	}
}

// TestLevelsAgingWithOwners: aging ranks a level by its oldest ready job,
// whichever owner holds it; the winning level then serves its next owner
// in turn.
func TestLevelsAgingWithOwners(t *testing.T) {
	l := levels{aging: true}
	a, b := &owner{name: "a"}, &owner{name: "b"}
	a0, a1 := newOwnedRec(a, Low, 0), newOwnedRec(a, Low, 1)
	b5 := newOwnedRec(b, Low, 5)
	c8 := newOwnedRec(b, Critical, 8)
	for _, r := range []*record{a0, a1, b5, c8} {
		l.push(r)
	}
	// At time 2 nothing has aged enough: strict order, critical first.
	if r := l.popAged(2, 100); r != c8 {
		t.Fatalf("popAged(2) = %s%d, want the critical job", r.owner.name, r.readyAt)
	}
	l.push(c8)
	if r := l.take(int(Low)); r != a0 { // a is served; b is next in the ring
		t.Fatal("take(Low) did not serve the first owner")
	}
	// At time 10, interval 1: Low ranks by a1 (waited 9: rank 9), ties
	// with critical c8 and has waited longer, so Low serves its next
	// owner, b, whose job is younger than a1.
	want := []*record{b5, a1, c8}
	for i, w := range want {
		if r := l.popAged(10, 1); r != w {
			t.Fatalf("pop %d at time 10: got %s%d, want %s%d", i, r.owner.name, r.readyAt, w.owner.name, w.readyAt)
		}
	}
	if l.popAged(10, 1) != nil {
		t.Fatal("popAged on an empty queue returned a record")
	}
	for p := range l.arr {
		if l.arr[p].oldest() != nil {
			t.Fatalf("level %d keeps a live arrival", p)
		}
	}
}

func TestLevelsAgingArrivalsBounded(t *testing.T) {
	l := levels{aging: true}
	a, b := &owner{name: "a"}, &owner{name: "b"}
	old := newOwnedRec(a, Normal, 0)
	l.push(old) // stays queued while b's jobs come and go out of arrival order
	for i := range 10_000 {
		l.push(newOwnedRec(b, Normal, int64(i+1)))
		if r := l.take(int(Normal)); r == old {
			l.push(old)
		}
	}
	if n := l.arr[Normal].n; n > 2*l.live[Normal]+64 {
		t.Fatalf("arrivals hold %d entries for %d live records", n, l.live[Normal])
	}
}

func TestLevelsRemoveAndCompact(t *testing.T) {
	anonOwner = owner{}
	var l levels
	var recs []*record
	for i := range 200 {
		r := newRec(Normal, int64(i))
		recs = append(recs, r)
		l.push(r)
	}
	for i, r := range recs {
		if i%4 != 0 {
			l.remove(r)
		}
	}
	if l.len() != 50 {
		t.Fatalf("live = %d, want 50", l.len())
	}
	if n := anonOwner.q[Normal].n; n >= 200 {
		t.Fatalf("ring still holds %d records after removing 150 of 200; want compaction", n)
	}
	for i := 0; i < 200; i += 4 {
		if r := l.pop(); r != recs[i] {
			t.Fatalf("pop returned ready %d, want %d", r.readyAt, i)
		}
	}
	if l.pop() != nil {
		t.Fatal("pop after the last live record returned one")
	}
}

func TestIDsSortAndAreUnique(t *testing.T) {
	g := newIDGen()
	now := time.Now()
	var ids []string
	for i := range 10_000 {
		// The clock stepping back must not make IDs go back.
		ids = append(ids, g.next(now.Add(time.Duration(i%3-1)*time.Second)))
	}
	if !slices.IsSorted(ids) {
		t.Fatal("IDs from one generator are not in increasing order")
	}
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Fatal("duplicate IDs")
	}
	if len(ids[0]) != 36 || !validID(ids[0]) {
		t.Fatalf("ID %q is %d characters, want 36 valid ones", ids[0], len(ids[0]))
	}
	later := g.next(now.Add(time.Hour))
	if later <= ids[len(ids)-1] {
		t.Fatal("an ID made an hour later does not sort after earlier ones")
	}
	if h := newIDGen(); h.next(now.Add(2 * time.Hour))[:13] <= later[:13] {
		t.Fatal("time prefix does not order IDs of different generators by time")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	var s histSum
	s.add(&h)
	l := s.latency()
	check := func(name string, got, want time.Duration) {
		if got < want || float64(got) > 1.25*float64(want) {
			t.Errorf("%s = %v, want within [%v, %v]", name, got, want, time.Duration(1.25*float64(want)))
		}
	}
	check("p50", l.P50, 500*time.Microsecond)
	check("p90", l.P90, 900*time.Microsecond)
	check("p99", l.P99, 990*time.Microsecond)
	if l.Max != time.Millisecond || l.Count != 1000 {
		t.Errorf("max %v count %d, want 1ms and 1000", l.Max, l.Count)
	}
	for v := int64(0); v < 1<<20; v = v*9/8 + 1 {
		if b := bucketOf(v); bucketHigh(b) < v || (b > 0 && bucketHigh(b-1) >= v) {
			t.Fatalf("value %d in bucket %d with high %d (previous high %d)", v, b, bucketHigh(b), bucketHigh(b-1))
		}
	}
}

func TestJobContext(t *testing.T) {
	c := &jobCtx{job: &Job{ID: "x"}}
	if c.Err() != nil {
		t.Fatal("fresh context has an error")
	}
	derived, cancel := context.WithCancel(c)
	defer cancel()
	done := c.Done()
	c.cancel(ErrCanceled)
	c.cancel(context.DeadlineExceeded) // the first cause wins
	<-done
	<-derived.Done() // propagated through AfterFunc
	if c.Err() != context.Canceled || c.causeErr() != ErrCanceled {
		t.Fatalf("Err %v cause %v, want Canceled and ErrCanceled", c.Err(), c.causeErr())
	}
	if c.Done() == nil {
		t.Fatal("Done is nil after cancel")
	}
	d := &jobCtx{job: &Job{ID: "y"}}
	d.cancel(context.DeadlineExceeded)
	<-d.Done() // made after the cancel: already closed
	if d.Err() != context.DeadlineExceeded {
		t.Fatalf("Err = %v, want DeadlineExceeded", d.Err())
	}
	e := &jobCtx{job: &Job{ID: "z"}}
	ran := make(chan struct{})
	stop := e.AfterFunc(func() { close(ran) })
	if !stop() || stop() {
		t.Fatal("stop did not report exactly one stop")
	}
	e.cancel(ErrClosed)
	select {
	case <-ran:
		t.Fatal("a stopped AfterFunc ran")
	case <-time.After(5 * time.Millisecond):
	}
}

// BenchmarkQueue measures the in-memory priority queue itself: one push at a
// level cycling through all ten and one pop of the highest job, each under
// the mutex as the memory backend takes it, with about a thousand jobs
// queued across the levels. One op is one push plus one pop.
func BenchmarkQueue(b *testing.B) {
	anonOwner = owner{}
	var mu sync.Mutex
	var l levels
	recs := make([]*record, 1024)
	for i := range recs {
		recs[i] = newRec(Priority(i%NumPriorities), int64(i))
	}
	for i := range 1000 {
		l.push(recs[i])
	}
	i := 0
	for b.Loop() {
		mu.Lock()
		l.push(recs[i&1023])
		mu.Unlock()
		mu.Lock()
		r := l.pop()
		mu.Unlock()
		if r == nil {
			b.Fatal("empty")
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkQueueAging is BenchmarkQueue with aging on, which compares the
// heads of every non-empty level on each pop.
func BenchmarkQueueAging(b *testing.B) {
	anonOwner = owner{}
	var mu sync.Mutex
	l := levels{aging: true}
	recs := make([]*record, 1024)
	for i := range recs {
		recs[i] = newRec(Priority(i%NumPriorities), int64(i))
	}
	for i := range 1000 {
		l.push(recs[i])
	}
	i := 0
	for b.Loop() {
		mu.Lock()
		l.push(recs[i&1023])
		mu.Unlock()
		mu.Lock()
		r := l.popAged(int64(i), 100)
		mu.Unlock()
		if r == nil {
			b.Fatal("empty")
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkMemoryBackend measures the memory backend's whole job path on
// one goroutine: Enqueue, Fetch and Ack, with records, IDs and retention.
func BenchmarkMemoryBackend(b *testing.B) {
	be := NewMemoryBackend()
	if err := be.Open(BackendConfig{Capacity: 1 << 20}); err != nil {
		b.Fatal(err)
	}
	defer be.Close(context.Background())
	ctx := context.Background()
	g := newIDGen()
	buf := make([]Lease, 0, 1)
	i := 0
	for b.Loop() {
		now := time.Now()
		job := &Job{ID: g.next(now), Type: "t", Priority: Priority(i % NumPriorities), SubmittedAt: now}
		if _, err := be.Enqueue(ctx, job, Quota{}); err != nil {
			b.Fatal(err)
		}
		ls, err := be.Fetch(ctx, buf[:0], 1)
		if err != nil || len(ls) != 1 {
			b.Fatal(err)
		}
		if err := ls[0].Ack(ctx, nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

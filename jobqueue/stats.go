package jobqueue

import (
	"context"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Stats is a point-in-time view of a Queue, returned by Queue.Stats. It
// encodes to JSON with durations in nanoseconds. Counters cover this Queue's
// workers since New (Submitted counts this Queue's accepted submissions);
// gauges come from the backend and cover every process sharing it.
type Stats struct {
	Workers   int                `json:"workers"`   // worker goroutines: configured, or the autoscaler's count now
	Resizes   uint64             `json:"resizes"`   // changes of the worker count by Config.Autoscale
	Busy      int                `json:"busy"`      // workers running a handler now
	Depth     [NumPriorities]int `json:"depth"`     // pending jobs per level
	Pending   int                `json:"pending"`   // ready, waiting for a worker
	Scheduled int                `json:"scheduled"` // waiting for RunAt
	Retrying  int                `json:"retrying"`  // waiting for a retry delay
	Running   int                `json:"running"`   // leased, in any process
	Retained  int                `json:"retained"`  // finished jobs kept for Get and List

	Submitted uint64 `json:"submitted"` // jobs stored by Submit and Run (not deduplicated or repeated ones)
	Succeeded uint64 `json:"succeeded"` // jobs ended succeeded
	Failed    uint64 `json:"failed"`    // jobs ended failed
	Retried   uint64 `json:"retried"`   // failed attempts followed by a retry
	Canceled  uint64 `json:"canceled"`  // jobs ended canceled

	// Throughput is the number of jobs this Queue's workers finished in the
	// last full second.
	Throughput float64 `json:"throughput"`
	// Wait is the time from a job becoming ready (submission or RunAt) to
	// its first attempt's start; Run is the duration of each attempt.
	Wait Latency `json:"wait"` // first attempts, this Queue's workers
	Run  Latency `json:"run"`  // every attempt, this Queue's workers

	Types      map[string]TypeStats      `json:"types"`      // per registered job type
	Priorities [NumPriorities]LevelStats `json:"priorities"` // per level

	Uptime time.Duration `json:"uptime"` // since New
	// Left is set once Shutdown has stopped the workers: the active jobs
	// (pending, scheduled, retrying, or returned to pending because Shutdown
	// interrupted them) it left in the backend.
	Left int `json:"left"`
	// Interrupted counts the running jobs whose context Shutdown canceled.
	Interrupted int `json:"interrupted"`
}

// TypeStats are the counters of one job type.
type TypeStats struct {
	Succeeded uint64  `json:"succeeded"` // jobs ended succeeded
	Failed    uint64  `json:"failed"`    // jobs ended failed
	Retried   uint64  `json:"retried"`   // failed attempts followed by a retry
	Canceled  uint64  `json:"canceled"`  // jobs ended canceled
	Run       Latency `json:"run"`       // duration of every attempt
}

// LevelStats are the counters of one priority level.
type LevelStats struct {
	Pending   int     `json:"pending"`   // ready jobs at this level now
	Succeeded uint64  `json:"succeeded"` // jobs ended succeeded
	Failed    uint64  `json:"failed"`    // jobs ended failed
	Canceled  uint64  `json:"canceled"`  // jobs ended canceled
	Wait      Latency `json:"wait"`      // ready to first start
}

// Latency summarizes a distribution of durations. Quantiles come from a
// log-linear histogram (four buckets per power of two), so they are upper
// bounds within 25% of the true value, capped at Max.
//
// Sum and Buckets carry the histogram itself, for exporters that build
// their own (a Prometheus histogram, say): Buckets holds, for every power
// of two from 2^10 ns (about 1µs) to 2^42 ns (about 73 minutes), the
// number of durations shorter than it. The counts are cumulative and
// exact, not interpolated: each boundary is also one of the internal
// buckets' boundaries. Count includes the durations of 2^42 ns and more.
// Buckets is left out of the JSON form.
type Latency struct {
	Count uint64        `json:"count"` // durations recorded
	Sum   time.Duration `json:"sum"`   // all durations added up
	P50   time.Duration `json:"p50"`   // median
	P90   time.Duration `json:"p90"`   // 90th percentile
	P99   time.Duration `json:"p99"`   // 99th percentile
	Max   time.Duration `json:"max"`   // largest

	// Buckets holds the 33 cumulative buckets, by increasing UpperBound,
	// in every Latency a Queue returns, empty or not.
	Buckets []LatencyBucket `json:"-"`
}

// LatencyBucket is one cumulative bucket of a [Latency]: Count durations
// were shorter than UpperBound. Durations are whole nanoseconds, so "shorter
// than UpperBound" is "at most UpperBound-1ns"; a Prometheus histogram,
// whose buckets count values at most their bound, can use UpperBound as its
// bound, one nanosecond off.
type LatencyBucket struct {
	UpperBound time.Duration
	Count      uint64
}

// The powers of two that bound the buckets of a Latency.
const (
	latencyMinExp = 10
	latencyMaxExp = 42
)

const histBuckets = 256

// histogram counts durations in log-linear buckets with atomic counters.
// Recording costs three atomic adds and no allocation.
type histogram struct {
	b   [histBuckets]atomic.Uint64
	sum atomic.Int64
	max atomic.Int64
}

func bucketOf(v int64) int {
	if v < 8 {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v))
	m := v >> (e - 3) // 4..7
	return (e-3)*4 + int(m)
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < 8 {
		return int64(i)
	}
	e := i/4 + 2
	m := int64(i%4 + 4)
	return (m+1)<<(e-3) - 1
}

// lastBucketOf returns the last bucket of the values of bit length e, whose
// bucketHigh is 2^e-1.
func lastBucketOf(e int) int { return 4*e - 5 }

func (h *histogram) record(d time.Duration) {
	v := int64(d)
	h.b[bucketOf(v)].Add(1)
	h.sum.Add(max(v, 0))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// histSum accumulates histograms for a quantile read.
type histSum struct {
	b   [histBuckets]uint64
	sum int64
	max int64
}

func (s *histSum) add(h *histogram) {
	for i := range h.b {
		s.b[i] += h.b[i].Load()
	}
	s.sum += h.sum.Load()
	s.max = max(s.max, h.max.Load())
}

func (s *histSum) latency() Latency {
	var n uint64
	l := Latency{Sum: time.Duration(s.sum), Max: time.Duration(s.max),
		Buckets: make([]LatencyBucket, 0, latencyMaxExp-latencyMinExp+1)}
	e := latencyMinExp
	for i, c := range s.b {
		n += c
		if e <= latencyMaxExp && i == lastBucketOf(e) {
			l.Buckets = append(l.Buckets, LatencyBucket{UpperBound: 1 << e, Count: n})
			e++
		}
	}
	l.Count = n
	if n == 0 {
		return l
	}
	q := func(f float64) time.Duration {
		want := uint64(math.Ceil(f * float64(n))) // nearest rank
		var c uint64
		for i, x := range s.b {
			c += x
			if c >= want {
				return time.Duration(min(bucketHigh(i), s.max))
			}
		}
		return time.Duration(s.max)
	}
	l.P50, l.P90, l.P99 = q(0.50), q(0.90), q(0.99)
	return l
}

// counters are the per-outcome counters kept per worker, type and level.
type counters struct {
	succeeded atomic.Uint64
	failed    atomic.Uint64
	retried   atomic.Uint64
	canceled  atomic.Uint64
}

func (c *counters) count(k EventKind) {
	switch k {
	case EventSucceeded:
		c.succeeded.Add(1)
	case EventFailed:
		c.failed.Add(1)
	case EventRetrying:
		c.retried.Add(1)
	case EventCanceled:
		c.canceled.Add(1)
	}
}

func (c *counters) uncount(k EventKind) {
	if k == EventSucceeded {
		c.succeeded.Add(^uint64(0))
	}
}

// rate counts one worker's finished jobs per wall-clock second.
type rate struct {
	sec  atomic.Int64  // the second cur counts
	cur  atomic.Uint64 // jobs finished in sec
	prev atomic.Uint64 // jobs finished in sec-1
}

func (r *rate) tick(now time.Time) {
	s := now.Unix()
	if old := r.sec.Load(); old != s {
		if old == s-1 {
			r.prev.Store(r.cur.Load())
		} else {
			r.prev.Store(0)
		}
		r.cur.Store(0)
		r.sec.Store(s)
	}
	r.cur.Add(1)
}

// lastSecond returns the jobs finished in the last full second before now.
func (r *rate) lastSecond(now time.Time) uint64 {
	s := now.Unix()
	switch r.sec.Load() {
	case s:
		return r.prev.Load()
	case s - 1:
		return r.cur.Load()
	}
	return 0
}

// Stats returns counters, latencies and backend gauges. It costs a backend
// Stats call and a pass over every worker's histograms (a few microseconds
// per worker); call it at a human rate.
func (q *Queue) Stats() Stats {
	now := clockNow()
	s := Stats{Workers: q.WorkerCount(), Resizes: q.resizes.Load(), Submitted: q.submitted.Load(), Uptime: now.Sub(q.started)}
	if bs, err := q.backend.Stats(context.Background()); err == nil {
		s.Depth, s.Pending, s.Scheduled, s.Retrying, s.Running, s.Retained =
			bs.Depth, bs.Pending, bs.Scheduled, bs.Retrying, bs.Running, bs.Retained
	}
	var wait, run histSum
	for _, w := range q.runningWorkers() {
		if w.cur.Load() != nil {
			s.Busy++
		}
		s.Succeeded += w.succeeded.Load()
		s.Failed += w.failed.Load()
		s.Retried += w.retried.Load()
		s.Canceled += w.canceled.Load()
		s.Throughput += float64(w.rate.lastSecond(now))
		wait.add(&w.wait)
		run.add(&w.run)
	}
	s.Canceled += q.idle.canceled.Load()
	s.Wait, s.Run = wait.latency(), run.latency()
	if m := q.handlers.Load(); m != nil {
		s.Types = make(map[string]TypeStats, len(*m))
		for k, e := range *m {
			var h histSum
			h.add(&e.run)
			s.Types[k] = TypeStats{Succeeded: e.c.succeeded.Load(), Failed: e.c.failed.Load(),
				Retried: e.c.retried.Load(), Canceled: e.c.canceled.Load(), Run: h.latency()}
		}
	}
	for p := range s.Priorities {
		var h histSum
		h.add(&q.levelWait[p])
		c := &q.levels[p]
		s.Priorities[p] = LevelStats{Pending: s.Depth[p], Succeeded: c.succeeded.Load(), Failed: c.failed.Load(),
			Canceled: c.canceled.Load(), Wait: h.latency()}
	}
	select {
	case <-q.done:
		s.Left = int(q.left.Load())
	default:
	}
	s.Interrupted = int(q.interrupted.Load())
	return s
}

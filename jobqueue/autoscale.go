package jobqueue

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Autoscale makes a Queue size its workers between Min and Max by its
// backlog and the jobs' measured run time (Config.Autoscale). Every
// Interval it computes the workers it needs: those busy now, plus enough
// to run the jobs waiting within Target at the mean run time of the jobs
// that ended lately (before any has ended, each waiting job counts as one
// worker's Target). It grows at once when it needs more, and shrinks
// only when it has needed fewer for a whole Cooldown; it changes the
// count at most once per Cooldown either way, so it does not flap. Each
// change is logged (Info, "autoscale") and counted in Stats.Resizes;
// Stats.Workers is the count now.
type Autoscale struct {
	// Min and Max bound the workers: 1 <= Min <= Max. The queue starts
	// with Min.
	Min, Max int
	// Interval is how often it decides (zero: one second). Each decision
	// reads the backend's Stats: keep it at a human rate on a shared
	// backend.
	Interval time.Duration
	// Target is how long a waiting job should wait at most (zero: one
	// second): the backlog needs backlog x mean run time / Target workers.
	Target time.Duration
	// Cooldown is the least time between two changes, and how long fewer
	// workers must have been enough before it shrinks (zero: ten seconds).
	Cooldown time.Duration
	// OnResize, if set, is called after each change with the new count,
	// on the autoscaler's goroutine: to resize a pool the handlers feed
	// with the queue, a goroutine pool (pool.Pool.Resize) or the worker
	// processes of ProcPoolHandler (procpool.Pool.Resize, which returns an
	// error to log: a new process that cannot start leaves the pool as it
	// was). TestAutoscaleProcPool runs a burst through both.
	OnResize func(workers int)
}

func (a *Autoscale) withDefaults() (*Autoscale, error) {
	c := *a
	switch {
	case c.Min < 1 || c.Max < c.Min:
		return nil, fmt.Errorf("jobqueue: Autoscale Min %d, Max %d: want 1 <= Min <= Max", c.Min, c.Max)
	case c.Interval < 0 || c.Target < 0 || c.Cooldown < 0:
		return nil, fmt.Errorf("jobqueue: negative Autoscale duration")
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Target == 0 {
		c.Target = time.Second
	}
	if c.Cooldown == 0 {
		c.Cooldown = 10 * time.Second
	}
	return &c, nil
}

// autoscale runs the autoscaler until ctx ends (Shutdown).
func (q *Queue) autoscale(ctx context.Context, a *Autoscale) {
	defer q.autoWG.Done()
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	var (
		lastChange time.Time // of the count
		enoughFrom time.Time // since when fewer workers have been enough
		prevSum    time.Duration
		prevCount  uint64
		meanRun    time.Duration // of the jobs that ended lately
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		// The mean run time of the jobs that ended since the last look,
		// smoothed; it stays as it was while none ends.
		sum, count := q.runTotals()
		if count > prevCount {
			m := (sum - prevSum) / time.Duration(count-prevCount)
			if meanRun == 0 {
				meanRun = m
			} else {
				meanRun = (meanRun + m) / 2
			}
		}
		prevSum, prevCount = sum, count
		bs, err := q.backend.Stats(ctx)
		if err != nil {
			continue // out of reach: decide at the next look
		}
		busy := q.busyWorkers()
		need := busy
		if bs.Pending > 0 {
			run := meanRun
			if run == 0 {
				run = a.Target // no job has ended yet: assume each takes Target
			}
			need += int(math.Ceil(float64(bs.Pending) * float64(run) / float64(a.Target)))
		}
		want := min(max(need, a.Min), a.Max)
		n := q.WorkerCount()
		switch {
		case want > n:
			enoughFrom = time.Time{}
			if !lastChange.IsZero() && now.Sub(lastChange) < a.Cooldown {
				continue
			}
		case want < n:
			if enoughFrom.IsZero() {
				enoughFrom = now
			}
			if now.Sub(enoughFrom) < a.Cooldown || now.Sub(lastChange) < a.Cooldown {
				continue
			}
		default:
			enoughFrom = time.Time{}
			continue
		}
		if !q.resize(want) {
			return // shutting down
		}
		lastChange, enoughFrom = now, time.Time{}
		q.resizes.Add(1)
		q.log.Info("autoscale", "from", n, "to", want, "pending", bs.Pending, "busy", busy, "mean_run", meanRun)
		if a.OnResize != nil {
			a.OnResize(want)
		}
	}
}

// runTotals returns the run time and count of the jobs the workers ran.
func (q *Queue) runTotals() (time.Duration, uint64) {
	var s histSum
	for _, w := range q.runningWorkers() {
		s.add(&w.run)
	}
	var n uint64
	for _, c := range s.b {
		n += c
	}
	return time.Duration(s.sum), n
}

// busyWorkers counts the workers running a handler now.
func (q *Queue) busyWorkers() int {
	n := 0
	for _, w := range q.runningWorkers() {
		if w.cur.Load() != nil {
			n++
		}
	}
	return n
}

// WorkerCount returns the number of workers the queue runs now: the
// configured count, or the autoscaler's latest (zero before Start and with
// NoWorkers).
func (q *Queue) WorkerCount() int { return int(q.nworkers.Load()) }

// resize makes n workers active: it starts workers (reusing the structs of
// retired ones that have exited, so that their counters still count in
// Stats) or retires the surplus (each finishes its running job, then
// exits). It returns false once Shutdown has begun.
func (q *Queue) resize(n int) bool {
	q.life.Lock()
	defer q.life.Unlock()
	if q.closed.Load() {
		return false
	}
	active := 0
	for _, w := range q.workers {
		if w.retired.Load() {
			continue
		}
		active++
		if active > n {
			w.retire()
		}
	}
	for ; active < n; active++ {
		var w *worker
		for _, r := range q.workers {
			if r.retired.Load() && r.exited() {
				w = r
				break
			}
		}
		if w == nil {
			w = &worker{q: q}
			q.workers = append(q.workers, w)
		}
		q.live.Add(1)
		q.startWorker(w)
	}
	q.nworkers.Store(int32(n))
	return true
}

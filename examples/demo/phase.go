package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/procpool"
)

// phaseResult is what one run of the batch measured.
type phaseResult struct {
	Workers  int
	Elapsed  time.Duration
	Done     int
	Failed   int
	ByWorker map[string]int // jobs per worker process (or "goroutines")
	ByCPU    map[int]int    // jobs per CPU they finished on
	// FirstDone and LastDone are when the first and the last thumbnail of
	// each size finished, from the start of the phase.
	FirstDone, LastDone map[int]time.Duration
	// Shared and SharedBytes count the source images decoded in the
	// parent and lent to the workers in shared memory, and their pixels.
	Shared      int
	SharedBytes int64
}

// priorityFor puts small previews first: they are what a user waits for.
func priorityFor(size int, sizes []int) jobqueue.Priority {
	switch i := slices.Index(sizes, size); {
	case i == 0:
		return jobqueue.Critical
	case i == 1:
		return jobqueue.High
	case i < len(sizes)-1:
		return jobqueue.Normal
	default:
		return jobqueue.Low
	}
}

// runPhase runs every job through a priority queue whose handler does the
// CPU work in worker processes (or on the queue's goroutines) and draws the
// dashboard while it runs.
func runPhase(ctx context.Context, w io.Writer, cfg config, workers int, jobs []thumbIn, sampler *monitor.Sampler, site *web) (phaseResult, error) {
	res := phaseResult{Workers: workers, ByWorker: map[string]int{}, ByCPU: map[int]int{},
		FirstDone: map[int]time.Duration{}, LastDone: map[int]time.Duration{}}

	var pp *procpool.Pool
	var imgs *sharedImages
	qcfg := jobqueue.Config{Workers: workers, Capacity: len(jobs) + 1, MaxAttempts: 2, RetryDelay: 10 * time.Millisecond,
		Logger: cfg.logger}
	if cfg.mode == "processes" {
		var err error
		opts := []procpool.Option{procpool.WithWorkers(workers)}
		if cfg.pinned {
			opts = append(opts, procpool.WithPinnedWorkers())
		}
		if cfg.logger != nil {
			opts = append(opts, procpool.WithLogger(cfg.logger))
		}
		pp, err = procpool.New(opts...)
		if err != nil {
			return res, err
		}
		defer pp.Close()
		// Large images go to the workers in shared memory (shared.go),
		// freed after the queue's Shutdown, deferred below.
		imgs = newSharedImages(cfg.shareAbove, len(cfg.sizes), cfg.logger)
		defer imgs.close()
		// Two handler goroutines per process keep a request waiting in
		// each worker's pipe, so no worker idles between jobs.
		qcfg.Workers = 2 * workers
	}
	q, err := jobqueue.New(qcfg)
	if err != nil {
		return res, err
	}
	defer q.Shutdown(context.Background())
	if pp != nil {
		q.Handle("thumbnail", imgs.handler(pp))
	} else {
		jobqueue.HandleFunc(q, "thumbnail", makeThumbnail)
	}
	sub := q.Subscribe(jobqueue.EventFilter{
		Kinds:  []jobqueue.EventKind{jobqueue.EventSucceeded, jobqueue.EventFailed, jobqueue.EventCanceled},
		Buffer: len(jobs) + 16,
	})
	defer sub.Close()
	sizeOf := map[string]int{}

	start := time.Now()
	for _, j := range jobs {
		payload, err := json.Marshal(j)
		if err != nil {
			return res, err
		}
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "thumbnail", Payload: payload, Priority: priorityFor(j.Size, cfg.sizes)})
		if err != nil {
			return res, err
		}
		sizeOf[id] = j.Size
	}
	// Every job is queued before any worker starts, so the order in which
	// they finish shows the priorities at work.
	if err := q.Start(); err != nil {
		return res, err
	}
	if site != nil {
		site.attach(q, pp)
		defer site.detach() // before the queue's Shutdown, deferred earlier
	}

	dash := &dashboard{w: w, live: cfg.live, sampler: sampler, pool: pp, total: len(jobs), start: start}
	tick := time.NewTicker(cfg.tick)
	defer tick.Stop()
	for res.Done+res.Failed < len(jobs) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
			dash.draw(ctx, res)
		case ev, ok := <-sub.Events():
			if !ok {
				return res, fmt.Errorf("event stream ended: %v", sub.Err())
			}
			at := time.Since(start)
			size := sizeOf[ev.JobID]
			if ev.Kind != jobqueue.EventSucceeded {
				res.Failed++
				fmt.Fprintf(w, "job %s (%dpx) %s: %s\n", ev.JobID, size, ev.Kind, ev.Error)
				continue
			}
			res.Done++
			var out thumbOut
			if err := json.Unmarshal(ev.Result, &out); err == nil {
				key := "goroutines"
				if pp != nil {
					key = fmt.Sprintf("pid %d", out.PID)
				}
				res.ByWorker[key]++
				res.ByCPU[out.CPU]++
			}
			if _, ok := res.FirstDone[size]; !ok {
				res.FirstDone[size] = at
			}
			res.LastDone[size] = at
		}
	}
	res.Elapsed = time.Since(start)
	if imgs != nil {
		res.Shared, res.SharedBytes = int(imgs.count.Load()), imgs.bytes.Load()
	}
	dash.draw(ctx, res)
	if res.Failed > 0 {
		return res, fmt.Errorf("%d of %d thumbnails failed", res.Failed, len(jobs))
	}
	return res, nil
}

// dashboard draws per-core CPU bars, the worker processes and a progress
// bar: redrawn in place on a terminal, one plain line per tick otherwise.
type dashboard struct {
	w       io.Writer
	live    bool
	sampler *monitor.Sampler
	pool    *procpool.Pool
	total   int
	start   time.Time
	lines   int // lines drawn last time, to move the cursor back
}

func (d *dashboard) draw(ctx context.Context, res phaseResult) {
	done := res.Done + res.Failed
	elapsed := time.Since(d.start)
	rate := float64(done) / elapsed.Seconds()
	eta := "-"
	if rate > 0 && done < d.total {
		eta = (time.Duration(float64(d.total-done) / rate * float64(time.Second))).Round(100 * time.Millisecond).String()
	}
	if !d.live {
		fmt.Fprintf(d.w, "%5.1fs  %d/%d thumbnails  %.1f jobs/s  ETA %s\n", elapsed.Seconds(), done, d.total, rate, eta)
		return
	}
	var b strings.Builder
	if d.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.lines) // back to the top of the last frame
	}
	if snap, err := d.sampler.Sample(ctx); err == nil {
		for _, c := range snap.Cores {
			fmt.Fprintf(&b, "\x1b[2K  CPU%-2d [%s] %5.1f%%\n", c.CPU, bar(c.Usage, 20), 100*c.Usage)
		}
	}
	if d.pool != nil {
		for _, ws := range d.pool.Stats().PerWorker {
			pin := ""
			if ws.PinnedCPU >= 0 {
				pin = fmt.Sprintf(" (pinned to %d)", ws.PinnedCPU)
			}
			fmt.Fprintf(&b, "\x1b[2K  worker %d  pid %-7d on CPU %d%s  %4d jobs\n", ws.ID, ws.PID, ws.CPU, pin, ws.Tasks)
		}
	}
	fmt.Fprintf(&b, "\x1b[2K  [%s] %d/%d  %.1f jobs/s  ETA %s\n", bar(float64(done)/float64(d.total), 30), done, d.total, rate, eta)
	d.lines = strings.Count(b.String(), "\n")
	io.WriteString(d.w, b.String())
}

func bar(ratio float64, width int) string {
	ratio = min(max(ratio, 0), 1)
	n := int(ratio*float64(width) + 0.5)
	return strings.Repeat("█", n) + strings.Repeat("░", width-n)
}

func printReport(w io.Writer, cfg config, r report) {
	fmt.Fprintf(w, "\n== Results (%s)\n", describe(config{mode: cfg.mode, workers: r.Workers, pinned: cfg.pinned}))
	rate := func(p phaseResult) float64 { return float64(p.Done) / p.Elapsed.Seconds() }
	fmt.Fprintf(w, "1 worker:   %d thumbnails in %v  (%.1f jobs/s)\n", r.One.Done, r.One.Elapsed.Round(time.Millisecond), rate(r.One))
	fmt.Fprintf(w, "%d workers:  %d thumbnails in %v  (%.1f jobs/s)\n", r.Workers, r.Full.Done, r.Full.Elapsed.Round(time.Millisecond), rate(r.Full))
	fmt.Fprintf(w, "speedup:    %.2fx with %d workers (measured in this run)\n", r.Speedup, r.Workers)

	fmt.Fprintf(w, "per worker:\n")
	keys := make([]string, 0, len(r.Full.ByWorker))
	for k := range r.Full.ByWorker {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		n := r.Full.ByWorker[k]
		fmt.Fprintf(w, "  %-12s %4d jobs  %6.1f jobs/s  %5.1f%%\n", k, n, float64(n)/r.Full.Elapsed.Seconds(), 100*float64(n)/float64(r.Full.Done))
	}
	fmt.Fprintf(w, "load distribution (CPU each job finished on):\n")
	cpus := make([]int, 0, len(r.Full.ByCPU))
	for c := range r.Full.ByCPU {
		cpus = append(cpus, c)
	}
	slices.Sort(cpus)
	for _, c := range cpus {
		n := r.Full.ByCPU[c]
		share := float64(n) / float64(r.Full.Done)
		fmt.Fprintf(w, "  CPU%-2d [%s] %5.1f%%  %d jobs\n", c, bar(share, 20), 100*share, n)
	}
	fmt.Fprintf(w, "priorities (first and last thumbnail of each size, from the start of the run):\n")
	for _, s := range cfg.sizes {
		fmt.Fprintf(w, "  %4dpx  %-8s first %-8v last %v\n", s, priorityFor(s, cfg.sizes),
			r.Full.FirstDone[s].Round(time.Millisecond), r.Full.LastDone[s].Round(time.Millisecond))
	}
	if cfg.mode == "processes" {
		if r.Full.Shared > 0 {
			fmt.Fprintf(w, "shared memory: %d source images over %s decoded, each decoded once in the parent (not once per size in the workers) and lent to the workers: %.1f MiB of pixels\n",
				r.Full.Shared, sizeText(cfg.shareAbove), float64(r.Full.SharedBytes)/(1<<20))
		} else {
			fmt.Fprintf(w, "shared memory: none (no source image over %s decoded; the workers read the files)\n", sizeText(cfg.shareAbove))
		}
	}
	if cfg.out == "" {
		fmt.Fprintf(w, "thumbnails: %s, a temporary directory removed at exit (-out DIR keeps them)\n", r.OutDir)
	} else {
		fmt.Fprintf(w, "thumbnails: %s\n", r.OutDir)
	}
}

// sizeText prints a byte count in KiB or MiB.
func sizeText(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	if n >= 1<<10 {
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

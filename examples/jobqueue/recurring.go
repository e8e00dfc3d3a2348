package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/corework/corework/jobqueue"
)

// recurring is the second part of the lesson: what a service needs next.
// A "nightly" report on a two-second schedule (a cron expression such as
// "0 3 * * *" in production), and workers that size themselves: a burst
// of thumbnails makes the queue grow from one worker to several, and it
// shrinks back once the burst is over. It prints each tick's report and
// each change of the worker count as they happen.
type recurringResult struct {
	Reports []string // the IDs of the scheduled report jobs that ran
	Counts  []int    // the worker counts, from the start
	Burst   int      // thumbnails in the burst, all run
}

func recurring(ctx context.Context, w io.Writer, o options) (recurringResult, error) {
	var res recurringResult
	maxWorkers := max(4, runtime.GOMAXPROCS(0))
	t0 := time.Now()
	since := func() string { return fmt.Sprintf("%7.1fs", time.Since(t0).Seconds()) }
	var mu sync.Mutex
	res.Counts = []int{1}
	q, err := jobqueue.New(jobqueue.Config{
		Autoscale: &jobqueue.Autoscale{Min: 1, Max: maxWorkers, Interval: 50 * time.Millisecond,
			Target: 200 * time.Millisecond, Cooldown: time.Second,
			OnResize: func(n int) {
				mu.Lock()
				res.Counts = append(res.Counts, n)
				mu.Unlock()
				fmt.Fprintf(w, "%s  workers -> %d\n", since(), n)
			}},
		Logger: o.Logger,
	})
	if err != nil {
		return res, err
	}
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "report", func(ctx context.Context, in reportIn) (reportOut, error) {
		job, _, _ := jobqueue.JobFromContext(ctx)
		out, err := buildReport(ctx, in)
		if err == nil {
			mu.Lock()
			res.Reports = append(res.Reports, job.ID)
			mu.Unlock()
			fmt.Fprintf(w, "%s  nightly report for tick %s: %d rows, total %.0f\n", since(), job.Metadata["tick"], in.Rows, out.Total)
		}
		return out, err
	})
	jobqueue.HandleFunc(q, "thumbnail", makeThumbnail)
	err = q.Schedule(jobqueue.Schedule{
		Name:  "nightly",
		Every: 2 * time.Second, // production: Cron: "0 3 * * *", Location: ...
		Job: jobqueue.JobRequest{Type: "report", Priority: jobqueue.Low,
			Payload: mustJSON(reportIn{Region: "all", Rows: o.ReportRows / 4, Seed: 7})},
	})
	if err != nil {
		return res, err
	}
	fmt.Fprintf(w, "\nrecurring jobs and self-sizing workers: a report every 2 s, workers between 1 and %d\n", maxWorkers)
	if err := q.Start(); err != nil {
		return res, err
	}
	// A burst half a second in.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.Burst = 8 * maxWorkers
	fmt.Fprintf(w, "%s  a burst of %d thumbnails\n", since(), res.Burst)
	var ids []string
	for i := range res.Burst {
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "thumbnail",
			Payload: mustJSON(thumbIn{Name: fmt.Sprintf("burst-%03d.png", i), Width: o.ImageW, Height: o.ImageW * 3 / 4, Thumb: 160, Seed: uint64(i)})})
		if err != nil {
			return res, err
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		if _, err := q.Wait(ctx, id); err != nil {
			return res, err
		}
	}
	fmt.Fprintf(w, "%s  burst done\n", since())
	// Back to one worker after the cooldown, and at least two reports.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(res.Reports)
		mu.Unlock()
		if (q.WorkerCount() == 1 && n >= 2) || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	if err := q.Shutdown(ctx); err != nil {
		return res, err
	}
	mu.Lock()
	defer mu.Unlock()
	st := q.Stats()
	counts := make([]string, len(res.Counts))
	for i, n := range res.Counts {
		counts[i] = fmt.Sprint(n)
	}
	fmt.Fprintf(w, "%s  %d scheduled reports; worker counts %s (%d changes); %d jobs\n",
		since(), len(res.Reports), strings.Join(counts, " -> "), st.Resizes, st.Succeeded)
	return res, nil
}

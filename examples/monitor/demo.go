package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/pool"
	"github.com/corework/corework/procpool"
)

// primesTask counts the primes below n by trial division: CPU work for the
// worker processes. It is registered at initialization, so the workers (this
// binary re-executed) have it too.
var primesTask = procpool.Register("monitor.primes", func(_ context.Context, n int) (int, error) {
	count := 0
	for i := 2; i < n; i++ {
		prime := true
		for d := 2; d*d <= i; d++ {
			if i%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			count++
		}
	}
	return count, nil
})

// demo is the workload of the -demo flag, so that every panel of the
// Grafana dashboard has something to show: a job queue fed a few jobs per
// second at random priorities, whose "primes" jobs run in a pool of two
// worker processes and whose "upload" jobs wait on the queue's goroutines
// and fail now and then (retried, and sometimes failed for good); and a
// goroutine pool of two workers that checksums bursts of buffers, so that
// tasks queue up and wait now and then.
type demo struct {
	procs  *procpool.Pool
	queue  *jobqueue.Queue
	hashes *pool.Pool
	data   []byte // what the hashes tasks read, never written after start
	stop   context.CancelFunc
	wg     sync.WaitGroup // the feeder
}

// demoRate is the number of jobs the demo submits per second, and of
// bursts of one to six checksum tasks.
const demoRate = 20

// startDemo starts the pools, the queue and the goroutine that feeds them;
// stopDemo stops them. Worker output goes to stderr; the queue and the
// process pool log to logger (nil: the queue logs nothing, the process
// pool to slog.Default).
func startDemo(stderr io.Writer, logger *slog.Logger) (*demo, error) {
	popts := []procpool.Option{procpool.WithWorkers(2), procpool.WithOutput(stderr)}
	if logger != nil {
		popts = append(popts, procpool.WithLogger(logger))
	}
	procs, err := procpool.New(popts...)
	if err != nil {
		return nil, err
	}
	q, err := jobqueue.New(jobqueue.Config{
		Workers:        4,
		Capacity:       200,
		RetryDelay:     100 * time.Millisecond,
		ShutdownPolicy: jobqueue.LeavePending,
		Logger:         logger,
	})
	if err != nil {
		procs.Close()
		return nil, err
	}
	q.Handle("primes", jobqueue.ProcPoolHandler(primesTask, procs))
	jobqueue.HandleFunc(q, "upload", func(ctx context.Context, ms int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if rand.IntN(10) == 0 {
			return 0, errors.New("upload refused by the server")
		}
		return ms, nil
	})
	if err := q.Start(); err != nil {
		q.Shutdown(context.Background())
		procs.Close()
		return nil, err
	}
	data := make([]byte, 256<<10)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &demo{procs: procs, queue: q, hashes: pool.New(2, pool.WithQueueSize(16)), data: data, stop: cancel}
	d.wg.Go(func() { d.feed(ctx) })
	return d, nil
}

// feed submits demoRate jobs and bursts of checksum tasks per second until
// ctx ends. A full queue or pool drops the job or task: the depth and
// waiting panels show why.
func (d *demo) feed(ctx context.Context) {
	t := time.NewTicker(time.Second / demoRate)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for range 1 + rand.IntN(6) {
			n := 16<<10 + rand.IntN(len(d.data)-16<<10) // 16 to 256 KiB
			d.hashes.TryGo(func() { _ = sha256.Sum256(d.data[:n]) })
		}
		req := jobqueue.JobRequest{Type: "upload", Priority: jobqueue.Priority(rand.IntN(jobqueue.NumPriorities)),
			Payload: []byte(strconv.Itoa(5 + rand.IntN(40)))}
		if rand.IntN(2) == 0 {
			req.Type, req.Payload = "primes", []byte(strconv.Itoa(50_000+rand.IntN(250_000)))
		}
		if _, err := d.queue.Submit(ctx, req); err != nil && !errors.Is(err, jobqueue.ErrQueueFull) {
			return // closed, or ctx ended
		}
	}
}

// collectors returns the demo's Prometheus collectors.
func (d *demo) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		monitor.NewJobQueueCollector("demo", d.queue.Stats),
		monitor.NewProcPoolCollector("demo", d.procs.Stats),
		monitor.NewPoolCollector("demo", d.hashes.Stats),
	}
}

// stopDemo stops the feeder, closes the goroutine pool (the queued
// checksums run first), shuts the queue down (running jobs finish, pending
// ones are dropped) and closes the process pool after it.
func (d *demo) stopDemo() error {
	d.stop()
	d.wg.Wait()
	d.hashes.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := d.queue.Shutdown(ctx)
	if cerr := d.procs.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("closing the demo pool: %w", cerr))
	}
	return err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
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

// demo is the workload of the -demo flag, so that the job-queue and
// process-pool panels have something to show: a job queue fed a few jobs
// per second at random priorities, whose "primes" jobs run in a pool of two
// worker processes and whose "upload" jobs wait on the queue's goroutines
// and fail now and then (retried, and sometimes failed for good).
type demo struct {
	pool  *procpool.Pool
	queue *jobqueue.Queue
	stop  context.CancelFunc
	wg    sync.WaitGroup // the feeder
}

// demoRate is the number of jobs the demo submits per second.
const demoRate = 20

// startDemo starts the pool, the queue and the goroutine that feeds it;
// stopDemo stops them. Worker output goes to stderr.
func startDemo(stderr io.Writer) (*demo, error) {
	pool, err := procpool.New(procpool.WithWorkers(2), procpool.WithOutput(stderr))
	if err != nil {
		return nil, err
	}
	q, err := jobqueue.New(jobqueue.Config{
		Workers:        4,
		Capacity:       200,
		RetryDelay:     100 * time.Millisecond,
		ShutdownPolicy: jobqueue.LeavePending,
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	q.Handle("primes", jobqueue.ProcPoolHandler(primesTask, pool))
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
		pool.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &demo{pool: pool, queue: q, stop: cancel}
	d.wg.Go(func() { d.feed(ctx) })
	return d, nil
}

// feed submits demoRate jobs per second until ctx ends. A full queue drops
// the job: the depth panel shows why.
func (d *demo) feed(ctx context.Context) {
	t := time.NewTicker(time.Second / demoRate)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
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
		monitor.NewProcPoolCollector("demo", d.pool.Stats),
	}
}

// stopDemo stops the feeder, shuts the queue down (running jobs finish,
// pending ones are dropped) and closes the pool after it.
func (d *demo) stopDemo() error {
	d.stop()
	d.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := d.queue.Shutdown(ctx)
	if cerr := d.pool.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("closing the demo pool: %w", cerr))
	}
	return err
}

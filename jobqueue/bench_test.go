package jobqueue_test

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"testing"

	"github.com/corework/corework/jobqueue"
)

func noop(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) { return nil, nil }

// BenchmarkEndToEnd measures throughput from Submit through a no-op handler
// to the result seen by the caller: one goroutine submits b.N jobs while
// the benchmark goroutine reads the succeeded events of a subscription
// until it has seen all b.N. At most 4096 jobs are in flight (submitted,
// result not yet seen), as in a pipeline with flow control, so the reader
// stays within its subscription's buffer. Workers default to GOMAXPROCS.
func BenchmarkEndToEnd(b *testing.B) {
	const window = 4096
	q, err := jobqueue.New(jobqueue.Config{Capacity: window})
	if err != nil {
		b.Fatal(err)
	}
	q.Handle("noop", jobqueue.HandlerFunc(noop))
	sub := q.Subscribe(jobqueue.EventFilter{Kinds: []jobqueue.EventKind{jobqueue.EventSucceeded}, Buffer: 2 * window})
	if err := q.Start(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	inflight := make(chan struct{}, window)
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() {
		for range b.N {
			inflight <- struct{}{}
			if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "noop", Priority: jobqueue.Normal}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for seen := 0; seen < b.N; {
		select {
		case _, ok := <-sub.Events():
			if !ok {
				b.Fatalf("subscription ended: %v", sub.Err())
			}
			<-inflight
			seen++
		case err := <-errc:
			if err != nil {
				b.Fatal(err)
			}
			errc = nil
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	sub.Close()
	if err := q.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRun measures request-response use: 4*GOMAXPROCS callers each
// Run a no-op job (Submit and Wait for its result), then the next.
func BenchmarkRun(b *testing.B) {
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		b.Fatal(err)
	}
	q.Handle("noop", jobqueue.HandlerFunc(noop))
	if err := q.Start(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	callers := 4 * runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	var next = make(chan struct{}, b.N)
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	b.ResetTimer()
	for range callers {
		wg.Go(func() {
			for range next {
				if _, err := q.Run(ctx, jobqueue.JobRequest{Type: "noop"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	if err := q.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
}

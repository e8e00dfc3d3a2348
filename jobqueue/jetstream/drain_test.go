package jetstream_test

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestShutdownDrainsWhatWasPending: jobs pending when Shutdown begins are
// all run (DrainPending), however the Shutdown falls against the fetching
// loop's rounds. Shutdown right after Start, many times over, with the CPUs
// kept busy meanwhile (the machine is loaded when it goes wrong): the poll
// that asks "anything left?" must be answered by a round of pulls that
// looked at every level, not by a round already under way that did not.
func TestShutdownDrainsWhatWasPending(t *testing.T) {
	srv := startServer(t)
	stop := make(chan struct{})
	var spinners sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		spinners.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					for i := 0; i < 1e5; i++ {
						_ = i
					}
				}
			}
		})
	}
	defer func() { close(stop); spinners.Wait() }()
	const rounds, jobs = 20, 5
	for round := range rounds {
		b, err := srv.Backend(testOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		q, err := jobqueue.New(jobqueue.Config{Backend: b, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		var ran atomic.Int32
		q.Handle("rec", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
			ran.Add(1)
			return nil, nil
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for range jobs {
			if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "rec"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
		err = q.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if n := ran.Load(); n != jobs {
			t.Fatalf("round %d: Shutdown drained %d of %d pending jobs", round, n, jobs)
		}
	}
}

package jetstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// BenchmarkEndToEnd measures Submit -> no-op handler -> result seen on an
// embedded, file-backed server: every job is stored in the jobs stream,
// pulled, claimed and settled in the state bucket, kept in the DONE stream
// and acknowledged, and three events go out for other processes. 32
// producers submit concurrently to a queue of 128 workers (the handlers
// wait on the server, not on the CPU); the figure is jobs per second from
// the first Submit to the last succeeded event. "embedded" is Embedded's
// in-process connection; "tcp" is the same server reached over loopback
// TCP, as worker processes reach it. "owners" is "embedded" with jobs as
// a server acting for clients submits them: each producer is an owner with
// a quota, and each job has a 64-byte payload, so every job also moves its
// owner's usage counter and the byte budget (see ledger.go), on submission
// and when it ends; library callers' jobs (no owner, no payload) pay
// neither.
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		be, err := jetstream.Embedded(b.TempDir(), jetstream.WithName("bench"))
		if err != nil {
			b.Fatal(err)
		}
		endToEnd(b, be, false)
	})
	b.Run("owners", func(b *testing.B) {
		be, err := jetstream.Embedded(b.TempDir(), jetstream.WithName("bench"))
		if err != nil {
			b.Fatal(err)
		}
		endToEnd(b, be, true)
	})
	b.Run("tcp", func(b *testing.B) {
		srv, err := jetstream.NewServer(b.TempDir(), jetstream.WithListen("127.0.0.1:0"))
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Shutdown()
		be, err := jetstream.Connect(srv.ClientURL(), jetstream.WithName("bench"))
		if err != nil {
			b.Fatal(err)
		}
		endToEnd(b, be, false)
	})
}

func endToEnd(b *testing.B, be *jetstream.Backend, owners bool) {
	q, err := jobqueue.New(jobqueue.Config{Backend: be, Workers: 128, BlockOnFull: true})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			b.Error(err)
		}
	}()
	q.Handle("noop", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		return nil, nil
	}))
	sub := q.Subscribe(jobqueue.EventFilter{Kinds: []jobqueue.EventKind{jobqueue.EventSucceeded}, Buffer: 1 << 16})
	defer sub.Close()
	if err := q.Start(); err != nil {
		b.Fatal(err)
	}
	const producers = 32
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := jobqueue.JobRequest{Type: "noop"}
			if owners {
				req.Owner, req.Quota = fmt.Sprintf("client%d", p), jobqueue.Quota{MaxActive: 1 << 20}
				req.Payload = json.RawMessage(`"` + strings.Repeat("x", 62) + `"`)
			}
			for i := p; i < b.N; i += producers {
				req.Priority = jobqueue.Priority(i % 10)
				if _, err := q.Submit(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for seen := 0; seen < b.N; seen++ {
		select {
		case <-sub.Events():
		case <-time.After(time.Minute):
			b.Fatalf("only %d of %d jobs succeeded", seen, b.N)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
}

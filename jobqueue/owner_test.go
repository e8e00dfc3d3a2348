package jobqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestFairDispatchBetweenOwners: one owner's burst of 10,000 ready jobs
// delays another owner's single job at the same level by about one job per
// other owner (round robin), while a higher level still goes first; with
// aging on as well.
func TestFairDispatchBetweenOwners(t *testing.T) {
	for _, aging := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("aging=%v", aging), func(t *testing.T) {
			// Retention keeps every job: on a loaded machine the whole flood
			// can finish before Wait(alice) begins, and 10,000 newer finished
			// jobs (the default MaxJobs) would have dropped alice's.
			q := newQueue(t, jobqueue.Config{Workers: 1, AgingInterval: aging, Capacity: 20_000,
				Retention: jobqueue.Retention{MaxJobs: 20_000}})
			var mu sync.Mutex
			var order []string
			q.Handle("rec", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
				mu.Lock()
				order = append(order, job.Owner+":"+string(job.Payload))
				mu.Unlock()
				return nil, nil
			}))
			ctx := context.Background()
			sub := func(owner string, p jobqueue.Priority, n int) string {
				id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "rec", Owner: owner, Priority: p, Payload: json.RawMessage(fmt.Sprint(n))})
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			for i := range 10_000 {
				sub("flood", jobqueue.Normal, i)
			}
			ids := []string{sub("alice", jobqueue.Normal, 0), sub("", jobqueue.Normal, 0), sub("bob", jobqueue.Normal, 0)}
			sub("flood", jobqueue.High, -1)
			if err := q.Start(); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if _, err := q.Wait(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			// The ring of level Normal is flood, alice, (no owner), bob:
			// each gets one job per turn.
			want := []string{"flood:-1", "flood:0", "alice:0", ":0", "bob:0"}
			if got := order[:min(len(order), len(want))]; strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("first jobs run: %v, want %v", got, want)
			}
		})
	}
}

func TestResultTooLarge(t *testing.T) {
	errs := make(chan error, 4)
	q := newQueue(t, jobqueue.Config{Workers: 1, MaxResult: 10, MaxAttempts: 3,
		OnError: func(_ *jobqueue.Job, _ int, err error) { errs <- err }})
	jobqueue.HandleFunc(q, "echo", func(ctx context.Context, s string) (string, error) { return s, nil })
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	info, err := q.Run(ctx, jobqueue.JobRequest{Type: "echo", Payload: json.RawMessage(`"12345678"`)}) // a 10-byte result
	if err != nil || string(info.Result) != `"12345678"` {
		t.Fatalf("Run with a result at the limit = %s, %v", info.Result, err)
	}
	info, err = q.Run(ctx, jobqueue.JobRequest{Type: "echo", Payload: json.RawMessage(`"123456789"`)})
	if !errors.Is(err, jobqueue.ErrFailed) || info.Attempts != 1 || info.Result != nil || !strings.Contains(info.LastError, "result too large") {
		t.Fatalf("Run with an 11-byte result = %+v, %v; want failed at once, without a result", info, err)
	}
	if e := <-errs; !errors.Is(e, jobqueue.ErrResultTooLarge) || !jobqueue.IsPermanent(e) {
		t.Fatalf("OnError got %v, want a permanent ErrResultTooLarge", e)
	}

	unlimited := newQueue(t, jobqueue.Config{Workers: 1, MaxResult: -1})
	jobqueue.HandleFunc(unlimited, "big", func(ctx context.Context, n int) (string, error) { return strings.Repeat("x", n), nil })
	if err := unlimited.Start(); err != nil {
		t.Fatal(err)
	}
	if info, err := unlimited.Run(ctx, jobqueue.JobRequest{Type: "big", Payload: json.RawMessage(`2000000`)}); err != nil || len(info.Result) != 2000002 {
		t.Fatalf("Run with MaxResult -1 = %d bytes, %v", len(info.Result), err)
	}
}

func TestUsageUnsupported(t *testing.T) {
	// A backend that hides the memory backend's optional methods.
	q := newQueue(t, jobqueue.Config{Backend: struct{ jobqueue.Backend }{jobqueue.NewMemoryBackend()}})
	if _, err := q.Usage(context.Background(), "alice"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Usage without UsageReporter = %v, want ErrUnsupported", err)
	}
}

func TestQuotaIsAtomic(t *testing.T) {
	q := newQueue(t, jobqueue.Config{NoWorkers: true})
	const limit = 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 50 {
		wg.Go(func() {
			_, err := q.Submit(context.Background(), jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: jobqueue.Quota{MaxActive: limit}})
			switch {
			case err == nil:
				mu.Lock()
				accepted++
				mu.Unlock()
			case !errors.Is(err, jobqueue.ErrQuotaExceeded):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if u, _ := q.Usage(context.Background(), "alice"); accepted != limit || u.Active != limit {
		t.Fatalf("%d concurrent submissions accepted, usage %+v; want exactly %d", accepted, u, limit)
	}
}

func TestEventFilterOwnerAndListSummaryJSON(t *testing.T) {
	q := newQueue(t, jobqueue.Config{NoWorkers: true})
	sub := q.Subscribe(jobqueue.EventFilter{Owner: "bob"})
	defer sub.Close()
	ctx := context.Background()
	q.Submit(ctx, jobqueue.JobRequest{Type: "t", Owner: "alice"})
	bob, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "t", Owner: "bob", Payload: json.RawMessage(`{"secret":1}`)})
	ev := <-sub.Events()
	if ev.JobID != bob || ev.Owner != "bob" || ev.Kind != jobqueue.EventQueued {
		t.Fatalf("owner subscription got %+v", ev)
	}
	infos, err := q.List(ctx, jobqueue.ListFilter{Owner: "bob", Summary: true})
	if err != nil || len(infos) != 1 {
		t.Fatal(infos, err)
	}
	b, _ := json.Marshal(infos[0])
	if strings.Contains(string(b), "secret") || !strings.Contains(string(b), `"owner":"bob"`) {
		t.Fatalf("summary JSON %s", b)
	}
}

func TestQuotaDoesNotSkipValidation(t *testing.T) {
	q := newQueue(t, jobqueue.Config{})
	q.Handle("t", jobqueue.HandlerFunc(noop))
	quota := jobqueue.Quota{MaxActive: 5}
	ctx := context.Background()
	if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "unknown", Owner: "alice", Quota: quota}); !errors.Is(err, jobqueue.ErrNoHandler) {
		t.Fatalf("Submit of an unknown type with a quota = %v, want ErrNoHandler", err)
	}
	if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "t", Quota: jobqueue.Quota{MaxBytes: -1}}); !errors.Is(err, jobqueue.ErrInvalidJob) {
		t.Fatalf("Submit with a negative quota = %v, want ErrInvalidJob", err)
	}
	if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "t", Quota: jobqueue.Quota{MaxDelay: time.Second}, RunAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("Submit with no owner past its quota's MaxDelay = %v, want nil: quotas apply to owners", err)
	}
}

package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

func backend(t *testing.T, srv *jetstream.Server, opts []jetstream.Option) *jetstream.Backend {
	t.Helper()
	b, err := srv.Backend(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sized returns a JSON payload (a string) of exactly n bytes, n >= 2.
func sized(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("x", n-2) + `"`) }

// usageIs fails t unless owner's Usage comes to want. The counters follow
// the jobs within a moment, not at once: a delayed job
// that comes due is counted out of Delayed by the request after the one
// that moves it, and on a loaded machine a worker can run it in between
// (the count errs on the side of refusing). So usageIs waits up to 5 s.
func usageIs(t *testing.T, q *jobqueue.Queue, owner string, want jobqueue.Usage) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := q.Usage(testCtx(t), owner)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Usage(%q) = %+v, %v; want %+v", owner, got, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestQuotaAcrossProcesses submits for one owner from two Queues on one
// queue name (two processes) at once: the quota and the byte budget hold
// across them, the counters match what is stored, and cancels give the
// room back.
func TestQuotaAcrossProcesses(t *testing.T) {
	srv := startServer(t)
	opts := testOptions()
	cfg := jobqueue.Config{NoWorkers: true, MaxBytes: 10_000}
	qs := []*jobqueue.Queue{newQueue(t, backend(t, srv, opts), cfg), newQueue(t, backend(t, srv, opts), cfg)}
	ctx := testCtx(t)
	quota := jobqueue.Quota{MaxActive: 7, MaxDelayed: 3}
	submitAll := func(req func(g, i int) jobqueue.JobRequest, refusal error) []string {
		var mu sync.Mutex
		var ids []string
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := range 4 {
					id, err := qs[g%2].Submit(ctx, req(g, i))
					switch {
					case err == nil:
						mu.Lock()
						ids = append(ids, id)
						mu.Unlock()
					case !errors.Is(err, refusal):
						t.Errorf("Submit = %v, want nil or %v", err, refusal)
					}
				}
			})
		}
		wg.Wait()
		return ids
	}
	later := time.Now().Add(time.Hour)
	alice := submitAll(func(g, i int) jobqueue.JobRequest {
		req := jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: quota, Payload: sized(100)}
		if i == 0 {
			req.RunAt = later
		}
		return req
	}, jobqueue.ErrQuotaExceeded)
	if len(alice) != 7 {
		t.Fatalf("%d of alice's jobs accepted, want 7 (MaxActive)", len(alice))
	}
	delayed := 0
	for _, id := range alice {
		info, err := qs[0].Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == jobqueue.StateScheduled {
			delayed++
		}
	}
	if delayed > 3 {
		t.Fatalf("%d delayed jobs accepted, more than MaxDelayed 3", delayed)
	}
	usageIs(t, qs[1], "alice", jobqueue.Usage{Active: 7, Delayed: delayed, Bytes: 700})
	if got, err := qs[1].List(ctx, jobqueue.ListFilter{Owner: "alice", Limit: -1}); err != nil || len(got) != 7 {
		t.Fatalf("List(alice) = %d jobs, %v; want 7", len(got), err)
	}

	// The byte budget: 9,300 bytes left, so nine jobs of 1,000 fit.
	anon := submitAll(func(g, i int) jobqueue.JobRequest {
		return jobqueue.JobRequest{Type: "t", Payload: sized(1000)}
	}, jobqueue.ErrQueueFull)
	if len(anon) != 9 {
		t.Fatalf("%d jobs of 1,000 bytes accepted with 9,300 bytes left, want 9", len(anon))
	}
	usageIs(t, qs[0], "", jobqueue.Usage{Active: 9, Bytes: 9000})

	for i, id := range append(alice, anon...) {
		if err := qs[i%2].Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	usageIs(t, qs[0], "alice", jobqueue.Usage{})
	usageIs(t, qs[1], "", jobqueue.Usage{})
	// All the room is back: a job of the whole budget fits.
	if _, err := qs[0].Submit(ctx, jobqueue.JobRequest{Type: "t", Owner: "bob", Payload: sized(10_000)}); err != nil {
		t.Fatalf("Submit of MaxBytes after every cancel: %v", err)
	}
}

// TestUsageFollowsJobs checks the counters through a job's life on
// workers: a delayed job's release, success, retries ending in failure,
// and a cancel while running; and that a job's room is free by the time
// its final event is seen, so a client at its quota can submit its next
// job as soon as it hears the last one end.
func TestUsageFollowsJobs(t *testing.T) {
	srv := startServer(t)
	be := backend(t, srv, testOptions())
	q := newQueue(t, be, jobqueue.Config{Workers: 2, RetryDelay: time.Millisecond, MaxRetryDelay: time.Millisecond})
	release := make(chan struct{})
	q.Handle("echo", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		return job.Payload, nil
	}))
	q.Handle("fail", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		return nil, errors.New("no")
	}))
	q.Handle("block", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			return nil, nil
		}
	}))
	ctx := testCtx(t)
	quota := jobqueue.Quota{MaxActive: 3}
	submit := func(req jobqueue.JobRequest) string {
		t.Helper()
		req.Owner, req.Quota = "bob", quota
		id, err := q.Submit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	later := submit(jobqueue.JobRequest{Type: "echo", Payload: sized(10), RunAt: time.Now().Add(300 * time.Millisecond)})
	usageIs(t, q, "bob", jobqueue.Usage{Active: 1, Delayed: 1, Bytes: 10})
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	blocked := submit(jobqueue.JobRequest{Type: "block", Payload: sized(20)})
	failing := submit(jobqueue.JobRequest{Type: "fail", Payload: sized(30), MaxAttempts: 3})
	if _, err := q.Wait(ctx, failing); !errors.Is(err, jobqueue.ErrFailed) {
		t.Fatalf("Wait(failing) = %v", err)
	}
	if _, err := q.Wait(ctx, later); err != nil {
		t.Fatal(err)
	}
	usageIs(t, q, "bob", jobqueue.Usage{Active: 1, Bytes: 20})
	// At the quota: each job's end frees room for the next at once.
	for range 5 {
		a := submit(jobqueue.JobRequest{Type: "echo", Payload: sized(5)})
		b := submit(jobqueue.JobRequest{Type: "echo", Payload: sized(5)})
		if _, err := q.Wait(ctx, a); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Wait(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for {
		info, err := q.Get(ctx, blocked)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == jobqueue.StateRunning {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := q.Cancel(ctx, blocked); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Wait(ctx, blocked); !errors.Is(err, jobqueue.ErrCanceled) {
		t.Fatalf("Wait(blocked) = %v, want canceled", err)
	}
	usageIs(t, q, "bob", jobqueue.Usage{})
	close(release)
}

// TestListAndUsageInBatches lists and counts more jobs than one batched
// read returns, across both streams: paging by owner visits each job
// once, newest first, and Usage of the jobs without an owner counts them
// all.
func TestListAndUsageInBatches(t *testing.T) {
	srv := startServer(t)
	q := newQueue(t, backend(t, srv, testOptions()), jobqueue.Config{NoWorkers: true})
	ctx := testCtx(t)
	owners := []string{"alice", "bob", ""}
	byOwner := map[string][]string{}
	later := time.Now().Add(time.Hour)
	var want jobqueue.Usage
	for i := range 900 {
		req := jobqueue.JobRequest{Type: "t", Owner: owners[i%3], Payload: sized(2 + i%7)}
		if i%5 == 0 {
			req.RunAt = later
		}
		id, err := q.Submit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		byOwner[req.Owner] = append(byOwner[req.Owner], id)
		if req.Owner == "" {
			want.Active++
			want.Bytes += int64(len(req.Payload))
			if i%5 == 0 {
				want.Delayed++
			}
		}
	}
	usageIs(t, q, "", want)
	for _, owner := range owners {
		var got []string
		f := jobqueue.ListFilter{Owner: owner, Limit: 70, Summary: true}
		for {
			page, err := q.List(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, info := range page {
				if owner != "" && info.Owner != owner || info.Payload != nil {
					t.Fatalf("List(%q) returned %+v", owner, info)
				}
				got = append(got, info.ID)
			}
			if len(page) < f.Limit {
				break
			}
			f.Cursor = page[len(page)-1].ID
		}
		want := slices.Clone(byOwner[owner])
		if owner == "" {
			want = nil
			for _, ids := range byOwner {
				want = append(want, ids...)
			}
			slices.Sort(want)
		}
		slices.Reverse(want)
		if !slices.Equal(got, want) {
			t.Fatalf("paging through %q's jobs: got %d, want %d, newest first", owner, len(got), len(want))
		}
	}
	sched, err := q.List(ctx, jobqueue.ListFilter{State: jobqueue.StateScheduled, Owner: "bob", Limit: -1})
	if err != nil || len(sched) != 60 {
		t.Fatalf("List(bob, scheduled) = %d jobs, %v; want 60", len(sched), err)
	}
}

// TestRepeatedSubmitAcrossProcesses repeats a submission with the same ID
// from another process, as a client reconnecting to another server would:
// the job is stored and counted once.
func TestRepeatedSubmitAcrossProcesses(t *testing.T) {
	srv := startServer(t)
	opts := testOptions()
	q1 := newQueue(t, backend(t, srv, opts), jobqueue.Config{NoWorkers: true})
	q2 := newQueue(t, backend(t, srv, opts), jobqueue.Config{NoWorkers: true})
	ctx := testCtx(t)
	quota := jobqueue.Quota{MaxActive: 1}
	for _, runAt := range []time.Time{{}, time.Now().Add(time.Hour)} {
		id := q1.NewID()
		req := jobqueue.JobRequest{ID: id, Type: "t", Owner: "carol", Quota: quota, Payload: sized(8), RunAt: runAt}
		for i, q := range []*jobqueue.Queue{q1, q2, q1} {
			if got, err := q.Submit(ctx, req); got != id || err != nil {
				t.Fatalf("submission %d of %s = %q, %v", i, id, got, err)
			}
		}
		req.Owner = "mallory"
		if _, err := q2.Submit(ctx, req); !errors.Is(err, jobqueue.ErrInvalidJob) {
			t.Fatalf("another owner's submission of %s = %v, want ErrInvalidJob", id, err)
		}
		want := jobqueue.Usage{Active: 1, Bytes: 8}
		if !runAt.IsZero() {
			want.Delayed = 1
		}
		usageIs(t, q2, "carol", want)
		usageIs(t, q2, "mallory", jobqueue.Usage{})
		if err := q2.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
		usageIs(t, q1, "carol", jobqueue.Usage{})
	}
	// A finished job still kept answers for its ID.
	id := q1.NewID()
	if _, err := q1.Submit(ctx, jobqueue.JobRequest{ID: id, Type: "t", Owner: "carol"}); err != nil {
		t.Fatal(err)
	}
	if err := q1.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, err := q2.Submit(ctx, jobqueue.JobRequest{ID: id, Type: "t", Owner: "carol"}); got != id || err != nil {
		t.Fatalf("repeating a finished job = %q, %v", got, err)
	}
	usageIs(t, q2, "carol", jobqueue.Usage{})
	if st := q1.Stats().Submitted + q2.Stats().Submitted; st != 3 {
		t.Fatalf("Submitted = %d across both, want 3", st)
	}
}

// TestRepeatWithinTheMillisecond repeats a submission whose ID looks
// fresh (an ID from Queue.NewID, repeated in the millisecond it was made,
// is not looked up before the quota is checked) while its job fills the
// owner's quota: the repeat finds the job instead of failing the quota.
// The ID is made to look fresh for an hour, so the test does not depend on
// the speed of the machine.
func TestRepeatWithinTheMillisecond(t *testing.T) {
	srv := startServer(t)
	opts := testOptions()
	q1 := newQueue(t, backend(t, srv, opts), jobqueue.Config{NoWorkers: true})
	q2 := newQueue(t, backend(t, srv, opts), jobqueue.Config{NoWorkers: true})
	ctx := testCtx(t)
	const crockford = "0123456789abcdefghjkmnpqrstvwxyz"
	v := uint64(time.Now().Add(time.Hour).Sub(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)).Milliseconds()) << 22
	var head [13]byte
	for i := 12; i >= 0; i-- {
		head[i] = crockford[v&31]
		v >>= 5
	}
	id := string(head[:]) + q1.NewID()[13:]
	if at, ok := jobqueue.IDTime(id); !ok || time.Until(at) < 59*time.Minute {
		t.Fatalf("%s is not an ID of an hour ahead: %v, %v", id, at, ok)
	}
	req := jobqueue.JobRequest{ID: id, Type: "t", Owner: "carol", Quota: jobqueue.Quota{MaxActive: 1}, Payload: sized(8)}
	for i, q := range []*jobqueue.Queue{q1, q2, q1} {
		if got, err := q.Submit(ctx, req); got != id || err != nil {
			t.Fatalf("submission %d of %s = %q, %v", i, id, got, err)
		}
	}
	usageIs(t, q2, "carol", jobqueue.Usage{Active: 1, Bytes: 8})
	req.Owner = "mallory"
	if _, err := q2.Submit(ctx, req); !errors.Is(err, jobqueue.ErrInvalidJob) {
		t.Fatalf("another owner's submission of %s = %v, want ErrInvalidJob", id, err)
	}
}

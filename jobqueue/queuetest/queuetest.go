// Package queuetest is the behaviour suite every jobqueue.Backend must pass.
// It drives a jobqueue.Queue built on the backend under test through the
// public API only, so the memory backend and shared backends (JetStream)
// are held to the same rules: priority order, FIFO, starvation and aging,
// retries and backoff, timeouts, cancellation, panics, capacity, shutdown,
// slow subscribers, unique keys, delayed jobs, retention and bad payloads,
// and the trust boundary: owners, listing by owner with a cursor and in
// summary, quotas, the byte budget, idempotent submission and usage.
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T) jobqueue.Backend { return jobqueue.NewMemoryBackend() })
//	}
//
// Each subtest builds a fresh backend with newBackend and closes it through
// Queue.Shutdown. The suite uses short delays (milliseconds) and finishes
// in a few seconds on the memory backend.
package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/panics"
)

// Run runs the suite as subtests of t, with a new backend from newBackend
// for each.
func Run(t *testing.T, newBackend func(t *testing.T) jobqueue.Backend) {
	s := &suite{newBackend: newBackend}
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"PriorityOrder", s.priorityOrder},
		{"FIFOWithinLevel", s.fifo},
		{"StarvationWithoutAging", s.starvationOff},
		{"NoStarvationWithAging", s.starvationOn},
		{"RetryCountAndBackoff", s.retries},
		{"RetryThenSucceed", s.retryThenSucceed},
		{"PermanentError", s.permanent},
		{"Timeout", s.timeout},
		{"CancelPending", s.cancelPending},
		{"CancelRunning", s.cancelRunning},
		{"PanicFailsWithStack", s.panics},
		{"QueueFull", s.queueFull},
		{"BlockOnFull", s.blockOnFull},
		{"ShutdownDrain", s.shutdownDrain},
		{"ShutdownLeave", s.shutdownLeave},
		{"ShutdownTimeout", s.shutdownTimeout},
		{"SlowSubscriberKeepsFinalEvents", s.slowSubscriberFinals},
		{"SlowSubscriberEnded", s.slowSubscriberEnded},
		{"UniqueKey", s.uniqueKey},
		{"CallerChosenID", s.callerID},
		{"DelayedJob", s.delayed},
		{"RetentionCount", s.retentionCount},
		{"RetentionAge", s.retentionAge},
		{"BadPayload", s.badPayload},
		{"EventsInOrder", s.eventsInOrder},
		{"EventFilter", s.eventFilter},
		{"WorkerLimit", s.workerLimit},
		{"Stats", s.stats},
		{"OwnerStored", s.ownerStored},
		{"ListByOwner", s.listByOwner},
		{"ListCursor", s.listCursor},
		{"ListSummary", s.listSummary},
		{"QuotaMaxActive", s.quotaMaxActive},
		{"QuotaMaxDelayed", s.quotaMaxDelayed},
		{"QuotaMaxBytes", s.quotaMaxBytes},
		{"QuotaMaxDelay", s.quotaMaxDelay},
		{"MaxBytesQueueFull", s.maxBytesFull},
		{"MaxBytesEvictsRetained", s.maxBytesEvicts},
		{"IdempotentSubmit", s.idempotentSubmit},
		{"Usage", s.usage},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	newBackend func(t *testing.T) jobqueue.Backend
}

// waitLimit bounds every wait of the suite, so a broken backend fails
// instead of hanging.
const waitLimit = 20 * time.Second

// queue builds a Queue on a fresh backend, with test-friendly retry delays,
// and shuts it down when the test ends.
func (s *suite) queue(t *testing.T, cfg jobqueue.Config) *jobqueue.Queue {
	t.Helper()
	cfg.Backend = s.newBackend(t)
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = 2 * time.Millisecond
	}
	if cfg.MaxRetryDelay == 0 {
		cfg.MaxRetryDelay = 20 * time.Millisecond
	}
	q, err := jobqueue.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return q
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func submit(t *testing.T, q *jobqueue.Queue, req jobqueue.JobRequest) string {
	t.Helper()
	id, err := q.Submit(ctxT(t), req)
	if err != nil {
		t.Fatalf("Submit(%s): %v", req.Type, err)
	}
	return id
}

func wait(t *testing.T, q *jobqueue.Queue, id string) (jobqueue.JobInfo, error) {
	t.Helper()
	info, err := q.Wait(ctxT(t), id)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait(%s): job still %s after %v", id, info.State, waitLimit)
	}
	return info, err
}

func get(t *testing.T, q *jobqueue.Queue, id string) jobqueue.JobInfo {
	t.Helper()
	info, err := q.Get(ctxT(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return info
}

func start(t *testing.T, q *jobqueue.Queue) {
	t.Helper()
	if err := q.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

func payload(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// eventually polls cond until it holds or the wait limit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recorder is a handler that records the payloads it runs, in order.
type recorder struct {
	mu    sync.Mutex
	order []int
	sleep time.Duration
}

func (r *recorder) handle(ctx context.Context, n int) (int, error) {
	if r.sleep > 0 {
		time.Sleep(r.sleep)
	}
	r.mu.Lock()
	r.order = append(r.order, n)
	r.mu.Unlock()
	return n, nil
}

func (r *recorder) got() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

func waitAll(t *testing.T, q *jobqueue.Queue, ids []string) {
	t.Helper()
	for _, id := range ids {
		if _, err := wait(t, q, id); err != nil {
			t.Fatalf("Wait(%s): %v", id, err)
		}
	}
}

func (s *suite) priorityOrder(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	type sub struct{ n, prio int }
	rng := rand.New(rand.NewPCG(1, 2))
	var subs []sub
	var ids []string
	for i := range 300 {
		p := rng.IntN(jobqueue.NumPriorities)
		subs = append(subs, sub{i, p})
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i), Priority: jobqueue.Priority(p)}))
	}
	start(t, q)
	waitAll(t, q, ids)
	slices.SortStableFunc(subs, func(a, b sub) int { return b.prio - a.prio })
	want := make([]int, len(subs))
	for i, x := range subs {
		want[i] = x.n
	}
	if got := r.got(); !slices.Equal(got, want) {
		t.Fatalf("run order differs from priority order, FIFO within a level:\n got %v\nwant %v", got, want)
	}
}

func (s *suite) fifo(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	var ids []string
	var want []int
	for i := range 200 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i), Priority: jobqueue.Normal}))
		want = append(want, i)
	}
	start(t, q)
	waitAll(t, q, ids)
	if got := r.got(); !slices.Equal(got, want) {
		t.Fatalf("jobs of one level ran out of submission order:\n got %v\nwant %v", got, want)
	}
}

// flood submits one Low job (payload -1) followed by n Critical jobs that
// each take about a millisecond, runs them on one worker and returns the
// position at which the Low job ran.
func (s *suite) flood(t *testing.T, aging time.Duration, n int) int {
	q := s.queue(t, jobqueue.Config{Workers: 1, AgingInterval: aging})
	r := recorder{sleep: time.Millisecond}
	jobqueue.HandleFunc(q, "rec", r.handle)
	ids := []string{submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(-1), Priority: jobqueue.Low})}
	for i := range n {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i), Priority: jobqueue.Critical}))
	}
	start(t, q)
	waitAll(t, q, ids)
	return slices.Index(r.got(), -1)
}

func (s *suite) starvationOff(t *testing.T) {
	const n = 150
	if pos := s.flood(t, 0, n); pos != n {
		t.Fatalf("strict priority: the low job ran at position %d of %d, want last (%d)", pos, n+1, n)
	}
}

func (s *suite) starvationOn(t *testing.T) {
	// With a 2ms interval the low job ranks Critical after about 18ms,
	// about 18 jobs into the flood; a slower machine only makes it sooner.
	const n = 150
	pos := s.flood(t, 2*time.Millisecond, n)
	if pos < 0 || pos >= n/2 {
		t.Fatalf("with aging the low job ran at position %d of %d, want within the first %d", pos, n+1, n/2)
	}
	t.Logf("low job ran at position %d under a flood of %d critical jobs", pos, n)
}

func (s *suite) retries(t *testing.T) {
	const base = 10 * time.Millisecond
	q := s.queue(t, jobqueue.Config{Workers: 1, RetryDelay: base, MaxRetryDelay: time.Second})
	var mu sync.Mutex
	var starts []time.Time
	q.Handle("flaky", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return nil, errors.New("always fails")
	}))
	sub := q.Subscribe(jobqueue.EventFilter{Kinds: []jobqueue.EventKind{jobqueue.EventRetrying}})
	defer sub.Close()
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "flaky", MaxAttempts: 4})
	info, err := wait(t, q, id)
	if !errors.Is(err, jobqueue.ErrFailed) || info.State != jobqueue.StateFailed {
		t.Fatalf("Wait = %v, state %s; want ErrFailed, failed", err, info.State)
	}
	if info.Attempts != 4 || len(starts) != 4 {
		t.Fatalf("attempts = %d (handler ran %d times), want 4", info.Attempts, len(starts))
	}
	if !strings.Contains(info.LastError, "always fails") {
		t.Fatalf("LastError = %q", info.LastError)
	}
	for k := 1; k < len(starts); k++ {
		// Attempt k waits base*2^(k-1) with jitter in [1/2, 1].
		minGap := base << (k - 1) / 2
		if gap := starts[k].Sub(starts[k-1]); gap < minGap {
			t.Errorf("gap before attempt %d = %v, want >= %v", k+1, gap, minGap)
		}
	}
	for k := 1; k <= 3; k++ {
		select {
		case ev := <-sub.Events():
			if ev.JobID != id || ev.Attempt != k || ev.NextRunAt.IsZero() || ev.Error == "" {
				t.Errorf("retrying event %d = %+v", k, ev)
			}
		case <-time.After(waitLimit):
			t.Fatalf("retrying event %d missing", k)
		}
	}
	if st := q.Stats(); st.Retried != 3 || st.Failed != 1 {
		t.Errorf("Stats: retried %d failed %d, want 3 and 1", st.Retried, st.Failed)
	}
}

func (s *suite) retryThenSucceed(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var runs atomic.Int32
	jobqueue.HandleFunc(q, "twice", func(ctx context.Context, _ struct{}) (string, error) {
		if runs.Add(1) <= 2 {
			return "", errors.New("not yet")
		}
		return "done", nil
	})
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "twice", Payload: payload(struct{}{}), MaxAttempts: 5})
	info, err := wait(t, q, id)
	if err != nil || info.Attempts != 3 || string(info.Result) != `"done"` {
		t.Fatalf("Wait = %v, attempts %d, result %s; want success after 3 attempts", err, info.Attempts, info.Result)
	}
}

func (s *suite) permanent(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var runs atomic.Int32
	q.Handle("perm", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		runs.Add(1)
		return nil, jobqueue.Permanent(errors.New("no point retrying"))
	}))
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "perm", MaxAttempts: 5})
	info, err := wait(t, q, id)
	if !errors.Is(err, jobqueue.ErrFailed) || info.Attempts != 1 || runs.Load() != 1 {
		t.Fatalf("Wait = %v, attempts %d, runs %d; want failed after 1", err, info.Attempts, runs.Load())
	}
}

func (s *suite) timeout(t *testing.T) {
	const limit = 30 * time.Millisecond
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var hadDeadline atomic.Bool
	q.Handle("slow", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		_, ok := ctx.Deadline()
		hadDeadline.Store(ok)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(waitLimit):
			return nil, errors.New("timeout never came")
		}
	}))
	start(t, q)
	t0 := time.Now()
	id := submit(t, q, jobqueue.JobRequest{Type: "slow", Timeout: limit, MaxAttempts: 1})
	info, err := wait(t, q, id)
	took := time.Since(t0)
	if !errors.Is(err, jobqueue.ErrFailed) || !strings.Contains(info.LastError, "deadline exceeded") {
		t.Fatalf("Wait = %v, LastError %q; want a failure by deadline", err, info.LastError)
	}
	if took < limit {
		t.Fatalf("job failed after %v, before its timeout %v", took, limit)
	}
	if !hadDeadline.Load() {
		t.Fatal("handler context had no deadline")
	}
}

// blocker registers a "block" job type whose handler signals started and
// waits for release (or its context); release is idempotent and also runs
// when the test ends.
func blocker(t *testing.T, q *jobqueue.Queue) (started chan string, release func()) {
	started = make(chan string, 16)
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	q.Handle("block", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		started <- job.ID
		select {
		case <-ch:
			return json.RawMessage(`"released"`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	return started, release
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func (s *suite) cancelPending(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	started, release := blocker(t, q)
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	start(t, q)
	b := submit(t, q, jobqueue.JobRequest{Type: "block"})
	recv(t, started, "blocker start")
	victim := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(7)})
	later := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(8), RunAt: time.Now().Add(time.Hour)})
	sub := q.Subscribe(jobqueue.EventFilter{JobID: victim})
	defer sub.Close()
	for _, id := range []string{victim, later} {
		if err := q.Cancel(ctxT(t), id); err != nil {
			t.Fatalf("Cancel(%s): %v", id, err)
		}
		if info := get(t, q, id); info.State != jobqueue.StateCanceled {
			t.Fatalf("state after Cancel = %s, want canceled at once", info.State)
		}
	}
	if ev := recv(t, sub.Events(), "canceled event"); ev.Kind != jobqueue.EventCanceled {
		t.Fatalf("event = %s, want canceled", ev.Kind)
	}
	release()
	if _, err := wait(t, q, b); err != nil {
		t.Fatal(err)
	}
	if _, err := wait(t, q, victim); !errors.Is(err, jobqueue.ErrCanceled) {
		t.Fatalf("Wait(canceled) = %v, want ErrCanceled", err)
	}
	// A job submitted after the canceled one runs; the canceled one never.
	after := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(9)})
	waitAll(t, q, []string{after})
	if got := r.got(); !slices.Equal(got, []int{9}) {
		t.Fatalf("handler ran %v, want only [9]", got)
	}
	if err := q.Cancel(ctxT(t), victim); !errors.Is(err, jobqueue.ErrFinished) {
		t.Fatalf("second Cancel = %v, want ErrFinished", err)
	}
	if err := q.Cancel(ctxT(t), "no-such-job"); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Fatalf("Cancel(unknown) = %v, want ErrNotFound", err)
	}
}

func (s *suite) cancelRunning(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 2})
	started, _ := blocker(t, q)
	stubbornIn := make(chan struct{})
	stubbornGo := make(chan struct{})
	q.Handle("stubborn", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		close(stubbornIn)
		<-stubbornGo // ignores its context
		return json.RawMessage(`1`), nil
	}))
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "block", MaxAttempts: 3})
	recv(t, started, "handler start")
	if err := q.Cancel(ctxT(t), id); err != nil {
		t.Fatalf("Cancel(running) = %v", err)
	}
	info, err := wait(t, q, id)
	if !errors.Is(err, jobqueue.ErrCanceled) || info.State != jobqueue.StateCanceled || info.Attempts != 1 {
		t.Fatalf("Wait = %v, state %s, attempts %d; want canceled after 1 attempt", err, info.State, info.Attempts)
	}

	id2 := submit(t, q, jobqueue.JobRequest{Type: "stubborn"})
	recv(t, stubbornIn, "stubborn start")
	if err := q.Cancel(ctxT(t), id2); err != nil {
		t.Fatalf("Cancel(stubborn) = %v", err)
	}
	if got := get(t, q, id2).State; got != jobqueue.StateRunning {
		t.Fatalf("state while the handler still runs = %s, want running", got)
	}
	close(stubbornGo)
	if info, err := wait(t, q, id2); !errors.Is(err, jobqueue.ErrCanceled) {
		t.Fatalf("Wait(stubborn) = %v (state %s), want canceled when its handler returns", err, info.State)
	}
}

func (s *suite) panics(t *testing.T) {
	var mu sync.Mutex
	var seen []error
	q := s.queue(t, jobqueue.Config{Workers: 1, OnError: func(job *jobqueue.Job, attempt int, err error) {
		mu.Lock()
		seen = append(seen, err)
		mu.Unlock()
	}})
	q.Handle("boom", jobqueue.HandlerFunc(panickingHandler))
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "boom", MaxAttempts: 2})
	info, err := wait(t, q, id)
	if !errors.Is(err, jobqueue.ErrFailed) || info.Attempts != 2 {
		t.Fatalf("Wait = %v, attempts %d; want failed after 2 attempts", err, info.Attempts)
	}
	for _, want := range []string{"panic", "kaboom", "panickingHandler", "goroutine"} {
		if !strings.Contains(info.LastError, want) {
			t.Errorf("LastError lacks %q:\n%s", want, info.LastError)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var pe *panics.Error
	if len(seen) != 2 || !errors.As(seen[0], &pe) || pe.Source != "jobqueue" || pe.Task != "boom" ||
		pe.Value != "kaboom" || len(pe.Stack) == 0 {
		t.Fatalf("OnError saw %v, want two *panics.Error from jobqueue, task boom, value kaboom, with a stack", seen)
	}
	var last *panics.Error // the final attempt's, whose error is stored
	if !errors.As(seen[1], &last) || info.LastError != last.Error()+"\n\n"+string(last.Stack) {
		t.Errorf("LastError is not the panic's message, a blank line and its stack:\n%s", info.LastError)
	}
	// The worker survived.
	waitAll(t, q, []string{submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(1)})})
}

func panickingHandler(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
	panic("kaboom")
}

func (s *suite) queueFull(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1, Capacity: 3})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	var ids []string
	for i := range 3 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i)}))
	}
	if _, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "rec", Payload: payload(3)}); !errors.Is(err, jobqueue.ErrQueueFull) {
		t.Fatalf("Submit over capacity = %v, want ErrQueueFull", err)
	}
	start(t, q)
	waitAll(t, q, ids)
	// Finished jobs free their room.
	waitAll(t, q, []string{submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(4)})})
}

func (s *suite) blockOnFull(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1, Capacity: 1, BlockOnFull: true})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	first := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(1)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "rec", Payload: payload(2)}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked Submit = %v, want context.DeadlineExceeded", err)
	}
	if st := q.Stats(); st.Pending != 1 || st.Submitted != 1 {
		t.Fatalf("after a timed-out Submit: pending %d submitted %d, want 1 and 1", st.Pending, st.Submitted)
	}
	done := make(chan error, 1)
	go func() {
		_, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "rec", Payload: payload(3)})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Submit returned %v while the queue was full", err)
	case <-time.After(20 * time.Millisecond):
	}
	if err := q.Cancel(ctxT(t), first); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, done, "unblocked Submit"); err != nil {
		t.Fatalf("Submit after room freed = %v", err)
	}
}

func (s *suite) shutdownDrain(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	var ids []string
	for i := range 30 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i)}))
	}
	start(t, q)
	if err := q.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := len(r.got()); got != 30 {
		t.Fatalf("drain ran %d jobs, want 30", got)
	}
	for _, id := range ids {
		if st := get(t, q, id).State; st != jobqueue.StateSucceeded {
			t.Fatalf("job %s is %s after drain", id, st)
		}
	}
	if st := q.Stats(); st.Left != 0 || st.Succeeded != 30 {
		t.Fatalf("Stats after drain: left %d succeeded %d", st.Left, st.Succeeded)
	}
	if _, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "rec"}); !errors.Is(err, jobqueue.ErrClosed) {
		t.Fatalf("Submit after Shutdown = %v, want ErrClosed", err)
	}
	if err := q.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("second Shutdown = %v", err)
	}
}

func (s *suite) shutdownLeave(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1, ShutdownPolicy: jobqueue.LeavePending})
	started, release := blocker(t, q)
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	start(t, q)
	b := submit(t, q, jobqueue.JobRequest{Type: "block"})
	recv(t, started, "blocker start")
	var ids []string
	for i := range 10 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i)}))
	}
	done := make(chan error, 1)
	go func() { done <- q.Shutdown(ctxT(t)) }()
	eventually(t, "Submit refused", func() bool {
		// An empty request is refused as invalid until the queue closes.
		_, err := q.Submit(ctxT(t), jobqueue.JobRequest{})
		return errors.Is(err, jobqueue.ErrClosed)
	})
	release()
	if err := recv(t, done, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if st := get(t, q, b).State; st != jobqueue.StateSucceeded {
		t.Fatalf("running job ended %s, want succeeded", st)
	}
	if n := len(r.got()); n != 0 {
		t.Fatalf("%d pending jobs ran, want none", n)
	}
	for _, id := range ids {
		if st := get(t, q, id).State; st != jobqueue.StatePending {
			t.Fatalf("left job is %s, want pending", st)
		}
	}
	if st := q.Stats(); st.Left != 10 {
		t.Fatalf("Stats.Left = %d, want 10", st.Left)
	}
}

func (s *suite) shutdownTimeout(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	started, _ := blocker(t, q)
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "block"})
	recv(t, started, "blocker start")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past its deadline = %v, want DeadlineExceeded", err)
	}
	if err := q.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	info := get(t, q, id)
	if info.State != jobqueue.StatePending || !strings.Contains(info.LastError, "shutdown") {
		t.Fatalf("interrupted job: state %s, last error %q; want pending, interrupted by shutdown", info.State, info.LastError)
	}
	if st := q.Stats(); st.Interrupted != 1 || st.Left != 1 {
		t.Fatalf("Stats: interrupted %d left %d, want 1 and 1", st.Interrupted, st.Left)
	}
}

func (s *suite) slowSubscriberFinals(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 2})
	q.Handle("chatty", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		for i := range 50 {
			if err := jobqueue.Progress(ctx, float64(i*2), "step"); err != nil {
				return nil, err
			}
		}
		return json.RawMessage(`"ok"`), nil
	}))
	sub := q.Subscribe(jobqueue.EventFilter{Buffer: 4})
	defer sub.Close()
	start(t, q)
	var ids []string
	for range 3 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "chatty"}))
	}
	waitAll(t, q, ids) // workers were never blocked by the unread subscription
	finals := map[string]bool{}
	eventually(t, "three final events", func() bool {
		select {
		case ev := <-sub.Events():
			if ev.Kind.Final() {
				finals[ev.JobID] = true
			}
		default:
		}
		return len(finals) == 3
	})
	if sub.Dropped() == 0 {
		t.Fatal("Dropped() = 0, want progress events dropped")
	}
	if sub.Err() != nil {
		t.Fatalf("Err() = %v, want nil", sub.Err())
	}
}

func (s *suite) slowSubscriberEnded(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 2})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	sub := q.Subscribe(jobqueue.EventFilter{Buffer: 4, Kinds: []jobqueue.EventKind{jobqueue.EventSucceeded}})
	defer sub.Close()
	start(t, q)
	var ids []string
	for i := range 40 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i)}))
	}
	waitAll(t, q, ids)
	n := 0
	for range sub.Events() { // closed once the buffered events are read
		n++
	}
	if !errors.Is(sub.Err(), jobqueue.ErrSlowSubscriber) {
		t.Fatalf("Err() = %v, want ErrSlowSubscriber", sub.Err())
	}
	if n < 4 || n > 8 {
		t.Fatalf("read %d events before the end, want the buffer and overflow (4-8)", n)
	}
}

func (s *suite) uniqueKey(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	a := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(1), UniqueKey: "report-42"})
	b := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(2), UniqueKey: "report-42"})
	other := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(3), UniqueKey: "report-43"})
	if a != b || a == other {
		t.Fatalf("ids %s %s %s: want the first two equal, the third different", a, b, other)
	}
	// Keys are per owner: another owner's same key is another job.
	mine := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(5), UniqueKey: "report-42", Owner: "alice"})
	if mine == a {
		t.Fatal("a UniqueKey matched another owner's job")
	}
	if again := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(6), UniqueKey: "report-42", Owner: "alice"}); again != mine {
		t.Fatalf("an owner's UniqueKey did not match its own active job: %s, want %s", again, mine)
	}
	start(t, q)
	waitAll(t, q, []string{a, other, mine})
	c := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(4), UniqueKey: "report-42"})
	if c == a {
		t.Fatal("a finished job's key still deduplicated")
	}
	waitAll(t, q, []string{c})
	got := r.got()
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 3, 4, 5}) {
		t.Fatalf("ran %v, want [1 3 4 5]", got)
	}
}

func (s *suite) callerID(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	id := q.NewID()
	if got := submit(t, q, jobqueue.JobRequest{ID: id, Type: "rec", Payload: payload(1)}); got != id {
		t.Fatalf("Submit returned %q, want the chosen ID %q", got, id)
	}
	// A repeated submission (a client retrying) adds nothing.
	if got, err := q.Submit(ctxT(t), jobqueue.JobRequest{ID: id, Type: "rec", Payload: payload(2)}); got != id || err != nil {
		t.Fatalf("Submit repeating an active job's ID = %q, %v; want %q, nil", got, err, id)
	}
	custom := submit(t, q, jobqueue.JobRequest{ID: "order-1234_a", Type: "rec", Payload: payload(3)})
	start(t, q)
	waitAll(t, q, []string{id, custom})
	if got, err := q.Submit(ctxT(t), jobqueue.JobRequest{ID: custom, Type: "rec", Payload: payload(4)}); got != custom || err != nil {
		t.Fatalf("Submit repeating a finished job's ID = %q, %v; want %q, nil while it is kept", got, err, custom)
	}
	if got := r.got(); len(got) != 2 {
		t.Fatalf("ran %v, want 2 jobs", got)
	}
	if st := q.Stats(); st.Submitted != 2 {
		t.Fatalf("Stats.Submitted = %d, want 2: repeated submissions are not counted", st.Submitted)
	}
}

func (s *suite) delayed(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	ran := make(chan time.Time, 1)
	jobqueue.HandleFunc(q, "later", func(ctx context.Context, _ any) (any, error) {
		ran <- time.Now()
		return nil, nil
	})
	start(t, q)
	runAt := time.Now().Add(80 * time.Millisecond)
	id := submit(t, q, jobqueue.JobRequest{Type: "later", RunAt: runAt})
	if info := get(t, q, id); info.State != jobqueue.StateScheduled || !info.NextRunAt.Equal(info.RunAt) {
		t.Fatalf("delayed job: state %s next run %v; want scheduled at %v", info.State, info.NextRunAt, runAt)
	}
	at := recv(t, ran, "delayed run")
	if at.Before(runAt) {
		t.Fatalf("job ran %v before its RunAt", runAt.Sub(at))
	}
	if _, err := wait(t, q, id); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) retentionCount(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1, Retention: jobqueue.Retention{MaxJobs: 5}})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	start(t, q)
	var ids []string
	for i := range 20 {
		id := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(i)})
		waitAll(t, q, []string{id})
		ids = append(ids, id)
	}
	all, err := q.List(ctxT(t), jobqueue.ListFilter{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || all[0].ID != ids[19] || all[4].ID != ids[15] {
		t.Fatalf("List kept %d jobs, want the last 5 newest first", len(all))
	}
	if _, err := q.Get(ctxT(t), ids[0]); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Fatalf("Get(oldest) = %v, want ErrNotFound", err)
	}
	if st := q.Stats(); st.Retained != 5 {
		t.Fatalf("Stats.Retained = %d, want 5", st.Retained)
	}
}

func (s *suite) retentionAge(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1, Retention: jobqueue.Retention{MaxAge: 30 * time.Millisecond}})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(1)})
	waitAll(t, q, []string{id})
	get(t, q, id)
	eventually(t, "the finished job to expire", func() bool {
		_, err := q.Get(ctxT(t), id)
		return errors.Is(err, jobqueue.ErrNotFound)
	})
	if st := q.Stats(); st.Retained != 0 {
		t.Fatalf("Stats.Retained = %d, want 0", st.Retained)
	}
}

func (s *suite) badPayload(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	type in struct {
		N int `json:"n"`
	}
	var runs atomic.Int32
	jobqueue.HandleFunc(q, "typed", func(ctx context.Context, v in) (int, error) {
		runs.Add(1)
		return v.N * 2, nil
	})
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "typed", Payload: json.RawMessage(`{"n":"seven"}`), MaxAttempts: 5})
	info, err := wait(t, q, id)
	if !errors.Is(err, jobqueue.ErrFailed) || info.Attempts != 1 || !strings.Contains(info.LastError, "bad payload") {
		t.Fatalf("Wait = %v, attempts %d, LastError %q; want an immediate bad-payload failure", err, info.Attempts, info.LastError)
	}
	if runs.Load() != 0 {
		t.Fatal("handler ran with a payload that did not decode")
	}
	if _, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "typed", Payload: json.RawMessage(`{"n":`)}); !errors.Is(err, jobqueue.ErrInvalidJob) {
		t.Fatalf("Submit(invalid JSON) = %v, want ErrInvalidJob", err)
	}
	ok := submit(t, q, jobqueue.JobRequest{Type: "typed", Payload: json.RawMessage(`{"n":21}`)})
	if info, err := wait(t, q, ok); err != nil || string(info.Result) != "42" {
		t.Fatalf("Wait = %v, result %s; want 42", err, info.Result)
	}
}

func (s *suite) eventsInOrder(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	jobqueue.HandleFunc(q, "steps", func(ctx context.Context, n int) (string, error) {
		for i := 1; i <= n; i++ {
			if err := jobqueue.Progress(ctx, float64(100*i/n), fmt.Sprintf("step %d", i)); err != nil {
				return "", err
			}
		}
		return "all done", nil
	})
	sub := q.Subscribe(jobqueue.EventFilter{})
	defer sub.Close()
	start(t, q)
	id := submit(t, q, jobqueue.JobRequest{Type: "steps", Payload: payload(4), Priority: jobqueue.High})
	var kinds []string
	var last jobqueue.Event
	for !last.Kind.Final() {
		last = recv(t, sub.Events(), "event")
		if last.JobID != id || last.Type != "steps" || last.Priority != jobqueue.High {
			t.Fatalf("event for the wrong job: %+v", last)
		}
		kinds = append(kinds, fmt.Sprintf("%s:%g", last.Kind, last.Progress))
	}
	want := []string{"queued:0", "started:0", "progress:25", "progress:50", "progress:75", "progress:100", "succeeded:0"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if string(last.Result) != `"all done"` || last.State != jobqueue.StateSucceeded {
		t.Fatalf("final event %+v", last)
	}
	info := get(t, q, id)
	if info.Progress != 100 || info.ProgressMessage != "step 4" || info.StartedAt.IsZero() || info.FinishedAt.Before(info.StartedAt) {
		t.Fatalf("stored job %+v", info)
	}
	if err := jobqueue.Progress(context.Background(), 1, "x"); !errors.Is(err, jobqueue.ErrNotInJob) {
		t.Fatalf("Progress outside a job = %v, want ErrNotInJob", err)
	}
}

func (s *suite) eventFilter(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "a", r.handle)
	jobqueue.HandleFunc(q, "b", r.handle)
	subB := q.Subscribe(jobqueue.EventFilter{Type: "b", Kinds: []jobqueue.EventKind{jobqueue.EventSucceeded}})
	defer subB.Close()
	a := submit(t, q, jobqueue.JobRequest{Type: "a", Payload: payload(1)})
	b := submit(t, q, jobqueue.JobRequest{Type: "b", Payload: payload(2)})
	subA := q.Subscribe(jobqueue.EventFilter{JobID: a})
	defer subA.Close()
	start(t, q)
	waitAll(t, q, []string{a, b})
	if ev := recv(t, subB.Events(), "b's event"); ev.JobID != b || ev.Kind != jobqueue.EventSucceeded {
		t.Fatalf("type subscription got %+v", ev)
	}
	for _, want := range []jobqueue.EventKind{jobqueue.EventStarted, jobqueue.EventSucceeded} {
		if ev := recv(t, subA.Events(), "a's event"); ev.JobID != a || ev.Kind != want {
			t.Fatalf("job subscription got %s for %s, want %s for %s", ev.Kind, ev.JobID, want, a)
		}
	}
	subA.Close()
	if _, open := <-subA.Events(); open {
		t.Fatal("channel open after Close")
	}
	select {
	case ev := <-subB.Events():
		t.Fatalf("type subscription got an extra event %+v", ev)
	default:
	}
}

func (s *suite) workerLimit(t *testing.T) {
	const workers = 3
	q := s.queue(t, jobqueue.Config{Workers: workers})
	var cur, high atomic.Int32
	jobqueue.HandleFunc(q, "busy", func(ctx context.Context, _ any) (any, error) {
		n := cur.Add(1)
		for {
			h := high.Load()
			if n <= h || high.CompareAndSwap(h, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
		cur.Add(-1)
		return nil, nil
	})
	var ids []string
	for range 60 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "busy"}))
	}
	start(t, q)
	waitAll(t, q, ids)
	if h := high.Load(); h < 2 || h > workers {
		t.Fatalf("high-water mark of running handlers = %d, want 2..%d", h, workers)
	}
}

func (s *suite) stats(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 2, MaxAttempts: 1})
	var r recorder
	jobqueue.HandleFunc(q, "ok", r.handle)
	q.Handle("bad", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		return nil, errors.New("bad")
	}))
	var ids []string
	for i := range 10 {
		ids = append(ids, submit(t, q, jobqueue.JobRequest{Type: "ok", Payload: payload(i), Priority: jobqueue.High}))
	}
	bad := submit(t, q, jobqueue.JobRequest{Type: "bad", Priority: jobqueue.Low})
	st := q.Stats()
	if st.Pending != 11 || st.Depth[jobqueue.High] != 10 || st.Depth[jobqueue.Low] != 1 || st.Submitted != 11 {
		t.Fatalf("before Start: pending %d depth %v submitted %d", st.Pending, st.Depth, st.Submitted)
	}
	start(t, q)
	waitAll(t, q, ids)
	if _, err := wait(t, q, bad); !errors.Is(err, jobqueue.ErrFailed) {
		t.Fatal(err)
	}
	st = q.Stats()
	if st.Succeeded != 10 || st.Failed != 1 || st.Pending != 0 || st.Types["ok"].Succeeded != 10 ||
		st.Types["bad"].Failed != 1 || st.Priorities[jobqueue.High].Succeeded != 10 ||
		st.Priorities[jobqueue.Low].Failed != 1 || st.Run.Count != 11 || st.Wait.Count != 11 ||
		st.Priorities[jobqueue.High].Wait.Count != 10 {
		t.Fatalf("Stats after run: %+v", st)
	}
	if st.Wait.P50 <= 0 || st.Wait.P99 < st.Wait.P50 || st.Wait.Max < st.Wait.P99 {
		t.Fatalf("wait quantiles not ordered: %+v", st.Wait)
	}
	if _, err := json.Marshal(st); err != nil {
		t.Fatalf("Stats does not encode to JSON: %v", err)
	}
}

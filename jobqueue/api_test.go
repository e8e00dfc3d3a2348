package jobqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/panics"
)

func newQueue(t *testing.T, cfg jobqueue.Config) *jobqueue.Queue {
	t.Helper()
	q, err := jobqueue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return q
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		v := recover()
		s, _ := v.(string)
		if !strings.HasPrefix(s, "jobqueue: ") || !strings.Contains(s, want) {
			t.Fatalf("panic %v, want one starting with \"jobqueue: \" and containing %q", v, want)
		}
	}()
	f()
}

func TestHandleRegistration(t *testing.T) {
	q := newQueue(t, jobqueue.Config{})
	h := jobqueue.HandlerFunc(noop)
	mustPanic(t, "empty job type", func() { q.Handle("", h) })
	mustPanic(t, "nil handler", func() { q.Handle("x", nil) })
	mustPanic(t, "nil handler", func() { q.Handle("x", jobqueue.HandlerFunc(nil)) })
	mustPanic(t, "nil handler func", func() { jobqueue.HandleFunc[int, int](q, "x", nil) })
	mustPanic(t, "nil middleware", func() { q.Use(nil) })
	q.Handle("x", h)
	mustPanic(t, "multiple registrations", func() { q.Handle("x", h) })
	mustPanic(t, "Use after Handle", func() { q.Use(func(h jobqueue.Handler) jobqueue.Handler { return h }) })
}

func TestMiddlewareOrder(t *testing.T) {
	q := newQueue(t, jobqueue.Config{Workers: 1})
	var mu sync.Mutex
	var trace []string
	mw := func(name string) jobqueue.Middleware {
		return func(next jobqueue.Handler) jobqueue.Handler {
			return jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
				mu.Lock()
				trace = append(trace, name+">")
				mu.Unlock()
				res, err := next.ProcessJob(ctx, job)
				mu.Lock()
				trace = append(trace, "<"+name)
				mu.Unlock()
				return res, err
			})
		}
	}
	q.Use(mw("outer"), mw("inner"))
	q.Handle("x", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		mu.Lock()
		trace = append(trace, "handler")
		mu.Unlock()
		return nil, nil
	}))
	q.Start()
	ctx := context.Background()
	id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "x"})
	if _, err := q.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(trace, " "); got != "outer> inner> handler <inner <outer" {
		t.Fatalf("trace %q", got)
	}
}

func TestConfigAndSubmitValidation(t *testing.T) {
	if _, err := jobqueue.New(jobqueue.Config{Capacity: -1}); err == nil {
		t.Fatal("New accepted a negative capacity")
	}
	if _, err := jobqueue.New(jobqueue.Config{AgingInterval: -time.Second}); err == nil {
		t.Fatal("New accepted a negative aging interval")
	}
	if _, err := jobqueue.New(jobqueue.Config{Workers: -1}); err == nil || !strings.Contains(err.Error(), "negative Workers") {
		t.Fatalf("New(Workers: -1) = %v, want an error about negative Workers", err)
	}
	if _, err := jobqueue.New(jobqueue.Config{Workers: 2, NoWorkers: true}); err == nil {
		t.Fatal("New accepted Workers with NoWorkers")
	}
	q := newQueue(t, jobqueue.Config{MaxPayload: 16})
	q.Handle("x", jobqueue.HandlerFunc(noop))
	if st := q.Stats(); st.Workers != runtime.GOMAXPROCS(0) {
		t.Fatalf("default workers %d, want GOMAXPROCS %d", st.Workers, runtime.GOMAXPROCS(0))
	}
	ctx := context.Background()
	for name, req := range map[string]jobqueue.JobRequest{
		"empty type":       {},
		"priority 10":      {Type: "x", Priority: 10},
		"priority -1":      {Type: "x", Priority: -1},
		"too large":        {Type: "x", Payload: []byte(`"01234567890123456789"`)},
		"not JSON":         {Type: "x", Payload: []byte(`{`)},
		"negative attempt": {Type: "x", MaxAttempts: -1},
	} {
		if _, err := q.Submit(ctx, req); !errors.Is(err, jobqueue.ErrInvalidJob) {
			t.Errorf("%s: Submit = %v, want ErrInvalidJob", name, err)
		}
	}
	if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "unknown"}); !errors.Is(err, jobqueue.ErrNoHandler) {
		t.Errorf("Submit(unknown type) = %v, want ErrNoHandler", err)
	}
}

func TestDefaultsResolved(t *testing.T) {
	q := newQueue(t, jobqueue.Config{MaxAttempts: 7, Timeout: time.Minute})
	q.Handle("x", jobqueue.HandlerFunc(noop))
	ctx := context.Background()
	a, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "x", Metadata: map[string]string{"user": "ana"}})
	b, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "x", Timeout: -1, MaxAttempts: 1})
	ia, _ := q.Get(ctx, a)
	ib, _ := q.Get(ctx, b)
	if ia.MaxAttempts != 7 || ia.Timeout != time.Minute || ia.Metadata["user"] != "ana" || ia.State != jobqueue.StatePending {
		t.Fatalf("defaults not applied: %+v", ia)
	}
	if ib.MaxAttempts != 1 || ib.Timeout != 0 {
		t.Fatalf("explicit values not kept: %+v", ib)
	}
	if a >= b {
		t.Fatalf("IDs not increasing: %s then %s", a, b)
	}
	if !strings.HasSuffix(a, q.Tag()) {
		t.Fatalf("ID %s does not end with the queue tag %s", a, q.Tag())
	}
}

func TestSubmitOnlyQueueAcceptsUnknownTypes(t *testing.T) {
	q := newQueue(t, jobqueue.Config{NoWorkers: true})
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	if n := q.Stats().Workers; n != 0 {
		t.Fatalf("Stats.Workers = %d with NoWorkers, want 0", n)
	}
	id, err := q.Submit(context.Background(), jobqueue.JobRequest{Type: "run-elsewhere"})
	if err != nil {
		t.Fatalf("Submit on a queue without workers = %v", err)
	}
	if info, _ := q.Get(context.Background(), id); info.State != jobqueue.StatePending {
		t.Fatalf("state %s, want pending", info.State)
	}
}

func TestLifecycle(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	q.Handle("x", jobqueue.HandlerFunc(noop))
	ctx := context.Background()
	left, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "x", RunAt: time.Now().Add(time.Hour)})
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); err != nil {
		t.Fatalf("second Start = %v", err)
	}
	waitErr := make(chan error, 1)
	go func() {
		_, err := q.Wait(ctx, left)
		waitErr <- err
	}()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := q.Shutdown(ctx); err != nil {
				t.Errorf("concurrent Shutdown: %v", err)
			}
		})
	}
	wg.Wait()
	if err := <-waitErr; !errors.Is(err, jobqueue.ErrClosed) {
		t.Fatalf("Wait on a job left by Shutdown = %v, want ErrClosed", err)
	}
	if err := q.Start(); !errors.Is(err, jobqueue.ErrClosed) {
		t.Fatalf("Start after Shutdown = %v, want ErrClosed", err)
	}
	sub := q.Subscribe(jobqueue.EventFilter{})
	if _, open := <-sub.Events(); open || !errors.Is(sub.Err(), jobqueue.ErrClosed) {
		t.Fatalf("Subscribe after Shutdown: open %v err %v", open, sub.Err())
	}
	sub.Close()
	if st := q.Stats(); st.Left != 1 || st.Scheduled != 1 {
		t.Fatalf("Stats after Shutdown: left %d scheduled %d, want 1 and 1", st.Left, st.Scheduled)
	}
	if _, err := q.Wait(ctx, "nope"); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Fatalf("Wait(unknown) = %v, want ErrNotFound", err)
	}
}

func TestWaitContext(t *testing.T) {
	q := newQueue(t, jobqueue.Config{})
	q.Handle("x", jobqueue.HandlerFunc(noop))
	id, _ := q.Submit(context.Background(), jobqueue.JobRequest{Type: "x"}) // not started: stays pending
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	info, err := q.Wait(ctx, id)
	if !errors.Is(err, context.DeadlineExceeded) || info.State != jobqueue.StatePending {
		t.Fatalf("Wait = %v, state %s; want DeadlineExceeded while pending", err, info.State)
	}
}

func TestWaitWithoutRetention(t *testing.T) {
	q := newQueue(t, jobqueue.Config{Retention: jobqueue.Retention{MaxJobs: -1}})
	jobqueue.HandleFunc(q, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	q.Start()
	ctx := context.Background()
	id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "double", Payload: []byte("21")})
	info, err := q.Wait(ctx, id)
	if err != nil || string(info.Result) != "42" {
		t.Fatalf("Wait = %v, result %s; want 42 from the final event", err, info.Result)
	}
	if _, err := q.Get(ctx, id); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Fatalf("Get with retention off = %v, want ErrNotFound", err)
	}
}

func TestJSONViews(t *testing.T) {
	info := jobqueue.JobInfo{
		Job:    jobqueue.Job{ID: "01", Type: "fib", Payload: json.RawMessage(`{"n":3}`), Priority: jobqueue.High, MaxAttempts: 3},
		State:  jobqueue.StateSucceeded,
		Result: json.RawMessage(`2`),
	}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"id":"01"`, `"type":"fib"`, `"payload":{"n":3}`, `"priority":6`, `"state":"succeeded"`, `"result":2`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JobInfo JSON %s lacks %s", b, want)
		}
	}
	if strings.Contains(string(b), "run_at") || strings.Contains(string(b), "started_at") {
		t.Errorf("zero times not omitted: %s", b)
	}
	var back jobqueue.JobInfo
	if err := json.Unmarshal(b, &back); err != nil || back.State != jobqueue.StateSucceeded || back.ID != "01" {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	ev := jobqueue.Event{Kind: jobqueue.EventProgress, JobID: "01", State: jobqueue.StateRunning, Progress: 50}
	b, _ = json.Marshal(ev)
	if !strings.Contains(string(b), `"type":"progress"`) || !strings.Contains(string(b), `"state":"running"`) {
		t.Fatalf("Event JSON %s", b)
	}
	var evBack jobqueue.Event
	if err := json.Unmarshal(b, &evBack); err != nil || evBack.Kind != jobqueue.EventProgress {
		t.Fatalf("event round trip: %v %+v", err, evBack)
	}
	for _, bad := range []string{`{"type":"exploded"}`, `{"event":"exploded"}`} {
		if err := json.Unmarshal([]byte(bad), &evBack); err == nil {
			t.Fatalf("unknown event kind %s decoded", bad)
		}
	}
	if jobqueue.High.String() != "high" || jobqueue.Priority(4).String() != "4" {
		t.Fatal("Priority.String")
	}
}

func TestPanicErrorUnwrap(t *testing.T) {
	sentinel := errors.New("wrapped in a panic")
	got := make(chan error, 1)
	q := newQueue(t, jobqueue.Config{Workers: 1, MaxAttempts: 1, OnError: func(_ *jobqueue.Job, _ int, err error) { got <- err }})
	q.Handle("p", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) { panic(sentinel) }))
	q.Start()
	id, _ := q.Submit(context.Background(), jobqueue.JobRequest{Type: "p"})
	info, _ := q.Wait(context.Background(), id)
	err := <-got
	var pe *panics.Error
	if !errors.As(err, &pe) || !errors.Is(err, sentinel) || jobqueue.IsPermanent(err) {
		t.Fatalf("OnError got %v; want a *panics.Error that unwraps to the panic value", err)
	}
	if pe.Source != "jobqueue" || pe.Task != "p" || pe.Value != sentinel {
		t.Fatalf("panics.Error{Source: %q, Task: %q, Value: %v}, want jobqueue, p, the sentinel", pe.Source, pe.Task, pe.Value)
	}
	// The stack starts at the goroutine header, then the frame that panicked.
	if lines := strings.SplitN(string(pe.Stack), "\n", 3); len(lines) < 3 ||
		!strings.HasPrefix(lines[0], "goroutine ") || !strings.Contains(lines[1], "TestPanicErrorUnwrap") {
		t.Fatalf("stack does not start at the panicking frame:\n%s", pe.Stack)
	}
	if want := pe.Error() + "\n\n" + string(pe.Stack); info.LastError != want {
		t.Fatalf("LastError:\n%s\nwant the message, a blank line and the stack:\n%s", info.LastError, want)
	}
}

func TestDecodePayload(t *testing.T) {
	type in struct{ N int }
	if _, err := jobqueue.DecodePayload[in](nil); !errors.Is(err, jobqueue.ErrBadPayload) || !jobqueue.IsPermanent(err) {
		t.Fatalf("empty payload into a struct: %v", err)
	}
	if p, err := jobqueue.DecodePayload[*in](nil); err != nil || p != nil {
		t.Fatalf("empty payload into a pointer: %v %v", p, err)
	}
	if _, err := jobqueue.DecodePayload[in]([]byte(`{"N":1} {"N":2}`)); !errors.Is(err, jobqueue.ErrBadPayload) {
		t.Fatalf("trailing data: %v", err)
	}
	if v, err := jobqueue.DecodePayload[in]([]byte(` {"N":5} `)); err != nil || v.N != 5 {
		t.Fatalf("valid payload: %v %v", v, err)
	}
}

// keeperBackend wraps the memory backend with leases that expire, counting
// the Queue's Extend calls, and captures the Notifier hooks.
type keeperBackend struct {
	jobqueue.Backend
	extends atomic.Int32
	hooks   jobqueue.Hooks
}

func (b *keeperBackend) LeaseDuration() time.Duration { return 15 * time.Millisecond }
func (b *keeperBackend) Notify(h jobqueue.Hooks)      { b.hooks = h }
func (b *keeperBackend) Fetch(ctx context.Context, dst []jobqueue.Lease, max int) ([]jobqueue.Lease, error) {
	n := len(dst)
	dst, err := b.Backend.Fetch(ctx, dst, max)
	for i := n; i < len(dst); i++ {
		dst[i] = &countingLease{dst[i], b}
	}
	return dst, err
}

type countingLease struct {
	jobqueue.Lease
	b *keeperBackend
}

func (l *countingLease) Extend(ctx context.Context) error {
	l.b.extends.Add(1)
	return l.Lease.Extend(ctx)
}

func TestLeaseKeeperAndNotifier(t *testing.T) {
	be := &keeperBackend{Backend: jobqueue.NewMemoryBackend()}
	q := newQueue(t, jobqueue.Config{Workers: 1, Backend: be})
	started := make(chan struct{})
	q.Handle("long", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	q.Start()
	sub := q.Subscribe(jobqueue.EventFilter{JobID: "remote-job"})
	defer sub.Close()
	ctx := context.Background()
	id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "long", MaxAttempts: 1})
	<-started
	deadline := time.Now().Add(10 * time.Second)
	for be.extends.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := be.extends.Load(); n < 2 {
		t.Fatalf("Extend called %d times while the handler ran, want >= 2", n)
	}
	// A cancel arriving from another process through the backend's hook.
	be.hooks.CancelRunning(id)
	info, err := q.Wait(ctx, id)
	if info.State != jobqueue.StateFailed && !errors.Is(err, jobqueue.ErrCanceled) {
		t.Fatalf("after CancelRunning: state %s err %v", info.State, err)
	}
	be.hooks.Publish(jobqueue.Event{Kind: jobqueue.EventSucceeded, JobID: "remote-job", State: jobqueue.StateSucceeded})
	select {
	case ev := <-sub.Events():
		if ev.JobID != "remote-job" {
			t.Fatalf("got %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("remote event not delivered")
	}
}

func TestShutdownWithAbandonedSubscription(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	q.Handle("x", jobqueue.HandlerFunc(noop))
	sub := q.Subscribe(jobqueue.EventFilter{Buffer: 1, Kinds: []jobqueue.EventKind{jobqueue.EventSucceeded}})
	q.Start()
	ctx := context.Background()
	for range 2 { // one final event fills the channel, the next is held
		id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "x"})
		q.Wait(ctx, id)
	}
	t0 := time.Now()
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("Shutdown took %v with an unread subscription", took)
	}
	n := 0
	for range sub.Events() {
		n++
	}
	if n != 1 || !errors.Is(sub.Err(), jobqueue.ErrClosed) {
		t.Fatalf("read %d events, Err %v; want the buffered one and ErrClosed", n, sub.Err())
	}
	sub.Close()
}

func TestRunAndCallerChosenID(t *testing.T) {
	q := newQueue(t, jobqueue.Config{Retention: jobqueue.Retention{MaxJobs: -1}})
	jobqueue.HandleFunc(q, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	q.Handle("fail", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		return nil, jobqueue.Permanent(errors.New("no"))
	}))
	q.Start()
	ctx := context.Background()
	// With no retention a finished job is gone at once: Run still returns
	// its result, because its wait was registered before the job existed.
	for i := range 200 {
		info, err := q.Run(ctx, jobqueue.JobRequest{Type: "double", Payload: []byte("21")})
		if err != nil || string(info.Result) != "42" || info.State != jobqueue.StateSucceeded {
			t.Fatalf("Run %d = %v, %s %s", i, err, info.State, info.Result)
		}
	}
	if _, err := q.Run(ctx, jobqueue.JobRequest{Type: "fail"}); !errors.Is(err, jobqueue.ErrFailed) {
		t.Fatalf("Run(failing) = %v, want ErrFailed", err)
	}
	if _, err := q.Run(ctx, jobqueue.JobRequest{Type: "nope"}); !errors.Is(err, jobqueue.ErrNoHandler) {
		t.Fatalf("Run(unknown type) = %v, want ErrNoHandler", err)
	}

	// Subscribe to a job before submitting it: no event is missed.
	id := q.NewID()
	sub := q.Subscribe(jobqueue.EventFilter{JobID: id})
	defer sub.Close()
	got, err := q.Submit(ctx, jobqueue.JobRequest{ID: id, Type: "double", Payload: []byte("1")})
	if err != nil || got != id {
		t.Fatalf("Submit with ID = %q, %v", got, err)
	}
	var kinds []string
	for ev := range sub.Events() {
		kinds = append(kinds, ev.Kind.String())
		if ev.Kind.Final() {
			break
		}
	}
	if strings.Join(kinds, ",") != "queued,started,succeeded" {
		t.Fatalf("events %v", kinds)
	}
	for _, bad := range []string{"has space", "dots.in.it", strings.Repeat("x", 65)} {
		if _, err := q.Submit(ctx, jobqueue.JobRequest{ID: bad, Type: "double"}); !errors.Is(err, jobqueue.ErrInvalidJob) {
			t.Errorf("Submit(ID %q) = %v, want ErrInvalidJob", bad, err)
		}
	}
}

package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// TestTwoProcessesShareAQueue runs two Queues on one queue name, as two
// processes would: B only submits and watches, A runs the jobs. B sees A's
// events, waits for A's results, cancels a job A runs, and shares unique
// keys with A.
func TestTwoProcessesShareAQueue(t *testing.T) {
	srv := startServer(t)
	opts := testOptions()
	ba, err := srv.Backend(opts...)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := srv.Backend(opts...)
	if err != nil {
		t.Fatal(err)
	}
	a := newQueue(t, ba, jobqueue.Config{Workers: 2})
	b := newQueue(t, bb, jobqueue.Config{NoWorkers: true})
	canceled := make(chan error, 1)
	a.Handle("block", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		<-ctx.Done()
		canceled <- ctx.Err()
		return nil, ctx.Err()
	}))
	jobqueue.HandleFunc(a, "echo", func(ctx context.Context, s string) (string, error) {
		if err := jobqueue.Progress(ctx, 50, "half"); err != nil {
			return "", err
		}
		return strings.ToUpper(s), nil
	})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	sub := b.Subscribe(jobqueue.EventFilter{})
	defer sub.Close()
	ctx := testCtx(t)

	id, err := b.Submit(ctx, jobqueue.JobRequest{Type: "echo", Payload: json.RawMessage(`"shared"`)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.Wait(ctx, id)
	if err != nil || string(info.Result) != `"SHARED"` || info.Worker != a.Tag() {
		t.Fatalf("Wait in the submitting process = %+v, %v; want SHARED run by %s", info, err, a.Tag())
	}
	var kinds []string
	for ev := range sub.Events() {
		if ev.JobID == id {
			kinds = append(kinds, ev.Kind.String())
		}
		if ev.Kind.Final() {
			break
		}
	}
	if got := strings.Join(kinds, ","); got != "queued,started,progress,succeeded" {
		t.Fatalf("events seen by the submitting process: %s", got)
	}

	id, err = b.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := b.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == jobqueue.StateRunning {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.Cancel(ctx, id); err != nil {
		t.Fatalf("Cancel from the other process: %v", err)
	}
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's context ended with %v, want canceled", err)
	}
	if info, err := b.Wait(ctx, id); !errors.Is(err, jobqueue.ErrCanceled) || info.State != jobqueue.StateCanceled {
		t.Fatalf("Wait(canceled) = %s, %v", info.State, err)
	}

	u1, err := a.Submit(ctx, jobqueue.JobRequest{Type: "block", UniqueKey: "nightly", RunAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	u2, err := b.Submit(ctx, jobqueue.JobRequest{Type: "block", UniqueKey: "nightly"})
	if err != nil || u2 != u1 {
		t.Fatalf("unique key across processes: %s then %s (%v)", u1, u2, err)
	}
	if err := b.Cancel(ctx, u1); err != nil {
		t.Fatal(err)
	}
}

// TestDeadLetters checks that a job failing for good is kept in the
// dead-letter stream with its error.
func TestDeadLetters(t *testing.T) {
	srv := startServer(t)
	be, err := srv.Backend(testOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, be, jobqueue.Config{Workers: 1, RetryDelay: time.Millisecond})
	q.Handle("doomed", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		return nil, errors.New("disk on fire")
	}))
	q.Handle("fine", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		return nil, nil
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	bad, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "doomed", MaxAttempts: 2})
	good, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "fine"})
	if _, err := q.Wait(ctx, bad); !errors.Is(err, jobqueue.ErrFailed) {
		t.Fatalf("Wait(doomed) = %v", err)
	}
	if _, err := q.Wait(ctx, good); err != nil {
		t.Fatal(err)
	}
	dead, err := be.DeadLetters(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != bad || dead[0].Attempts != 2 || !strings.Contains(dead[0].LastError, "disk on fire") {
		t.Fatalf("dead letters = %+v, want the doomed job after 2 attempts", dead)
	}
}

// TestOptions checks option validation.
func TestOptions(t *testing.T) {
	for _, opts := range [][]jetstream.Option{
		{jetstream.WithName("has.dot")},
		{jetstream.WithName("")},
		{jetstream.WithAckWait(time.Millisecond)},
		{jetstream.WithReplicas(0)},
		{jetstream.WithPollInterval(0)},
		{jetstream.WithListen("nonsense")},
	} {
		if s, err := jetstream.NewServer(t.TempDir(), opts...); err == nil {
			s.Shutdown()
			t.Errorf("NewServer accepted %d options that should fail", len(opts))
		}
	}
	if _, err := jetstream.Connect("nats://127.0.0.1:1", jetstream.WithNATSOptions()); err == nil {
		t.Error("Connect to a closed port succeeded")
	}
}

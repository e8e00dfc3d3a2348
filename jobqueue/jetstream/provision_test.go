package jetstream

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corework/corework/jobqueue"
)

// TestRetryingLostReply: a provisioning request whose reply never comes
// (a cluster electing a leader drops it) is sent again after one attempt's
// timeout, instead of waiting for Open's whole deadline; one refused for
// good is not.
func TestRetryingLostReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	calls := 0
	start := time.Now()
	err := retrying(ctx, 200*time.Millisecond, func(actx context.Context) error {
		calls++
		if calls < 3 {
			<-actx.Done() // no reply
			return actx.Err()
		}
		return nil
	})
	if took := time.Since(start); err != nil || calls != 3 || took > 5*time.Second {
		t.Fatalf("after two lost replies: err %v, %d calls, %v", err, calls, took)
	}
	calls = 0
	refused := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeBadRequest, Description: "bad"}
	if err := retrying(ctx, 200*time.Millisecond, func(context.Context) error { calls++; return refused }); !errors.Is(err, refused) || calls != 1 {
		t.Fatalf("a request refused for good: err %v after %d calls, want one call", err, calls)
	}
	// The outer deadline still ends it.
	short, cancelShort := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelShort()
	start = time.Now()
	err = retrying(short, 200*time.Millisecond, func(actx context.Context) error { <-actx.Done(); return actx.Err() })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("at the outer deadline: %v after %v", err, time.Since(start))
	}
}

func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("creating stream: %w", nats.ErrTimeout), true},
		{nats.ErrNoResponders, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse}, false},
		{context.Canceled, false},
		{errors.New("insufficient resources"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestBehind: behind says a level holds jobs its consumer has not
// delivered, from the stream's sequences rather than the consumer's
// pending count, and stops saying it once they are fetched.
func TestBehind(t *testing.T) {
	b, q := submitOnlyQueue(t, WithName("behind"), WithAckWait(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if b.disp.behind() {
		t.Fatal("an empty queue is behind")
	}
	for _, p := range []jobqueue.Priority{jobqueue.Low, jobqueue.Critical} {
		if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "x", Priority: p}); err != nil {
			t.Fatal(err)
		}
	}
	b.disp.heldSince = time.Time{}
	if !b.disp.behind() {
		t.Fatal("two stored jobs, none delivered: not behind")
	}
	var leases []jobqueue.Lease
	for len(leases) < 2 && ctx.Err() == nil {
		fctx, fcancel := context.WithTimeout(ctx, time.Second)
		leases, _ = b.Fetch(fctx, leases, 2)
		fcancel()
	}
	b.disp.heldSince = time.Time{}
	if len(leases) != 2 || b.disp.behind() {
		t.Fatalf("after fetching %d jobs: behind %v", len(leases), b.disp.behind())
	}
	// It holds polls back for maxHold at most.
	b.disp.heldSince = time.Now().Add(-maxHold - time.Second)
	if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "x"}); err != nil {
		t.Fatal(err)
	}
	if b.disp.behind() {
		t.Error("behind past maxHold")
	}
}

// TestPollAnsweredByALaterRound: a request that becomes a poll while a
// round of pulls is under way (which may not have looked at every level)
// is answered by the next round, not by that one.
func TestPollAnsweredByALaterRound(t *testing.T) {
	d := &dispatcher{}
	d.init(nil)
	d.round = 7
	r := &fetchReq{max: 1, done: make(chan struct{})}
	d.reqs = []*fetchReq{r}
	d.toPoll(r) // during round 7
	d.distribute(nil)
	select {
	case <-r.done:
		t.Fatal("answered by the round under way when it became a poll")
	default:
	}
	d.round++ // the next round begins, and sees the poll
	d.distribute(nil)
	select {
	case <-r.done:
	default:
		t.Fatal("not answered by the round after")
	}
}

// submitOnlyQueue starts an embedded server and a Queue without workers on
// it (a backend with opts), both stopped when the test ends.
func submitOnlyQueue(t *testing.T, opts ...Option) (*Backend, *jobqueue.Queue) {
	t.Helper()
	srv, err := NewServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b, err := srv.Backend(opts...)
	if err != nil {
		t.Fatal(err)
	}
	q, err := jobqueue.New(jobqueue.Config{Backend: b, NoWorkers: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Shutdown(context.Background()) })
	return b, q
}

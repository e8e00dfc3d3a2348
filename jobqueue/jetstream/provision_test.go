package jetstream

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

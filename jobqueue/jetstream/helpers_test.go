package jetstream_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// startServer starts an embedded server in a temporary directory and stops
// it when the test ends.
func startServer(t testing.TB, opts ...jetstream.Option) *jetstream.Server {
	t.Helper()
	s, err := jetstream.NewServer(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

var names atomic.Int64

// uniqueName returns a queue name not used before in this test binary.
func uniqueName() string { return fmt.Sprintf("t%d", names.Add(1)) }

// testOptions are short leases and polls for tests.
func testOptions(extra ...jetstream.Option) []jetstream.Option {
	return append([]jetstream.Option{
		jetstream.WithName(uniqueName()),
		jetstream.WithAckWait(time.Second),
		jetstream.WithPollInterval(50 * time.Millisecond),
	}, extra...)
}

func newQueue(t testing.TB, b jobqueue.Backend, cfg jobqueue.Config) *jobqueue.Queue {
	t.Helper()
	cfg.Backend = b
	q, err := jobqueue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return q
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

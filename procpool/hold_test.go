package procpool

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"
)

// napTask works for d: short naps busy (so the handler time the worker
// reports is close to d), long ones asleep.
var napTask = Register("test.nap", func(_ context.Context, d time.Duration) (time.Duration, error) {
	start := time.Now()
	if d >= time.Millisecond {
		time.Sleep(d)
	}
	for time.Since(start) < d {
	}
	return d, nil
})

// firstReply streams naps through p, one request each, and returns how
// long the first result (input 0) took to reach its caller; it fails t
// unless every input comes back.
func firstReply(t *testing.T, p *Pool, naps []time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var first time.Duration
	n := 0
	for res, err := range napTask.Stream(context.Background(), p, slices.Values(naps), WithChunkSize(1)) {
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			first = time.Since(start)
			if res.Index != 0 {
				t.Fatalf("first result is input %d, want 0", res.Index)
			}
		}
		n++
	}
	if n != len(naps) {
		t.Fatalf("%d results, want %d", n, len(naps))
	}
	t.Logf("first reply after %v, all after %v", first, time.Since(start))
	return first
}

func onePool(t *testing.T) *Pool {
	p, err := New(WithWorkers(1), WithOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestHeldReplyReachesParent: the parent sleeps until the worker has made
// all but the last reply of its window (see ring), so a task that runs far
// longer than its estimate would keep the replies made before it from
// their callers; the worker wakes the parent after holdMax instead.
func TestHeldReplyReachesParent(t *testing.T) {
	p := onePool(t)
	// Teach the pool that naps take about 50 us: it then sends the worker
	// all four naps below at once and waits for three replies.
	for range 50 {
		if _, err := napTask.Call(context.Background(), p, 50*time.Microsecond); err != nil {
			t.Fatal(err)
		}
	}
	long := 2 * time.Second
	if first := firstReply(t, p, []time.Duration{50 * time.Microsecond, long, 50 * time.Microsecond, 50 * time.Microsecond}); first > long/2 {
		t.Fatalf("the first reply reached its caller after %v: it waited for the %v task behind it", first, long)
	}
}

// TestShortReplyNotHeldByLongTask: a tiny task's reply must not wait in the
// worker's reply batch while the long task queued behind it runs: the two
// are sent together, the worker reads both, and the first caller's answer
// is ready in microseconds.
func TestShortReplyNotHeldByLongTask(t *testing.T) {
	long := 2 * time.Second
	if first := firstReply(t, onePool(t), []time.Duration{0, long}); first > long/2 {
		t.Fatalf("the tiny task's reply reached its caller after %v: it waited for the %v task behind it", first, long)
	}
}

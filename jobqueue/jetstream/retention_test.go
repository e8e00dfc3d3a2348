package jetstream

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestRetentionCountSlowAcks is the conformance suite's RetentionCount with
// the finisher's acks late, as on a loaded machine: finished jobs whose
// messages are still in JOBS (their final state entries speak for them)
// while DONE already holds MaxJobs newer records. List and Get must still
// keep only the newest MaxJobs finished jobs.
func TestRetentionCountSlowAcks(t *testing.T) {
	// 20 jobs: the last acks lag several jobs behind.
	q := slowAckQueue(t, "slowacks", 30*time.Millisecond, jobqueue.Config{Workers: 1, Retention: jobqueue.Retention{MaxJobs: 5}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []string
	for i := range 20 {
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "rec", Payload: fmt.Appendf(nil, "%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	all, err := q.List(ctx, jobqueue.ListFilter{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || all[0].ID != ids[19] || all[4].ID != ids[15] {
		got := make([]int, 0, len(all))
		for _, info := range all {
			for i, id := range ids {
				if id == info.ID {
					got = append(got, i)
				}
			}
		}
		t.Fatalf("List kept jobs %v, want the last 5 newest first", got)
	}
	for _, i := range []int{0, 10, 14} {
		if _, err := q.Get(ctx, ids[i]); !errors.Is(err, jobqueue.ErrNotFound) {
			t.Errorf("Get(job %d) = %v, want ErrNotFound", i, err)
		}
	}
	for _, i := range []int{15, 19} {
		if _, err := q.Get(ctx, ids[i]); err != nil {
			t.Errorf("Get(job %d): %v", i, err)
		}
	}
}

// slowAckQueue starts an embedded server and a queue on it named name,
// configured by cfg, whose finisher delays each ack by delay (as a loaded
// machine does), with a started "rec" handler that returns its int
// payload. Everything stops when the test ends.
func slowAckQueue(t *testing.T, name string, delay time.Duration, cfg jobqueue.Config) *jobqueue.Queue {
	t.Helper()
	srv, err := NewServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	be, err := srv.Backend(WithName(name), WithPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	be.fin.ackDelay = delay
	cfg.Backend = be
	q, err := jobqueue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Shutdown(context.Background()) })
	jobqueue.HandleFunc(q, "rec", func(ctx context.Context, n int) (int, error) { return n, nil })
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	return q
}

package jetstream_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// ticks records the IDs of the jobs that "tick" handlers ran, in any of
// several queues.
type ticks struct {
	mu  sync.Mutex
	ids []string
}

func (r *ticks) handler() jobqueue.Handler {
	return jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		r.mu.Lock()
		r.ids = append(r.ids, job.ID)
		r.mu.Unlock()
		return nil, nil
	})
}

func (r *ticks) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// scheduledQueue connects a queue named name to url, with schedule s and a
// "tick" handler recording into r, and starts it. stop shuts it down.
func scheduledQueue(t *testing.T, url, name string, s jobqueue.Schedule, r *ticks) (stop func()) {
	t.Helper()
	b, err := jetstream.Connect(url, jetstream.WithName(name), jetstream.WithAckWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q, err := jobqueue.New(jobqueue.Config{Backend: b, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	q.Handle("tick", r.handler())
	if err := q.Schedule(s); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := q.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitTicks waits until r has at least n IDs, or a few seconds.
func waitTicks(r *ticks, n int) {
	for deadline := time.Now().Add(5 * time.Second); len(r.list()) < n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// TestScheduleOncePerTick: three worker processes (this test binary,
// re-executed) on one JetStream server register the same one-second
// schedule and run for 5 s: each tick is one job, run once: 5 or 6 jobs,
// not 15.
func TestScheduleOncePerTick(t *testing.T) {
	srv := startServer(t, jetstream.WithListen("127.0.0.1:0"))
	name := uniqueName()
	var workers []*worker
	var start time.Time // once the first process runs its schedule
	for i := range 3 {
		workers = append(workers, startWorker(t, "tick", srv.ClientURL(), name))
		if i == 0 {
			start = time.Now()
		}
	}
	// Five seconds of ticks, and a little for the last one's Submit
	// before Shutdown refuses it.
	time.Sleep(time.Until(start.Add(5300 * time.Millisecond)))
	var ids []string
	perProcess := make([]int, len(workers))
	for _, w := range workers {
		w.stdin.Close() // all three stop at once
	}
	for i, w := range workers {
		for _, l := range w.stop(t) {
			if id, ok := strings.CutPrefix(l, "RAN "); ok {
				ids = append(ids, id)
				perProcess[i]++
			} else if strings.HasPrefix(l, "ERROR") {
				t.Errorf("worker %s: %s", w.tag, l)
			}
		}
		if err := w.cmd.Wait(); err != nil {
			t.Errorf("worker %s exited: %v", w.tag, err)
		}
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("job %s ran twice", id)
		}
		seen[id] = true
		if !strings.HasPrefix(id, "report-") {
			t.Errorf("job %s is not a tick's", id)
		}
	}
	if len(seen) < 5 || len(seen) > 6 {
		t.Fatalf("%d jobs in 5 s from three processes on a one-second schedule, want 5 or 6: %v", len(seen), ids)
	}
	t.Logf("three processes, 5 s, one-second schedule: %d jobs, run once each (per process %v): %v", len(seen), perProcess, ids)
}

// TestScheduleCatchUpAfterOutage: a two-second schedule runs, then every
// process stops for 5-7 s (two or three ticks fall with no process
// running); two processes start again at once: the latest missed tick is
// submitted once, at start (before the next regular tick), and the
// schedule goes on.
func TestScheduleCatchUpAfterOutage(t *testing.T) {
	srv := startServer(t, jetstream.WithListen("127.0.0.1:0"))
	name := uniqueName()
	s := jobqueue.Schedule{Name: "nightly", Every: 2 * time.Second, Job: jobqueue.JobRequest{Type: "tick"}}
	var before ticks
	stop := scheduledQueue(t, srv.ClientURL(), name, s, &before)
	waitTicks(&before, 1)
	stop()
	if len(before.list()) == 0 {
		t.Fatal("no tick ran before the outage")
	}
	down := time.Now()
	// Back at least 4.5 s later, 0.6 s into a 2 s period, so that the
	// next regular tick is 1.4 s away when the catch-up runs.
	back := down.Add(4500 * time.Millisecond).Truncate(2 * time.Second).Add(2600 * time.Millisecond)
	time.Sleep(time.Until(back))
	restart := time.Now()
	latest := restart.Truncate(2 * time.Second) // the latest tick of the outage
	var after ticks
	scheduledQueue(t, srv.ClientURL(), name, s, &after)
	scheduledQueue(t, srv.ClientURL(), name, s, &after)
	waitTicks(&after, 1)
	time.Sleep(200 * time.Millisecond) // a second catch-up job would show by now
	caught := after.list()
	if len(caught) != 1 || caught[0] != "nightly-"+latest.UTC().Format("20060102T150405Z") {
		t.Fatalf("after the outage (down at %v, back at %v): ran %v, want the latest missed tick %v once",
			down.Format("15:04:05.000"), restart.Format("15:04:05.000"), caught, latest.UTC().Format("15:04:05"))
	}

	// The schedule goes on: the next tick runs once too.
	waitTicks(&after, 2)
	time.Sleep(300 * time.Millisecond)
	if ids := after.list(); len(ids) != 2 || ids[1] == ids[0] {
		t.Fatalf("after the catch-up: %v, want one more tick", ids)
	}
	t.Logf("before the outage %v; caught up %v at start; then %v", before.list(), caught, after.list()[1:])
}

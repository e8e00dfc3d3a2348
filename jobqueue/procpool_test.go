package jobqueue_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/panics"
	"github.com/corework/corework/procpool"
)

// Tasks for the procpool adapter, registered at initialization so the test
// binary's worker processes have them too.
var (
	procSquare = procpool.Register("jobqueue_test.square", func(_ context.Context, n int) (int, error) { return n * n, nil })
	procSpin   = procpool.Register("jobqueue_test.spin", func(context.Context, int) (int, error) {
		for n := 0; ; n++ { // ignores its context: only killing the process stops it
			_ = n
		}
	})
	procPanic = procpool.Register("jobqueue_test.panic", func(context.Context, int) (int, error) { panic("in the worker") })
	// procPID sleeps ms milliseconds and says which process ran it.
	procPID = procpool.Register("jobqueue_test.pid", func(_ context.Context, ms int) (int, error) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return os.Getpid(), nil
	})
)

// TestAutoscaleProcPool: a queue that autoscales between 1 and 3 workers
// resizes the procpool pool its handler feeds through OnResize. A burst of
// 60 jobs of 40 ms grows the pool to 3 processes, and the jobs run on 3 of
// them at once; after the burst both return to 1, and every job succeeded
// once.
func TestAutoscaleProcPool(t *testing.T) {
	const jobs = 60
	pool, err := procpool.New(procpool.WithWorkers(1), procpool.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	var (
		mu         sync.Mutex
		resizeErrs []error
		sizes      []int
	)
	q := newQueue(t, jobqueue.Config{
		Autoscale: &jobqueue.Autoscale{Min: 1, Max: 3, Interval: 20 * time.Millisecond, Target: 100 * time.Millisecond,
			Cooldown: 300 * time.Millisecond, OnResize: func(n int) {
				err := pool.Resize(n)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					resizeErrs = append(resizeErrs, err)
				}
				sizes = append(sizes, pool.Workers())
			}},
	})
	q.Handle("pid", jobqueue.ProcPoolHandler(procPID, pool))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []string
	for range jobs {
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "pid", Payload: []byte("40")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Which processes ran jobs while the pool had 3 of them.
	pids := map[string]bool{}
	for _, id := range ids {
		info, err := q.Wait(ctx, id)
		if err != nil || info.State != jobqueue.StateSucceeded || info.Attempts != 1 {
			t.Fatalf("job %s: %+v, %v", id, info, err)
		}
		pids[string(info.Result)] = true
	}
	for q.WorkerCount() != 1 || pool.Workers() != 1 || pool.Stats().Alive != 1 {
		if ctx.Err() != nil {
			t.Fatalf("after the burst: queue %d workers, pool %+v", q.WorkerCount(), pool.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resizeErrs) > 0 {
		t.Errorf("Resize: %v", resizeErrs)
	}
	if !slices.Contains(sizes, 3) || sizes[len(sizes)-1] != 1 {
		t.Errorf("pool sizes after each change %v: want a rise to 3 and a return to 1", sizes)
	}
	if len(pids) < 3 {
		t.Errorf("jobs ran in %d processes, want at least 3", len(pids))
	}
	if st := pool.Stats(); st.Crashes != 0 || st.Completed != jobs {
		t.Errorf("pool stats %+v", st)
	}
	t.Logf("pool sizes %v; jobs ran in %d processes", sizes, len(pids))
}

func TestProcPoolHandler(t *testing.T) {
	pool, err := procpool.New(procpool.WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := pool.Shutdown(ctx); err != nil {
			t.Errorf("pool Shutdown: %v", err)
		}
	})
	var mu sync.Mutex
	var errs []error
	q := newQueue(t, jobqueue.Config{Workers: 2, MaxAttempts: 1, OnError: func(_ *jobqueue.Job, _ int, err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}})
	q.Handle("square", jobqueue.ProcPoolHandler(procSquare, pool))
	q.Handle("spin", jobqueue.ProcPoolHandler(procSpin, pool))
	q.Handle("panic", jobqueue.ProcPoolHandler(procPanic, pool))
	q.Start()
	ctx := context.Background()
	run := func(typ, payload string, timeout time.Duration) (jobqueue.JobInfo, error) {
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: typ, Payload: []byte(payload), Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return q.Wait(wctx, id)
	}

	if info, err := run("square", "12", 0); err != nil || string(info.Result) != "144" {
		t.Fatalf("square: %v, result %s", err, info.Result)
	}

	t0 := time.Now()
	info, err := run("spin", "0", 100*time.Millisecond)
	if !errors.Is(err, jobqueue.ErrFailed) || !strings.Contains(info.LastError, "deadline exceeded") {
		t.Fatalf("spin: %v, last error %q; want a timeout failure", err, info.LastError)
	}
	if took := time.Since(t0); took > 10*time.Second {
		t.Fatalf("the spinning task held its job for %v after a 100ms timeout", took)
	}
	// The killed worker was replaced.
	if info, err := run("square", "7", 0); err != nil || string(info.Result) != "49" {
		t.Fatalf("square after the kill: %v, result %s", err, info.Result)
	}

	info, err = run("panic", "1", 0)
	if !errors.Is(err, jobqueue.ErrFailed) || !strings.Contains(info.LastError, "in the worker") {
		t.Fatalf("panic: %v, last error %q", err, info.LastError)
	}
	if _, err := run("square", `"twelve"`, 0); !errors.Is(err, jobqueue.ErrFailed) {
		t.Fatalf("bad payload: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	found := false
	for _, e := range errs {
		var pe *panics.Error
		if errors.As(e, &pe) {
			// procpool's own error, passed through: not wrapped in a second
			// panic error by the jobqueue side.
			if pe.Source != "procpool" || pe.Task != "jobqueue_test.panic" || len(pe.Stack) == 0 {
				t.Fatalf("panic error %#v, want procpool's for task jobqueue_test.panic with the worker's stack", pe)
			}
			if e != error(pe) {
				t.Fatalf("OnError got %T wrapping the *panics.Error, want it as it is", e)
			}
			if !strings.Contains(info.LastError, pe.Error()+"\n\n") {
				t.Fatalf("LastError lacks the panic's message and stack:\n%s", info.LastError)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no *panics.Error among %v", errs)
	}
}

package jobqueue_test

import (
	"context"
	"errors"
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
)

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

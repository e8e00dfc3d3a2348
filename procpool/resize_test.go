package procpool_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/procpool"
)

// TestResize grows a pool while calls run, then shrinks it under calls
// that are running on the workers it removes: every call returns its
// result (a removed worker finishes what it was sent), the pool ends with
// the asked number of processes, and the removed ones exit (TestMain
// fails the package if any is left behind).
func TestResize(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	if err := p.Resize(3); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Workers != 3 || st.Alive != 3 || len(st.PerWorker) != 3 {
		t.Fatalf("after Resize(3): %+v", st)
	}
	pids := map[int]bool{}
	for _, w := range p.Stats().PerWorker {
		pids[w.PID] = true
	}
	if len(pids) != 3 {
		t.Fatalf("worker PIDs %v, want 3 distinct", pids)
	}

	// Six 200 ms calls on three workers: two each, some running on the
	// workers about to go.
	const calls = 6
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Go(func() {
			_, err := sleepTask.Call(ctx, p, 200*time.Millisecond)
			errs <- err
		})
	}
	waitStats(t, p, func(st procpool.Stats) bool { return st.InFlight+st.Queued == calls && st.InFlight >= 3 })
	if err := p.Resize(1); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Workers != 1 || len(st.PerWorker) != 1 {
		t.Fatalf("after Resize(1): %+v", st)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("call across the shrink: %v", err)
		}
	}
	st := p.Stats()
	if st.Crashes != 0 || st.Restarts != 0 || st.Completed != calls {
		t.Errorf("after the shrink: %+v", st)
	}
	// The pool still works, on one worker, and can grow again.
	if n, err := double.Call(ctx, p, 21); err != nil || n != 42 {
		t.Fatalf("Call after the shrink = %d, %v", n, err)
	}
	if err := p.Resize(2); err != nil {
		t.Fatal(err)
	}
	waitAlive(t, p, 2)
	if out, err := double.Map(ctx, p, ints(1000), procpool.WithChunkSize(1)); err != nil || len(out) != 1000 || out[999] != 1998 {
		t.Fatalf("Map after growing again: %d results, %v", len(out), err)
	}
}

// TestResizeErrors: a count below one is refused; after Shutdown or Close,
// Resize fails with ErrClosed and starts nothing.
func TestResizeErrors(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	for _, n := range []int{0, -1} {
		if err := p.Resize(n); err == nil {
			t.Errorf("Resize(%d) accepted", n)
		}
	}
	if err := p.Resize(1); err != nil {
		t.Errorf("Resize to the same count: %v", err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Resize(2); !errors.Is(err, procpool.ErrClosed) {
		t.Errorf("Resize after Shutdown: %v", err)
	}
	if st := p.Stats(); st.Alive != 0 {
		t.Errorf("after Shutdown and Resize: %+v", st)
	}
	q := newPool(t, procpool.WithWorkers(1))
	q.Close()
	if err := q.Resize(2); !errors.Is(err, procpool.ErrClosed) {
		t.Errorf("Resize after Close: %v", err)
	}
}

// TestResizeRace resizes up and down while calls run and Close ends it:
// no call is lost (each returns a result or ErrClosed), and no process or
// goroutine is left.
func TestResizeRace(t *testing.T) {
	p, err := procpool.New(procpool.WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n, err := double.Call(ctx, p, i)
				if err != nil && !errors.Is(err, procpool.ErrClosed) {
					t.Errorf("Call: %v", err)
					return
				}
				if err == nil && n != 2*i {
					t.Errorf("Call(%d) = %d", i, n)
				}
			}
		})
	}
	for i := range 12 {
		if err := p.Resize(1 + i%3); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(stop)
	}()
	// Resize and Close at once: Resize either starts its workers before
	// Close kills them or fails with ErrClosed.
	rerr := make(chan error, 1)
	go func() { rerr <- p.Resize(3) }()
	p.Close()
	if err := <-rerr; err != nil && !errors.Is(err, procpool.ErrClosed) {
		t.Errorf("Resize during Close: %v", err)
	}
	wg.Wait()
	if st := p.Stats(); st.Alive != 0 {
		t.Errorf("after Close: %+v", st)
	}
}

package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/panics"
)

func TestGroupFirstErrorCancels(t *testing.T) {
	p := New(2)
	defer p.Close()
	g := p.Group(context.Background())
	boom := errors.New("boom")
	var canceled atomic.Int64
	g.Go(func(ctx context.Context) error { return boom })
	for i := 0; i < 5; i++ {
		g.Go(func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				canceled.Add(1)
				return ctx.Err()
			case <-time.After(5 * time.Second):
				return nil
			}
		})
	}
	if err := g.Wait(); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, want boom", err)
	}
	if canceled.Load() == 0 {
		t.Fatal("no task saw the group's context end after the first error")
	}
	if g.Context().Err() == nil {
		t.Fatal("group context alive after Wait")
	}
}

func TestGroupCollectErrors(t *testing.T) {
	p := New(2)
	defer p.Close()
	g := p.Group(context.Background(), WithCollectErrors())
	var ran atomic.Int64
	for i := 0; i < 6; i++ {
		g.Go(func(ctx context.Context) error {
			ran.Add(1)
			if i%2 == 0 {
				return fmt.Errorf("task %d", i)
			}
			return nil
		})
	}
	err := g.Wait()
	if ran.Load() != 6 {
		t.Fatalf("%d of 6 tasks ran", ran.Load())
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 3 {
		t.Fatalf("Wait = %v, want 3 joined errors", err)
	}
}

func TestGroupTaskTimeoutAndPanic(t *testing.T) {
	p := New(2)
	defer p.Close()
	g := p.Group(context.Background(), WithTaskTimeout(10*time.Millisecond), WithCollectErrors())
	g.Go(func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	g.Go(func(ctx context.Context) error { panic("group boom") })
	err := g.Wait()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want DeadlineExceeded among errors", err)
	}
	var pe *panics.Error
	if !errors.As(err, &pe) || pe.Value != "group boom" || pe.Source != "pool" || len(pe.Stack) == 0 {
		t.Fatalf("Wait = %v, want a *panics.Error with stack", err)
	}
	if p.Stats().Panicked != 0 {
		t.Fatal("a group task's panic was also counted as a pool panic")
	}
}

func TestGroupOnClosedPool(t *testing.T) {
	p := New(1)
	p.Close()
	g := p.Group(context.Background())
	g.Go(func(ctx context.Context) error { return nil })
	if err := g.Wait(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait = %v, want ErrClosed", err)
	}
}

func TestMapOrder(t *testing.T) {
	p := New(4)
	defer p.Close()
	items := make([]int, 1000)
	for i := range items {
		items[i] = i
	}
	out, err := Map(context.Background(), p, items, func(_ context.Context, n int) (int, error) {
		if n%7 == 0 {
			time.Sleep(time.Microsecond)
		}
		return n * n, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != i*i {
			t.Fatalf("out[%d] = %d", i, v)
		}
	}
}

func TestMapError(t *testing.T) {
	p := New(2)
	defer p.Close()
	bad := errors.New("bad item")
	var ran atomic.Int64
	items := make([]int, 10000)
	_, err := Map(context.Background(), p, items, func(ctx context.Context, n int) (int, error) {
		if ran.Add(1) == 10 {
			return 0, bad
		}
		return n, ctx.Err()
	})
	if !errors.Is(err, bad) {
		t.Fatalf("Map = %v, want bad", err)
	}
	if ran.Load() == int64(len(items)) {
		t.Fatal("Map went on through every item after the first error")
	}
}

func TestMapSeqOrderAndWindow(t *testing.T) {
	p := New(4)
	defer p.Close()
	var hw highWater
	seq := MapSeq(context.Background(), p, slices.Values(make([]int, 500)), func(_ context.Context, _ int) (int, error) {
		hw.enter()
		defer hw.leave()
		time.Sleep(20 * time.Microsecond)
		return 1, nil
	}, WithInFlight(3))
	i := 0
	for v, err := range seq {
		if err != nil || v != 1 {
			t.Fatalf("item %d: %v %v", i, v, err)
		}
		i++
	}
	if i != 500 {
		t.Fatalf("yielded %d of 500", i)
	}
	if hw.max.Load() > 3 {
		t.Fatalf("%d items in flight with WithInFlight(3)", hw.max.Load())
	}

	// Results come in input order even when later items finish first.
	n := 0
	for v, err := range MapSeq(context.Background(), p, func(yield func(int) bool) {
		for i := 0; i < 200; i++ {
			if !yield(i) {
				return
			}
		}
	}, func(_ context.Context, i int) (int, error) {
		if i%3 == 0 {
			time.Sleep(50 * time.Microsecond)
		}
		if i == 5 {
			panic("five")
		}
		return i, nil
	}) {
		if n == 5 {
			var pe *panics.Error
			if !errors.As(err, &pe) || pe.Value != "five" {
				t.Fatalf("item 5: err %v, want *panics.Error", err)
			}
		} else if v != n || err != nil {
			t.Fatalf("item %d: got %d %v", n, v, err)
		}
		n++
	}
}

func TestMapSeqBreakCancels(t *testing.T) {
	p := New(2)
	defer p.Close()
	var started, finished, canceled atomic.Int64
	count := 0
	for range MapSeq(context.Background(), p, slices.Values(make([]int, 100)), func(ctx context.Context, _ int) (int, error) {
		started.Add(1)
		defer finished.Add(1)
		select {
		case <-ctx.Done():
			canceled.Add(1)
		case <-time.After(2 * time.Millisecond):
		}
		return 0, nil
	}, WithInFlight(4)) {
		count++
		if count == 3 {
			break
		}
	}
	// The iterator has returned: every call it started has returned too,
	// and it started no more than its window beyond what it yielded.
	if s, f := started.Load(), finished.Load(); s != f || s > 3+4 {
		t.Fatalf("after break: %d calls started, %d returned", s, f)
	}
	if s := p.Stats(); s.Waiting != 0 {
		t.Fatalf("after break: tasks still queued: %+v", s)
	}
}

// TestMapSeqContextEnds checks the documented end of a sequence whose
// context ends: the items not started are skipped and the last yield
// carries ctx.Err().
func TestMapSeqContextEnds(t *testing.T) {
	p := New(2)
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var started atomic.Int64
	yields := 0
	var last error
	for _, err := range MapSeq(ctx, p, slices.Values(make([]int, 1000)), func(ctx context.Context, _ int) (int, error) {
		started.Add(1)
		return 0, nil
	}, WithInFlight(2)) {
		yields++
		last = err
		if yields == 5 {
			cancel()
		}
	}
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("last yield: %v, want context.Canceled", last)
	}
	if yields > 5+2+1 || started.Load() >= 1000 {
		t.Fatalf("%d yields, %d calls started after the context ended at yield 5", yields, started.Load())
	}
}

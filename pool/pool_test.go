package pool

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/corework/corework/panics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// highWater tracks how many tasks run at once and the most ever seen.
type highWater struct {
	cur, max atomic.Int64
}

func (h *highWater) enter() {
	n := h.cur.Add(1)
	for m := h.max.Load(); n > m && !h.max.CompareAndSwap(m, n); m = h.max.Load() {
	}
}

func (h *highWater) leave() { h.cur.Add(-1) }

func TestLimit(t *testing.T) {
	for _, size := range []int{1, 2, 3, 8} {
		p := New(size)
		var hw highWater
		var done atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					p.Go(func() {
						hw.enter()
						runtime.Gosched()
						time.Sleep(10 * time.Microsecond)
						hw.leave()
						done.Add(1)
					})
				}
			}()
		}
		wg.Wait()
		p.Wait()
		p.Close()
		if got := hw.max.Load(); got > int64(size) {
			t.Errorf("size %d: %d tasks ran at once", size, got)
		}
		if got := hw.max.Load(); size > 1 && got < 2 {
			t.Errorf("size %d: never more than %d task at once", size, got)
		}
		if done.Load() != 800 {
			t.Errorf("size %d: %d of 800 tasks ran", size, done.Load())
		}
	}
}

func TestDefaultSize(t *testing.T) {
	p := New(0)
	defer p.Close()
	if p.Size() != runtime.GOMAXPROCS(0) {
		t.Fatalf("Size() = %d, want GOMAXPROCS %d", p.Size(), runtime.GOMAXPROCS(0))
	}
	p.Resize(3)
	if p.Size() != 3 {
		t.Fatalf("after Resize(3): Size() = %d", p.Size())
	}
	p.Resize(0)
	if p.Size() != runtime.GOMAXPROCS(0) {
		t.Fatalf("after Resize(0): Size() = %d, want GOMAXPROCS %d", p.Size(), runtime.GOMAXPROCS(0))
	}
}

// TestNegativeSize: a negative size is a programming error: New and Resize
// panic with a "pool: " message.
func TestNegativeSize(t *testing.T) {
	p := New(1)
	defer p.Close()
	for name, fn := range map[string]func(){
		"New":    func() { New(-1) },
		"Resize": func() { p.Resize(-2) },
	} {
		func() {
			defer func() {
				msg, _ := recover().(string)
				if !strings.HasPrefix(msg, "pool: "+name) || !strings.Contains(msg, "negative") {
					t.Errorf("%s: recovered %q, want a \"pool: %s ... negative\" panic", name, msg, name)
				}
			}()
			fn()
		}()
	}
	if p.Size() != 1 {
		t.Fatalf("a failed Resize changed the size to %d", p.Size())
	}
}

// blockers fills a pool of size 1 with no queue: one running task that
// waits on release.
func blocked(t *testing.T) (*Pool, chan struct{}) {
	t.Helper()
	p := New(1, WithQueueSize(0))
	release := make(chan struct{})
	started := make(chan struct{})
	p.Go(func() { close(started); <-release })
	<-started
	return p, release
}

func TestTryGoWhenFull(t *testing.T) {
	p, release := blocked(t)
	if p.TryGo(func() {}) {
		t.Fatal("TryGo accepted a task with the only worker busy and no queue")
	}
	close(release)
	p.Wait()
	ran := make(chan struct{})
	deadline := time.Now().Add(5 * time.Second)
	for !p.TryGo(func() { close(ran) }) {
		if time.Now().After(deadline) {
			t.Fatal("TryGo refused a task on an idle pool")
		}
		runtime.Gosched()
	}
	<-ran
	p.Close()
	if p.TryGo(func() {}) {
		t.Fatal("TryGo accepted a task after Close")
	}
}

func TestGoBlocksWhenFull(t *testing.T) {
	p, release := blocked(t)
	returned := make(chan struct{})
	go func() {
		p.Go(func() {})
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("Go returned while the only worker was busy and the queue had no room")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-returned
	p.Close()
}

func TestSubmitContext(t *testing.T) {
	p, release := blocked(t)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Int64
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.Submit(ctx, func() { ran.Add(1) })
		}()
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("blocked Submit returned %v, want context.Canceled", err)
		}
	}
	close(release)
	p.Close()
	if ran.Load() != 0 {
		t.Errorf("%d tasks whose Submit failed ran anyway", ran.Load())
	}
	if s := p.Stats(); s.Submitted != 1 || s.Completed != 1 {
		t.Errorf("stats after failed submits: %+v", s)
	}
	if err := p.Submit(context.Background(), func() {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close = %v, want ErrClosed", err)
	}
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := New(1).Submit(done, func() {}); !errors.Is(err, context.Canceled) {
		t.Errorf("Submit with an ended context = %v", err)
	}
}

func TestGoAfterClosePanics(t *testing.T) {
	p := New(2)
	p.Close()
	p.Close() // idempotent
	defer func() {
		r := recover()
		s, ok := r.(string)
		if !ok || !strings.HasPrefix(s, "pool: ") {
			t.Fatalf("Go after Close: recovered %v, want a \"pool: \" panic", r)
		}
	}()
	p.Go(func() {})
}

func TestCloseRunsQueued(t *testing.T) {
	p := New(2, WithQueueSize(100))
	var n atomic.Int64
	for i := 0; i < 100; i++ {
		p.Go(func() { time.Sleep(100 * time.Microsecond); n.Add(1) })
	}
	p.Close()
	if n.Load() != 100 {
		t.Fatalf("Close returned with %d of 100 queued tasks run", n.Load())
	}
	if s := p.Stats(); s.Workers != 0 {
		t.Fatalf("workers alive after Close: %d", s.Workers)
	}
}

func TestWaitKeepsPoolUsable(t *testing.T) {
	p := New(3)
	defer p.Close()
	for round := 0; round < 5; round++ {
		var n atomic.Int64
		for i := 0; i < 50; i++ {
			p.Go(func() { n.Add(1) })
		}
		p.Wait()
		if n.Load() != 50 {
			t.Fatalf("round %d: Wait returned with %d of 50 done", round, n.Load())
		}
	}
	p.Wait() // nothing pending: returns at once
}

func TestPanicReRaisedByWait(t *testing.T) {
	p := New(2)
	defer p.Close()
	var after atomic.Int64
	p.Go(func() { panic("boom") })
	for i := 0; i < 20; i++ {
		p.Go(func() { after.Add(1) })
	}
	var pe *panics.Error
	func() {
		defer func() {
			r := recover()
			var ok bool
			if pe, ok = r.(*panics.Error); !ok {
				t.Fatalf("Wait recovered %v, want *panics.Error", r)
			}
		}()
		p.Wait()
	}()
	if pe.Value != "boom" || pe.Source != "pool" || pe.Task != "" ||
		!strings.Contains(string(pe.Stack), "TestPanicReRaisedByWait") {
		t.Fatalf("panic error: source %q task %q value %v, stack:\n%s", pe.Source, pe.Task, pe.Value, pe.Stack)
	}
	if pe.Error() != "pool: task panicked: boom" {
		t.Fatalf("Error() = %q", pe.Error())
	}
	// The stack starts at the task that panicked, not at the recovery.
	if strings.Contains(string(pe.Stack), "recoverTask") {
		t.Fatalf("stack holds the recovery's frames:\n%s", pe.Stack)
	}
	if after.Load() != 20 {
		t.Fatalf("other tasks: %d of 20 ran", after.Load())
	}
	if s := p.Stats(); s.Panicked != 1 {
		t.Fatalf("Panicked = %d", s.Panicked)
	}
	p.Wait() // reported once only
	p.Go(func() {})
	p.Wait()
}

func TestPanicHandler(t *testing.T) {
	var got []any
	var mu sync.Mutex
	p := New(2, WithPanicHandler(func(pe *panics.Error) {
		mu.Lock()
		got = append(got, pe.Value)
		mu.Unlock()
	}))
	err := errors.New("bad")
	p.Go(func() { panic(err) })
	p.Go(func() { panic(2) })
	p.Wait() // must not panic
	p.Close()
	if len(got) != 2 {
		t.Fatalf("handler saw %v", got)
	}
	if !slices.ContainsFunc(got, func(v any) bool { return v == err }) {
		t.Fatalf("handler saw %v, want the panicked error among them", got)
	}
	var pe error = panics.New("pool", "", err)
	if !errors.Is(pe, err) {
		t.Fatal("panics.Error does not unwrap an error value")
	}
}

func TestIdleTimeout(t *testing.T) {
	p := New(4, WithIdleTimeout(10*time.Millisecond))
	for round := 0; round < 3; round++ {
		var n atomic.Int64
		for i := 0; i < 100; i++ {
			p.Go(func() { n.Add(1) })
		}
		p.Wait()
		if n.Load() != 100 {
			t.Fatalf("round %d: %d of 100 ran", round, n.Load())
		}
		deadline := time.Now().Add(5 * time.Second)
		for p.Stats().Workers != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d workers alive after idling", round, p.Stats().Workers)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			// Nothing of the pool may remain while it idles.
			t.Fatalf("goroutines left while idle: %v", err)
		}
	}
	p.Close()
}

func TestResize(t *testing.T) {
	p := New(1)
	defer p.Close()
	var hw highWater
	release := make(chan struct{})
	for i := 0; i < 4; i++ {
		p.Go(func() { hw.enter(); <-release; hw.leave() })
	}
	time.Sleep(20 * time.Millisecond)
	if got := hw.cur.Load(); got != 1 {
		t.Fatalf("size 1: %d running", got)
	}
	p.Resize(4)
	deadline := time.Now().Add(5 * time.Second)
	for hw.cur.Load() != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("after Resize(4): %d running", hw.cur.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	p.Wait()
	p.Resize(2)
	hw.max.Store(0)
	for i := 0; i < 200; i++ {
		p.Go(func() { hw.enter(); time.Sleep(20 * time.Microsecond); hw.leave() })
	}
	p.Wait()
	if got := hw.max.Load(); got > 2 {
		t.Fatalf("after Resize(2): %d ran at once", got)
	}
	deadline = time.Now().Add(5 * time.Second)
	for p.Stats().Workers > 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after Resize(2): %d workers", p.Stats().Workers)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStats(t *testing.T) {
	const queued = 2 * waitSample
	p := New(1, WithQueueSize(queued))
	release := make(chan struct{})
	started := make(chan struct{})
	p.Go(func() { close(started); <-release })
	<-started
	for i := 0; i < queued; i++ {
		p.Go(func() {})
	}
	s := p.Stats()
	if s.Running != 1 || s.Waiting != queued || s.Workers != 1 || s.Size != 1 || s.Submitted != queued+1 || s.QueueWaitSampled != 0 {
		t.Fatalf("stats while blocked: %+v", s)
	}
	time.Sleep(5 * time.Millisecond)
	close(release)
	p.Wait()
	s = p.Stats()
	if s.Completed != queued+1 || s.Running != 0 || s.Waiting != 0 || s.QueueWaitSampled != 2 {
		t.Fatalf("stats after Wait: %+v", s)
	}
	// Every queued task, the two sampled ones included, waited 5ms or more
	// behind the blocked one.
	if s.QueueWaitMax < 5*time.Millisecond || s.QueueWaitTotal < queued*5*time.Millisecond {
		t.Fatalf("queue wait: total %v max %v, want max >= 5ms and total >= %v", s.QueueWaitTotal, s.QueueWaitMax, queued*5*time.Millisecond)
	}
	p.Close()
}

// TestStress runs Go, TryGo, Submit, Wait, Resize and Close from many
// goroutines at once; run it with -count=20 to hunt deadlocks.
func TestStress(t *testing.T) {
	for _, opts := range [][]Option{nil, {WithQueueSize(0)}, {WithIdleTimeout(time.Microsecond)}} {
		p := New(3, opts...)
		var ran, accepted atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if r := recover(); r != nil && !strings.HasPrefix(r.(string), "pool: Go called after Close") {
						t.Errorf("unexpected panic %v", r)
					}
				}()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					switch i % 4 {
					case 0:
						p.Go(func() { ran.Add(1) })
						accepted.Add(1)
					case 1:
						if p.TryGo(func() { ran.Add(1) }) {
							accepted.Add(1)
						}
					case 2:
						ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
						if p.Submit(ctx, func() { ran.Add(1) }) == nil {
							accepted.Add(1)
						}
						cancel()
					case 3:
						p.Wait()
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				p.Resize(1 + i%4)
				time.Sleep(100 * time.Microsecond)
			}
		}()
		time.Sleep(20 * time.Millisecond)
		done := make(chan struct{})
		go func() {
			p.Close()
			close(stop)
			wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("deadlock:\n%s", buf[:runtime.Stack(buf, true)])
		}
		if ran.Load() != accepted.Load() {
			t.Fatalf("accepted %d tasks, ran %d", accepted.Load(), ran.Load())
		}
	}
}

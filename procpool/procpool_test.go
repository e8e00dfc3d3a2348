package procpool_test

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/panics"
	"github.com/corework/corework/procpool"
)

// newPool starts a pool that the test closes when it ends.
func newPool(t *testing.T, opts ...procpool.Option) *procpool.Pool {
	t.Helper()
	p, err := procpool.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// waitStats waits until ok holds for p's stats, and returns them.
func waitStats(t *testing.T, p *procpool.Pool, ok func(procpool.Stats) bool) procpool.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := p.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never as wanted: %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitAlive waits until n workers run and returns the stats then.
func waitAlive(t *testing.T, p *procpool.Pool, n int) procpool.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := p.Stats()
		if st.Alive == n || time.Now().After(deadline) {
			if st.Alive != n {
				t.Errorf("%d workers alive, want %d", st.Alive, n)
			}
			return st
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func seq[T any](s []T) iter.Seq[T] { return slices.Values(s) }

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func ints(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestCallBasic(t *testing.T) {
	p, err := procpool.New(procpool.WithWorkers(2))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	for i := range 10 {
		got, err := double.Call(ctx, p, i)
		if err != nil || got != 2*i {
			t.Fatalf("Call(%d) = %d, %v", i, got, err)
		}
	}
	in := make([]int, 1000)
	for i := range in {
		in[i] = i
	}
	for _, c := range []int{0, 1, 7, 100} {
		out, err := double.Map(ctx, p, in, procpool.WithChunkSize(c))
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range out {
			if v != 2*i {
				t.Fatalf("chunk %d: out[%d] = %d", c, i, v)
			}
		}
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMapChunks(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	ctx := context.Background()
	for _, n := range []int{0, 1, 2, 3, 1000} {
		for _, c := range []int{0, 1, 7, 100, 5000} {
			out, err := double.Map(ctx, p, ints(n), procpool.WithChunkSize(c))
			if err != nil {
				t.Fatalf("n=%d chunk=%d: %v", n, c, err)
			}
			if len(out) != n {
				t.Fatalf("n=%d chunk=%d: %d outputs", n, c, len(out))
			}
			for i, v := range out {
				if v != 2*i {
					t.Fatalf("n=%d chunk=%d: out[%d] = %d", n, c, i, v)
				}
			}
		}
	}
	st := p.Stats()
	if st.Failed != 0 || st.Completed != 5*(0+1+2+3+1000) || st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}

type point struct {
	X, Y int
	Tag  string
}

var movePoint = procpool.Register("test.move", func(_ context.Context, p point) (point, error) {
	p.X++
	p.Tag += "!"
	return p, nil
})

// TestStructChunks: struct inputs and outputs with zero fields, chunked and
// not, keep their values (gob omits zero fields).
func TestStructChunks(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	in := make([]point, 500)
	for i := range in {
		in[i] = point{X: i - 1, Y: i % 3, Tag: strings.Repeat("a", i%2)}
	}
	for _, c := range []int{1, 13} {
		out, err := movePoint.Map(context.Background(), p, in, procpool.WithChunkSize(c))
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range out {
			want := point{X: i, Y: i % 3, Tag: strings.Repeat("a", i%2) + "!"}
			if o != want {
				t.Fatalf("chunk %d: out[%d] = %+v, want %+v", c, i, o, want)
			}
		}
	}
}

func TestStream(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	ctx := context.Background()
	for _, c := range []int{0, 1, 10} {
		got := make(map[int]int)
		for r, err := range double.Stream(ctx, p, seq(ints(1000)), procpool.WithChunkSize(c)) {
			if err != nil {
				t.Fatal(err)
			}
			if _, dup := got[r.Index]; dup {
				t.Fatalf("index %d twice", r.Index)
			}
			got[r.Index] = r.Value
		}
		if len(got) != 1000 {
			t.Fatalf("chunk %d: %d results", c, len(got))
		}
		for i, v := range got {
			if v != 2*i {
				t.Fatalf("chunk %d: result %d = %d", c, i, v)
			}
		}
	}
}

// TestStreamBounded: Stream never takes more than WithInFlight inputs
// beyond those it yielded.
func TestStreamBounded(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	const ahead = 8
	var taken, yielded, high atomic.Int64
	inputs := func(yield func(int) bool) {
		for i := range 500 {
			if d := taken.Add(1) - yielded.Load(); d > high.Load() {
				high.Store(d)
			}
			if !yield(i) {
				return
			}
		}
	}
	n := 0
	for r, err := range double.Stream(context.Background(), p, inputs, procpool.WithInFlight(ahead), procpool.WithChunkSize(3)) {
		if err != nil || r.Value != 2*r.Index {
			t.Fatalf("%+v %v", r, err)
		}
		yielded.Add(1)
		n++
	}
	if n != 500 {
		t.Fatalf("%d results", n)
	}
	if h := high.Load(); h > ahead || h < 3 {
		t.Errorf("%d inputs out at most, want 3 to %d", h, ahead)
	}
}

func TestStreamBreak(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	n := 0
	for _, err := range double.Stream(context.Background(), p, seq(ints(10000)), procpool.WithChunkSize(1)) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 10 {
			break
		}
	}
	// The pool is still usable and nothing is left in flight for long.
	if v, err := double.Call(context.Background(), p, 21); err != nil || v != 42 {
		t.Fatalf("Call after break: %d, %v", v, err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestHandlerError(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	ctx := context.Background()
	_, err := failTask.Call(ctx, p, 10)
	var te *procpool.TaskError
	if !errors.As(err, &te) || te.Message != "bad input 10" || te.Task != "test.fail" {
		t.Fatalf("Call: %v", err)
	}
	if v, err := failTask.Call(ctx, p, 11); err != nil || v != 11 {
		t.Fatalf("Call(11) = %d, %v", v, err)
	}
	for _, c := range []int{1, 5} {
		_, err = failTask.Map(ctx, p, ints(100), procpool.WithChunkSize(c))
		if !errors.As(err, &te) || !strings.Contains(err.Error(), ": bad input ") || !strings.Contains(err.Error(), "input "+te.Message[len("bad input "):]+":") {
			t.Fatalf("Map chunk %d: %v", c, err)
		}
		failed := 0
		for r, err := range failTask.Stream(ctx, p, seq(ints(100)), procpool.WithChunkSize(c)) {
			switch {
			case r.Index%7 == 3:
				if !errors.As(err, &te) || te.Message != "bad input "+strconv.Itoa(r.Index) {
					t.Fatalf("Stream %d: %v", r.Index, err)
				}
				failed++
			case err != nil || r.Value != r.Index:
				t.Fatalf("Stream %d: %d, %v", r.Index, r.Value, err)
			}
		}
		if failed != 14 {
			t.Fatalf("%d failed, want 14", failed)
		}
	}
}

func TestPanic(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	before, _ := pidTask.Call(ctx, p, struct{}{})
	_, err := panicTask.Call(ctx, p, "boom")
	var pe *panics.Error
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v", err)
	}
	if pe.Source != "procpool" || pe.Value != "boom" || pe.Task != "test.panic" || !bytes.Contains(pe.Stack, []byte("panicHere")) {
		t.Fatalf("panics.Error %q %q %q, stack:\n%s", pe.Source, pe.Task, pe.Value, pe.Stack)
	}
	// The stack starts at the goroutine header and the frame that
	// panicked, not at the recovery in the worker.
	if !bytes.HasPrefix(pe.Stack, []byte("goroutine ")) || bytes.Contains(pe.Stack, []byte("runtime/debug.Stack")) {
		t.Errorf("stack not trimmed:\n%s", pe.Stack)
	}
	if msg := err.Error(); msg != "procpool: task test.panic panicked: boom" {
		t.Errorf("message %q", msg)
	}
	// The handler panicked with an error value, but only its text crossed
	// the process boundary: nothing to unwrap.
	if errors.Unwrap(err) != nil {
		t.Errorf("Unwrap = %v, want nil", errors.Unwrap(err))
	}
	after, err := pidTask.Call(ctx, p, struct{}{})
	if err != nil || after != before {
		t.Fatalf("worker changed after a panic: %d -> %d (%v)", before, after, err)
	}
	if st := p.Stats(); st.Crashes != 0 || st.Restarts != 0 || st.Failed != 1 {
		t.Errorf("stats %+v", st)
	}
}

// parentOnlyTask is registered by the first test that needs it, in the
// parent only: the workers, which never run tests, do not know it.
var parentOnlyTask = sync.OnceValue(func() *procpool.Task[int, int] {
	return procpool.Register("test.parent-only", func(_ context.Context, n int) (int, error) { return n, nil })
})

func TestUnknownTask(t *testing.T) {
	parentOnly := parentOnlyTask()
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	if _, err := parentOnly.Call(ctx, p, 1); !errors.Is(err, procpool.ErrUnknownTask) || !strings.Contains(err.Error(), "test.parent-only") {
		t.Fatalf("Call: %v", err)
	}
	if _, err := parentOnly.Map(ctx, p, ints(10), procpool.WithChunkSize(3)); !errors.Is(err, procpool.ErrUnknownTask) {
		t.Fatalf("Map: %v", err)
	}
	if v, err := double.Call(ctx, p, 2); err != nil || v != 4 {
		t.Fatalf("after: %d, %v", v, err)
	}
}

func TestRegisterPanics(t *testing.T) {
	for name, fn := range map[string]func(){
		"duplicate": func() { procpool.Register("test.double", func(context.Context, int) (int, error) { return 0, nil }) },
		"empty":     func() { procpool.Register("", func(context.Context, int) (int, error) { return 0, nil }) },
		"nil":       func() { procpool.Register[int, int]("test.nil", nil) },
		"nil init":  func() { procpool.WorkerInit(nil) },
	} {
		func() {
			defer func() {
				v := recover()
				if s, _ := v.(string); !strings.HasPrefix(s, "procpool: ") {
					t.Errorf("%s: panic %v", name, v)
				}
			}()
			fn()
		}()
	}
}

type withChan struct {
	C chan int
}

var chanTask = procpool.Register("test.chan", func(context.Context, withChan) (int, error) { return 0, nil })

type iface struct{ V any }

var ifaceTask = procpool.Register("test.iface", func(_ context.Context, n int) (iface, error) {
	return iface{V: unregistered{N: n}}, nil
})

type unregistered struct{ N int }

var ifaceIn = procpool.Register("test.iface-in", func(context.Context, iface) (int, error) { return 0, nil })

// TestEncodeErrors: what gob cannot encode fails the call with a clear
// error, before anything is sent for an input, and the pool goes on.
func TestEncodeErrors(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	check := func(what string, err error, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
		for i := range 3 {
			if v, err := movePoint.Call(ctx, p, point{X: i, Tag: "t"}); err != nil || v.X != i+1 {
				t.Fatalf("%s: call after: %+v, %v", what, v, err)
			}
		}
	}
	_, err := chanTask.Call(ctx, p, withChan{})
	check("chan input", err, procpool.ErrEncode)
	_, err = ifaceIn.Call(ctx, p, iface{V: unregistered{N: 1}})
	check("unregistered interface input", err, procpool.ErrEncode)
	_, err = ifaceIn.Map(ctx, p, []iface{{V: 1}, {V: unregistered{}}}, procpool.WithChunkSize(2))
	check("unregistered interface input, chunk", err, procpool.ErrEncode)
	_, err = ifaceTask.Call(ctx, p, 1)
	check("unregistered interface output", err, procpool.ErrEncode)
	_, err = ifaceTask.Map(ctx, p, ints(10), procpool.WithChunkSize(4))
	check("unregistered interface output, chunk", err, procpool.ErrEncode)
	if st := p.Stats(); st.Crashes != 0 || st.Restarts != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestFrameTooLarge(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1), procpool.WithMaxFrame(4<<10))
	ctx := context.Background()
	if _, err := echoBytes.Call(ctx, p, make([]byte, 8<<10)); !errors.Is(err, procpool.ErrFrameTooLarge) {
		t.Fatalf("big input: %v", err)
	}
	if v, err := echoBytes.Call(ctx, p, []byte("small")); err != nil || string(v) != "small" {
		t.Fatalf("after: %q, %v", v, err)
	}
	if _, err := growTask.Call(ctx, p, 8<<10); !errors.Is(err, procpool.ErrFrameTooLarge) {
		t.Fatalf("big output: %v", err)
	}
	if v, err := growTask.Call(ctx, p, 10); err != nil || len(v) != 10 {
		t.Fatalf("after: %d bytes, %v", len(v), err)
	}
	if st := p.Stats(); st.Crashes != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, err := procpool.New(procpool.WithMaxFrame(10)); err == nil {
		t.Error("WithMaxFrame(10) accepted")
	}
}

var growTask = procpool.Register("test.grow", func(_ context.Context, n int) ([]byte, error) { return make([]byte, n), nil })

// TestOutputNotProtocol: what tasks print goes to WithOutput, line by line
// with the worker's prefix, and never disturbs the results.
func TestOutputNotProtocol(t *testing.T) {
	var out syncBuffer
	p := newPool(t, procpool.WithWorkers(2), procpool.WithOutput(&out))
	ctx := context.Background()
	got, err := chattyTask.Map(ctx, p, ints(50), procpool.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range got {
		if s != "ok "+strconv.Itoa(i) {
			t.Fatalf("result %d = %q", i, s)
		}
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"\x00\x00\x00\x05hello 7\n", "to stderr 49\n", "partial 0 "} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, "worker 0: ") && !strings.HasPrefix(line, "worker 1: ") {
			t.Errorf("line without prefix: %q", line)
		}
	}
}

func TestDeadlinePropagated(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	want := time.Now().Add(time.Hour)
	ctx, cancel := context.WithDeadline(context.Background(), want)
	defer cancel()
	got, err := deadlineTask.Call(ctx, p, 0)
	if err != nil || !got.Equal(want) {
		t.Fatalf("worker saw deadline %v (%v), want %v", got, err, want)
	}
	got, err = deadlineTask.Call(context.Background(), p, 0)
	if err != nil || !got.IsZero() {
		t.Fatalf("no deadline: worker saw %v, %v", got, err)
	}
}

func TestWorkerInit(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	got, err := initTask.Map(context.Background(), p, ints(20), procpool.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range got {
		seen[s] = true
	}
	for _, w := range p.Stats().PerWorker {
		if s := "worker " + strconv.Itoa(w.ID) + " pid " + strconv.Itoa(w.PID); !seen[s] {
			t.Errorf("no result %q in %v", s, seen)
		}
	}
}

func TestWorkerInitFails(t *testing.T) {
	t.Setenv(failInitEnv, "1")
	_, err := procpool.New(procpool.WithWorkers(2))
	if err == nil || !strings.Contains(err.Error(), "init refused") {
		t.Fatalf("New: %v", err)
	}
}

const failInitEnv = "PROCPOOL_TEST_FAIL_INIT"

func init() {
	procpool.WorkerInit(func(context.Context, int) error {
		if os.Getenv(failInitEnv) != "" {
			return errors.New("init refused")
		}
		return nil
	})
}

// TestCrashExit: a task that calls os.Exit fails its call with the exit
// status and the tail of stderr; the worker is replaced and the pool goes on.
func TestCrashExit(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1), procpool.WithOutput(discard{}))
	ctx := context.Background()
	before, _ := pidTask.Call(ctx, p, struct{}{})
	_, err := exitTask.Call(ctx, p, 3)
	var ce *procpool.CrashError
	if !errors.Is(err, procpool.ErrWorkerCrashed) || !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	if ce.PID != before || ce.State == nil || ce.State.ExitCode() != 3 || !strings.Contains(ce.Stderr, "exiting with 3") {
		t.Fatalf("CrashError %+v", ce)
	}
	if !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "exiting with 3") {
		t.Errorf("message %q", err)
	}
	after, err := pidTask.Call(ctx, p, struct{}{})
	if err != nil || after == before {
		t.Fatalf("after crash: pid %d (before %d), %v", after, before, err)
	}
	st := p.Stats()
	if st.Crashes != 1 || st.Restarts != 1 || st.Failed != 1 || st.PerWorker[0].LastError == nil {
		t.Errorf("stats %+v", st)
	}
}

// TestTimeoutKillsWorker: a call whose context ends while its task runs
// returns promptly; the worker is killed and replaced.
func TestTimeoutKillsWorker(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	before, _ := pidTask.Call(context.Background(), p, struct{}{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := sleepTask.Call(ctx, p, time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("returned after %v", d)
	}
	after, err := pidTask.Call(context.Background(), p, struct{}{})
	if err != nil || after == before {
		t.Fatalf("after timeout: pid %d (before %d), %v", after, before, err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(before)); err == nil && isLinux {
		t.Errorf("killed worker %d still in /proc", before)
	}
	if st := p.Stats(); st.Crashes != 0 || st.Restarts != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestCallTimeoutsRace: contexts that end around the time the reply comes
// in either fail their call or not, and never break the pool.
func TestCallTimeoutsRace(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	failed := 0
	for i := range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%40)*25*time.Microsecond)
		v, err := double.Call(ctx, p, i)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			failed++
		case err != nil || v != 2*i:
			t.Fatalf("Call(%d) = %d, %v", i, v, err)
		}
	}
	for i := range 20 {
		if v, err := double.Call(context.Background(), p, i); err != nil || v != 2*i {
			t.Fatalf("after: Call(%d) = %d, %v", i, v, err)
		}
	}
	if st := p.Stats(); st.Crashes != 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d of 300 calls timed out", failed)
}

// TestCancelQueued: cancelling a call that waits behind another on the
// same worker does not disturb the running one.
func TestCancelQueued(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1), procpool.WithPipelineDepth(4))
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := sleepTask.Call(ctx, p, 300*time.Millisecond)
		first <- err
	}()
	waitInFlight(t, p, 1)
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() {
		_, err := sleepTask.Call(cctx, p, time.Hour)
		second <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("second: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first call disturbed: %v", err)
	}
	if v, err := double.Call(ctx, p, 1); err != nil || v != 2 {
		t.Fatalf("after: %d, %v", v, err)
	}
}

func waitInFlight(t *testing.T, p *procpool.Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().InFlight < n {
		if time.Now().After(deadline) {
			t.Fatalf("never %d in flight", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRecycle: WithMaxTasksPerWorker replaces a worker after N tasks.
func TestRecycle(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1), procpool.WithMaxTasksPerWorker(3))
	ctx := context.Background()
	var pids []int
	for range 7 {
		pid, err := pidTask.Call(ctx, p, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	for i := range pids {
		if same := pids[i] == pids[i/3*3]; !same {
			t.Fatalf("pids %v: want a new process every 3 tasks", pids)
		}
	}
	if pids[0] == pids[3] || pids[3] == pids[6] {
		t.Fatalf("pids %v: want a new process every 3 tasks", pids)
	}
	// Chunks count their items; Map over a recycling pool still completes.
	out, err := double.Map(ctx, p, ints(30), procpool.WithChunkSize(1))
	if err != nil || len(out) != 30 {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Crashes != 0 || st.Restarts < 2+9 {
		t.Errorf("stats %+v", st)
	}
}

// TestBalance: long tasks are not queued behind a busy worker while another
// is idle: with 2 workers, 8 tasks of 40 ms take about 160 ms, spread 4 and 4.
func TestBalance(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	in := make([]time.Duration, 8)
	for i := range in {
		in[i] = 40 * time.Millisecond
	}
	pids, err := sleepTask.Map(context.Background(), p, in, procpool.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	count := map[int]int{}
	for _, pid := range pids {
		count[pid]++
	}
	for pid, n := range count {
		if n < 3 || n > 5 {
			t.Errorf("worker %d ran %d of 8 tasks: %v", pid, n, count)
		}
	}
}

func TestConcurrentCalls(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				v, err := double.Call(context.Background(), p, g*1000+i)
				if err != nil || v != 2*(g*1000+i) {
					t.Errorf("Call: %d, %v", v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if st := p.Stats(); st.Completed != 1600 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestShutdown(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	ctx := context.Background()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := sleepTask.Call(ctx, p, 100*time.Millisecond)
			errs <- err
		}()
	}
	// All four calls are in: sent or queued.
	deadline := time.Now().Add(5 * time.Second)
	for st := p.Stats(); st.InFlight+st.Queued < 4; st = p.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("calls never all in: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("in-flight call: %v", err)
		}
	}
	if _, err := double.Call(ctx, p, 1); !errors.Is(err, procpool.ErrClosed) {
		t.Errorf("Call after Shutdown: %v", err)
	}
	for r, err := range double.Stream(ctx, p, seq(ints(3))) {
		if r.Index != -1 || !errors.Is(err, procpool.ErrClosed) {
			t.Errorf("Stream after Shutdown: %+v %v", r, err)
		}
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
	if st := p.Stats(); st.Alive != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestShutdownTimeout(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	errc := make(chan error, 1)
	go func() {
		_, err := sleepTask.Call(context.Background(), p, time.Hour)
		errc <- err
	}()
	waitInFlight(t, p, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, procpool.ErrClosed) {
		t.Fatalf("call: %v", err)
	}
}

func TestCloseFailsInFlight(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	errc := make(chan error, 1)
	go func() {
		_, err := sleepTask.Map(context.Background(), p, []time.Duration{time.Hour, time.Hour, time.Hour}, procpool.WithChunkSize(1))
		errc <- err
	}()
	waitInFlight(t, p, 2)
	start := time.Now()
	p.Close()
	p.Close()
	if err := <-errc; !errors.Is(err, procpool.ErrClosed) {
		t.Fatalf("Map: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
}

func TestOptionErrors(t *testing.T) {
	for name, o := range map[string]procpool.Option{
		"WithWorkers(-1)":           procpool.WithWorkers(-1),
		"WithPipelineDepth(0)":      procpool.WithPipelineDepth(0),
		"WithRetry(-1)":             procpool.WithRetry(-1),
		"WithMaxTasksPerWorker(-1)": procpool.WithMaxTasksPerWorker(-1),
		"WithMaxFrame(10)":          procpool.WithMaxFrame(10),
	} {
		if p, err := procpool.New(o); err == nil || !strings.HasPrefix(err.Error(), "procpool: "+name+": ") {
			if p != nil {
				p.Close()
			}
			t.Errorf("New(%s): %v", name, err)
		}
	}
}

// TestDefaultWorkers: no WithWorkers, and WithWorkers(0), mean
// GOMAXPROCS(0) workers.
func TestDefaultWorkers(t *testing.T) {
	want := runtime.GOMAXPROCS(0)
	for _, opts := range [][]procpool.Option{nil, {procpool.WithWorkers(0)}} {
		p := newPool(t, opts...)
		if st := p.Stats(); st.Workers != want || len(st.PerWorker) != want {
			t.Errorf("%d options: %d workers, want GOMAXPROCS %d", len(opts), st.Workers, want)
		}
		p.Close()
	}
}

func TestMapCancel(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	in := []time.Duration{time.Hour, time.Hour, time.Hour, time.Hour}
	start := time.Now()
	if _, err := sleepTask.Map(ctx, p, in, procpool.WithChunkSize(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Map: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Map returned after %v", d)
	}
	// Both workers ran an endless task: both were killed and replaced.
	for i := range 4 {
		if v, err := double.Call(context.Background(), p, i); err != nil || v != 2*i {
			t.Fatalf("after: %d, %v", v, err)
		}
	}
	if st := waitStats(t, p, func(st procpool.Stats) bool { return st.Restarts == 2 }); st.Crashes != 0 {
		t.Errorf("stats %+v", st)
	}
}

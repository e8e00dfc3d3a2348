package procpool

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/panics"
)

// Task is a typed function registered under a name in every process of the
// program, so the parent can ask a worker to run it. In and Out cross the
// process boundary with encoding/gob: exported fields only, interface
// values need gob.Register (at init, in every process), and a struct field
// holding its zero value arrives as the zero value.
type Task[In, Out any] struct {
	meta taskMeta
	fn   func(context.Context, In) (Out, error)
}

// taskMeta is what the pool needs of a task without its types.
type taskMeta struct {
	name          string
	est           atomic.Int64 // handler time per item in ns (EWMA of replies); 0 unknown
	inRaw, outRaw bool         // a lone input, a lone output travels raw (see codec.go)
}

func (m *taskMeta) observe(perItem int64) {
	if perItem <= 0 {
		perItem = 1
	}
	old := m.est.Load()
	if old == 0 {
		m.est.Store(perItem)
		return
	}
	m.est.Store(old + (perItem-old)/4)
}

// taskImpl is the worker side of a Task: it decodes a request's input into a
// job that runs the handler and encodes the reply.
type taskImpl interface {
	taskName() string
	decode(dec decoder, chunk bool, n int) (job, error)
}

type job interface {
	run(ctx context.Context, s *server, id uint64, start time.Time)
}

var registry struct {
	mu    sync.RWMutex
	tasks map[string]taskImpl
	inits []func(context.Context, int) error
}

// Register registers fn under name and returns the Task that calls it in a
// worker process. Call it at package initialization (a package-level var),
// so that the parent and every worker, which run the same binary, register
// the same tasks. It panics, with a "procpool: " message, when name is empty
// or longer than 1 KiB, when fn is nil, or when name is already registered.
//
// fn runs in a worker, one call at a time per worker. Its context carries
// the caller's deadline, if any; cancellation of the caller does not reach
// it cooperatively: the parent kills the worker instead, with its process
// group (Unix), so processes fn started end too. A panic in fn
// becomes a *panics.Error for the caller (Source "procpool", Task the
// name, Value the panic value as fmt.Sprint formats it in the worker, Stack
// the worker goroutine's stack) and the worker goes on serving; an error
// becomes a *TaskError.
func Register[In, Out any](name string, fn func(context.Context, In) (Out, error)) *Task[In, Out] {
	if name == "" || len(name) > maxNameLen {
		panic(fmt.Sprintf("procpool: Register: bad task name %q", name))
	}
	if fn == nil {
		panic("procpool: Register: nil function for task " + name)
	}
	t := &Task[In, Out]{fn: fn}
	t.meta.name = name
	t.meta.inRaw, t.meta.outRaw = isRaw[In](), isRaw[Out]()
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.tasks == nil {
		registry.tasks = make(map[string]taskImpl)
	}
	if _, dup := registry.tasks[name]; dup {
		panic("procpool: Register called twice for task " + name)
	}
	registry.tasks[name] = t
	return t
}

// WorkerInit registers fn to run in every worker process when it starts,
// before it serves any task, with the worker's slot number (0 to n-1 in a
// pool of n workers). Use it to open per-process resources (Python's Pool
// initializer). Register it at package initialization, like tasks. If fn
// returns an error or panics, the worker reports it and exits: New fails
// with that error; for a worker started later in place of a dead one, the
// pool waits and starts it again. It panics if fn is nil.
func WorkerInit(fn func(ctx context.Context, worker int) error) {
	if fn == nil {
		panic("procpool: WorkerInit: nil function")
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	registry.inits = append(registry.inits, fn)
}

// Name returns the name the task was registered under.
func (t *Task[In, Out]) Name() string { return t.meta.name }

func (t *Task[In, Out]) taskName() string { return t.meta.name }

// invoke runs the handler, turning a panic into a kindPanic failure that
// carries the fields of the parent's *panics.Error: the value as text and
// the stack from the frame that panicked.
func (t *Task[In, Out]) invoke(ctx context.Context, in In) (out Out, fail itemErr) {
	defer func() {
		if v := recover(); v != nil {
			msg := fmt.Sprint(v)
			pe := panics.New("procpool", t.meta.name, msg)
			fail = itemErr{kind: kindPanic, msg: msg, stack: pe.Stack}
		}
	}()
	out, err := t.fn(ctx, in)
	if err != nil {
		return out, itemErr{kind: kindHandler, msg: err.Error()}
	}
	return out, itemErr{}
}

func (t *Task[In, Out]) decode(dec decoder, chunk bool, n int) (job, error) {
	if !chunk {
		j := &oneJob[In, Out]{t: t}
		if err := dec.Decode(&j.in); err != nil {
			return nil, err
		}
		return j, nil
	}
	j := &chunkJob[In, Out]{t: t}
	if n <= 4096 {
		j.in = make([]In, 0, n) // n is bounded by the frame's size
	}
	if err := dec.Decode(&j.in); err != nil {
		return nil, err
	}
	if len(j.in) != n {
		return nil, fmt.Errorf("chunk of %d inputs, header says %d", len(j.in), n)
	}
	return j, nil
}

type oneJob[In, Out any] struct {
	t  *Task[In, Out]
	in In
}

func (j *oneJob[In, Out]) run(ctx context.Context, s *server, id uint64, start time.Time) {
	s.running()
	out, fail := j.t.invoke(ctx, j.in)
	s.ran()
	dur := time.Since(start)
	if fail.kind != kindNone {
		s.replyErr(id, dur, &fail)
		return
	}
	if j.t.meta.outRaw {
		s.replyRaw(id, dur, &out)
		return
	}
	s.replyValue(id, dur, nil, &out)
}

type chunkJob[In, Out any] struct {
	t  *Task[In, Out]
	in []In
}

func (j *chunkJob[In, Out]) run(ctx context.Context, s *server, id uint64, start time.Time) {
	outs := make([]Out, len(j.in))
	var errs []itemErr
	s.running()
	for i := range j.in {
		out, fail := j.t.invoke(ctx, j.in[i])
		if fail.kind != kindNone {
			fail.index = i
			errs = append(errs, fail)
			continue
		}
		outs[i] = out
	}
	s.ran()
	s.replyValue(id, time.Since(start), errs, &outs)
}

// lookupTasks returns a snapshot of the registry for a worker.
func lookupTasks() (map[string]taskImpl, []func(context.Context, int) error) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	m := make(map[string]taskImpl, len(registry.tasks))
	for k, v := range registry.tasks {
		m[k] = v
	}
	return m, append([]func(context.Context, int) error(nil), registry.inits...)
}

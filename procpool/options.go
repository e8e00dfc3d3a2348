package procpool

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// Option configures a Pool in New.
type Option func(*options)

type options struct {
	workers  int
	pinned   bool
	maxTasks int
	depth    int
	output   io.Writer
	logger   *slog.Logger
	retry    int
	maxFrame int
	err      error
}

func defaultOptions() options {
	return options{depth: 128, output: os.Stderr, maxFrame: DefaultMaxFrame}
}

func (o *options) fail(format string, args ...any) {
	if o.err == nil {
		o.err = fmt.Errorf("procpool: "+format, args...)
	}
}

// WithWorkers sets the number of worker processes, with the rule pool and
// jobqueue follow too: n > 0 means exactly n workers; 0 means the default,
// runtime.GOMAXPROCS(0), which on Linux already follows the CPU affinity
// mask and the cgroup CPU quota; a negative n makes New fail.
func WithWorkers(n int) Option {
	return func(o *options) {
		if n < 0 {
			o.fail("WithWorkers(%d): negative", n)
		}
		o.workers = n
	}
}

// WithPinnedWorkers pins worker i to the i-th CPU of affinity.Allowed
// (modulo their count): the mask is set on the forking thread before exec,
// so every thread of the worker, runtime threads included, inherits it and
// the Go runtime in the worker sizes GOMAXPROCS to 1. On systems without
// affinity support New fails with an error matching errors.ErrUnsupported.
func WithPinnedWorkers() Option {
	return func(o *options) { o.pinned = true }
}

// WithMaxTasksPerWorker recycles a worker after it has been sent n tasks
// (items of a chunk count one each): the parent stops sending to it, closes
// its request pipe, lets it finish what it holds and exit, and starts a new
// process in its place. Use it to return memory a task leaks. 0, the
// default, never recycles; a negative n makes New fail.
func WithMaxTasksPerWorker(n int) Option {
	return func(o *options) {
		if n < 0 {
			o.fail("WithMaxTasksPerWorker(%d): negative", n)
		}
		o.maxTasks = n
	}
}

// WithPipelineDepth sets the most requests the parent keeps in flight per
// worker (default 128; n < 1 makes New fail). The parent sends a worker more
// than 2 requests only while the work queued at it, estimated from each
// task's handler time as the workers report it, stays under about a
// millisecond: tiny tasks get a deep pipeline, long ones never wait behind
// a busy worker while another idles. A window of several requests also
// lets a worker wake the parent once per window rather than once per reply
// (see Wire in the package documentation). A request sent to a busy worker
// can wait behind up to that millisecond of queued work even if another
// worker frees up first; WithPipelineDepth(2) keeps that wait to one
// request, at the price of a wake-up of the parent per reply.
func WithPipelineDepth(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.fail("WithPipelineDepth(%d): need at least 1", n)
		}
		o.depth = n
	}
}

// WithOutput sets where the workers' stdout and stderr go, line by line,
// each line prefixed with "worker N: ". The default is the parent's
// os.Stderr; io.Discard (or nil) silences them. Writes are serialized, so w
// need not be safe for concurrent use. The protocol never uses stdout or
// stderr. The pool's own messages go to WithLogger instead.
func WithOutput(w io.Writer) Option {
	return func(o *options) {
		if w == nil {
			w = io.Discard
		}
		o.output = w
	}
}

// WithLogger sets the logger for the pool's own events, each a message
// starting with "procpool: " and structured attributes (worker, the slot
// index; pid; ...): a worker spawned (Debug), recycled after
// WithMaxTasksPerWorker tasks or stopped (Debug), killed because a call's
// context ended (Debug), crashed (Warn, with its exit status or signal, the
// requests it failed and retried, and the last line of its stderr), or
// failing to start again in place of a dead one (Error). nil, the default,
// means slog.Default() at the time of each message. What the workers print
// goes to WithOutput, not here.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithRetry sends a call again, up to n more times, when its worker crashed
// (ErrWorkerCrashed) while running it, or before answering it when it was
// the oldest request the worker held (see the package doc). The default 0
// fails such calls; a negative n makes New fail. Calls queued behind it on
// that worker never started: they are sent again whatever n is, and that
// does not count as a retry. Tasks retried this way may run more than
// once, so they should be idempotent.
func WithRetry(n int) Option {
	return func(o *options) {
		if n < 0 {
			o.fail("WithRetry(%d): negative", n)
		}
		o.retry = n
	}
}

// WithMaxFrame sets the largest frame, in bytes, either side sends or
// accepts (default DefaultMaxFrame, 64 MiB; between 1 KiB and 2 GiB-1, or
// New fails). A call whose input or output does not fit fails with
// ErrFrameTooLarge; a frame over the limit arriving from the other side ends
// that worker.
func WithMaxFrame(n int) Option {
	return func(o *options) {
		if n < minFrameLimit || n > maxFrameLimit {
			o.fail("WithMaxFrame(%d): want %d to %d", n, minFrameLimit, maxFrameLimit)
		}
		o.maxFrame = n
	}
}

// MapOption configures Map and Stream.
type MapOption func(*mapOptions)

type mapOptions struct {
	chunk    int
	inFlight int
}

// WithChunkSize sends n inputs per request: one frame carries n inputs and
// one frame carries their n outputs, which amortizes the per-request cost
// over tiny tasks. 0, the default, chooses automatically from the task's
// handler time measured so far (about 100 microseconds of work per chunk,
// at most a quarter of the inputs per worker; one by one for a task not
// measured yet, up to 256 inputs per worker); 1 sends every input on its
// own; n < 0 means 0. A crash fails or retries a whole chunk.
func WithChunkSize(n int) MapOption {
	return func(o *mapOptions) {
		if n < 0 {
			n = 0
		}
		o.chunk = n
	}
}

// WithInFlight bounds Stream: at most n inputs are taken from the input
// sequence and not yet yielded (default: 64 per worker, and at least 4
// chunks per worker; n < 1 means 1). Map holds all inputs anyway and
// ignores it.
func WithInFlight(n int) MapOption {
	return func(o *mapOptions) {
		if n < 1 {
			n = 1
		}
		o.inFlight = n
	}
}

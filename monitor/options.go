package monitor

import "time"

// DefaultMinWindow is the shortest span the usage ratios of a [Sampler]
// cover unless [WithMinWindow] says otherwise. The kernel counts CPU time in
// ticks of usually 10 ms, so a 200 ms window gives a resolution of 5% per
// core.
const DefaultMinWindow = 200 * time.Millisecond

// Option configures a [Sampler].
type Option func(*options)

type options struct {
	minWindow  time.Duration
	noSelf     bool
	noChildren bool
	pids       []int
	sources    []func() []int
	threads    bool
}

// WithMinWindow sets the shortest span the usage ratios cover. A Sample
// taken sooner than d after the previous window closed repeats that
// window's ratios (memory, load and cumulative times are always fresh), and
// the first Sample waits until d has passed since NewSampler. Zero makes
// every Sample measure since the previous one, however short; negative
// values count as zero.
func WithMinWindow(d time.Duration) Option {
	return func(o *options) { o.minWindow = max(d, 0) }
}

// WithPIDs adds rows for the given processes, after this process and its
// children (see [WithChildren]). A process that does not exist, or
// exits, is left out of the snapshot without an error.
func WithPIDs(pids ...int) Option {
	return func(o *options) { o.pids = append(o.pids, pids...) }
}

// WithProcesses adds a source of PIDs, called at every Sample: the way to
// follow processes that come and go and are not this process's children
// (those are listed by default on Linux), such as the workers of another
// program. The function must be safe to call from any goroutine and must not
// block. PIDs are deduplicated across sources.
func WithProcesses(pids func() []int) Option {
	return func(o *options) {
		if pids != nil {
			o.sources = append(o.sources, pids)
		}
	}
}

// WithSelf sets whether the current process has a row, the first one. The
// default is on; WithSelf(false) leaves it out.
func WithSelf(on bool) Option {
	return func(o *options) { o.noSelf = !on }
}

// WithChildren sets whether every Sample lists the child processes of the
// current process, by PID, after the current process: the worker processes
// of a process pool (package procpool) and any other command the program
// started show up, and leave, by themselves. The default is on;
// WithChildren(false) leaves them out. Listing them costs one directory read
// and one small file read per thread of the current process. Only Linux
// lists children: elsewhere there are none, and WithProcesses is the way to
// add worker processes.
func WithChildren(on bool) Option {
	return func(o *options) { o.noChildren = !on }
}

// WithThreads adds a row per thread to each process row: its CPU usage and
// the CPU it last ran on, which is what shows a pinned thread staying on its
// core. It costs two small file reads per thread per Sample. Only Linux
// has it: elsewhere NewSampler returns an error wrapping [ErrUnsupported].
func WithThreads() Option {
	return func(o *options) { o.threads = true }
}

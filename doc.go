// Package corework puts every CPU core of a machine to work, and lets a
// program grow from one goroutine pool to many machines sharing one job
// queue without changing its handlers.
//
// The library is a set of packages, each with runnable examples that show
// when it pays off:
//
//   - affinity: which CPUs this process may use; pin a thread or a child
//     process to CPUs; where a process or thread last ran. Use it when a
//     worker should own a core and its cache.
//   - pool: bounded goroutine pools with backpressure, per-call contexts,
//     errgroup-style groups, ordered Map and a streaming MapSeq, and a clear
//     panic policy. The default for both I/O-bound and CPU-bound work: Go
//     has no global interpreter lock, so GOMAXPROCS goroutines use every core.
//   - procpool: the program re-executes itself as worker processes. Use it
//     when work must be isolated: a crash must not take the program down, a
//     task must be killable on timeout, or memory must be handed back by
//     ending a worker.
//   - jobqueue: a priority job queue with typed handlers, retries, timeouts,
//     progress events and cancellation; in memory by default, on NATS
//     JetStream (jobqueue/jetstream) to survive crashes or span machines.
//   - wsbridge: browsers and Go clients submit jobs over WebSocket and watch
//     them run.
//   - monitor: per-core CPU, memory, load and worker processes, as terminal
//     bars or Prometheus metrics.
//   - panics: the one error type of a recovered panic, shared by pool,
//     procpool and jobqueue, so one errors.As catches a panic from any of
//     them.
//
// The library is this module, github.com/corework/corework, and requires
// only golang.org/x/sys, golang.org/x/sync, gobwas/ws, gopsutil and the
// Prometheus client. The NATS JetStream backend is a module of its own,
// github.com/corework/corework/jobqueue/jetstream, so that importing the
// library never brings NATS into a program that does not use it; the
// runnable examples are a third module.
//
// One vocabulary runs through the packages: optional settings are With*
// options (or a Config struct for the server-like jobqueue.Queue and
// wsbridge.Server); a worker count of 0 means runtime.GOMAXPROCS(0) and a
// negative one is refused; what a package logs goes to an optional
// *slog.Logger as structured records.
//
// The root package holds no code of its own: its benchmark,
// BenchmarkScaling, measures how the same CPU-bound workload scales with
// the number of workers on this machine:
//
//	go test -run '^$' -bench BenchmarkScaling .
package corework

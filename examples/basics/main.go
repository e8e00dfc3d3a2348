// Command basics is the first lesson of corework: goroutines for I/O, all
// cores for CPU-bound work, and what one core (GOMAXPROCS=1) would cost.
//
//	go run ./examples/basics          # about 6 s + 2 s of I/O, then the CPU part
//	go run ./examples/basics -quick   # the same lesson in well under a second
//	go run ./examples/basics -v       # and a debug record per measured phase on stderr
//
// Every time it prints was measured while it ran.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"time"

	"github.com/corework/corework/pool"
)

type config struct {
	ioTasks  int           // number of simulated I/O tasks
	ioDelay  time.Duration // how long each I/O task waits
	cpuTasks int           // number of CPU-bound tasks
	fibN     int           // size of each CPU-bound task
	logger   *slog.Logger  // a Debug record per measured phase (-v); nil: none
}

// parseArgs reads the command line (without the program name); -h and bad
// flags return flag.ErrHelp or the flag's error after printing to stderr.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("basics", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "shrink the lesson so it finishes in well under a second")
	verbose := fs.Bool("v", false, "debug log on stderr: a record per measured phase (tasks, workers, GOMAXPROCS, time)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "basics: unexpected argument %q\n", fs.Arg(0))
		return config{}, errors.New("basics: unexpected argument")
	}
	cfg := config{ioTasks: 3, ioDelay: 2 * time.Second, cpuTasks: 4 * runtime.GOMAXPROCS(0), fibN: 32}
	if *quick {
		cfg = config{ioTasks: 3, ioDelay: 50 * time.Millisecond, cpuTasks: 4 * runtime.GOMAXPROCS(0), fibN: 27}
	}
	if *verbose {
		cfg.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg, nil
}

func main() {
	cfg, err := parseArgs(os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case err != nil:
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := run(ctx, os.Stdout, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "basics:", err)
		os.Exit(1)
	}
}

// results holds what run measured.
type results struct {
	ioSequential, ioConcurrent         time.Duration
	cpuSequential, cpuPool, cpuOneCore time.Duration
	checksum                           int // sum of the sequential results, so the work is not optimized away
}

// logger prints lines with a timestamp and the worker's name, safe for use
// from many goroutines.
type logger struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *logger) printf(worker, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "[%s] [%s] %s\n", time.Now().Format("15:04:05.000"), worker, fmt.Sprintf(format, args...))
}

// ioTask stands for a network call or a disk read: it waits without using
// a CPU, and gives up when ctx ends.
func ioTask(ctx context.Context, l *logger, worker string, id int, d time.Duration) error {
	l.printf(worker, "start I/O task-%d", id)
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return ctx.Err()
	}
	l.printf(worker, "done  I/O task-%d", id)
	return nil
}

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

func run(ctx context.Context, w io.Writer, cfg config) (results, error) {
	var r results
	l := &logger{w: w}
	cores := runtime.GOMAXPROCS(0)
	dbg := cfg.logger
	if dbg == nil {
		dbg = slog.New(slog.DiscardHandler)
	}

	fmt.Fprintf(w, "== Lesson 1: I/O-bound work. %d tasks that each wait %v.\n", cfg.ioTasks, cfg.ioDelay)
	start := time.Now()
	for i := 1; i <= cfg.ioTasks; i++ {
		if err := ioTask(ctx, l, "main", i, cfg.ioDelay); err != nil {
			return r, err
		}
	}
	r.ioSequential = time.Since(start)
	dbg.Debug("phase measured", "phase", "I/O sequential", "tasks", cfg.ioTasks, "workers", 1, "elapsed", r.ioSequential)

	p := pool.New(cfg.ioTasks)
	defer p.Close()
	g := p.Group(ctx)
	start = time.Now()
	for i := 1; i <= cfg.ioTasks; i++ {
		g.Go(func(ctx context.Context) error {
			return ioTask(ctx, l, fmt.Sprintf("worker-%d", i), i, cfg.ioDelay)
		})
	}
	if err := g.Wait(); err != nil {
		return r, err
	}
	r.ioConcurrent = time.Since(start)
	dbg.Debug("phase measured", "phase", "I/O on a pool", "tasks", cfg.ioTasks, "workers", cfg.ioTasks, "elapsed", r.ioConcurrent)
	fmt.Fprintf(w, "sequential: %v   concurrent on a pool: %v   (%.1fx faster: the waits overlap)\n\n",
		r.ioSequential.Round(time.Millisecond), r.ioConcurrent.Round(time.Millisecond),
		float64(r.ioSequential)/float64(r.ioConcurrent))

	fmt.Fprintf(w, "== Lesson 2: CPU-bound work. %d tasks of fib(%d) on %d cores.\n", cfg.cpuTasks, cfg.fibN, cores)
	start = time.Now()
	total := 0
	for i := 0; i < cfg.cpuTasks; i++ {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		total += fib(cfg.fibN)
	}
	r.cpuSequential = time.Since(start)
	r.checksum = total
	dbg.Debug("phase measured", "phase", "CPU sequential", "tasks", cfg.cpuTasks, "fib", cfg.fibN, "workers", 1, "gomaxprocs", cores, "elapsed", r.cpuSequential)

	// Size 0 is the default: one worker per GOMAXPROCS, which on Linux
	// follows the CPU affinity mask and the cgroup CPU quota.
	var err error
	if r.cpuPool, err = cpuOnPool(ctx, 0, cfg); err != nil {
		return r, err
	}
	dbg.Debug("phase measured", "phase", "CPU on a pool", "tasks", cfg.cpuTasks, "fib", cfg.fibN, "workers", cores, "gomaxprocs", cores, "elapsed", r.cpuPool)

	// GOMAXPROCS=1 is Go's version of a global interpreter lock: however
	// many goroutines there are, one core runs them. The pool keeps its
	// explicit size (0 would now mean 1 worker).
	old := runtime.GOMAXPROCS(1)
	r.cpuOneCore, err = cpuOnPool(ctx, cores, cfg)
	runtime.GOMAXPROCS(old)
	if err != nil {
		return r, err
	}
	dbg.Debug("phase measured", "phase", "CPU on a pool, GOMAXPROCS=1", "tasks", cfg.cpuTasks, "fib", cfg.fibN, "workers", cores, "gomaxprocs", 1, "elapsed", r.cpuOneCore)
	fmt.Fprintf(w, "sequential:                     %v\n", r.cpuSequential.Round(100*time.Microsecond))
	fmt.Fprintf(w, "pool of %d workers:              %v   (speedup %.2fx)\n", cores, r.cpuPool.Round(100*time.Microsecond),
		float64(r.cpuSequential)/float64(r.cpuPool))
	fmt.Fprintf(w, "pool of %d workers, GOMAXPROCS=1: %v   (speedup %.2fx: goroutines alone do not add cores)\n", cores,
		r.cpuOneCore.Round(100*time.Microsecond), float64(r.cpuSequential)/float64(r.cpuOneCore))
	return r, nil
}

// cpuOnPool runs the CPU-bound tasks on a pool of the given size (0: one
// worker per GOMAXPROCS) and returns how long they took.
func cpuOnPool(ctx context.Context, workers int, cfg config) (time.Duration, error) {
	p := pool.New(workers)
	defer p.Close()
	start := time.Now()
	g := p.Group(ctx)
	for i := 0; i < cfg.cpuTasks; i++ {
		g.Go(func(ctx context.Context) error {
			if fib(cfg.fibN) < 0 {
				return fmt.Errorf("fib(%d) overflowed", cfg.fibN)
			}
			return ctx.Err()
		})
	}
	err := g.Wait()
	return time.Since(start), err
}

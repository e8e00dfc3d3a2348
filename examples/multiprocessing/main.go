// Command multiprocessing is the guide's multiprocessing lesson in Go.
//
// Go has no global interpreter lock, so goroutines already use every core;
// processes are for isolation: a task that crashes, leaks, must be killed on
// timeout, or should own one CPU. This program re-executes itself as worker
// processes with procpool and shows, with figures measured as it runs:
//
//  1. one worker process running a CPU-bound task;
//  2. a pool of the default size, one worker per GOMAXPROCS, running a
//     batch with Map, and its speedup over the single worker;
//  3. one worker pinned per CPU, each reporting the CPU it ran on;
//  4. a task that calls os.Exit: its call fails, the pool logs the crash
//     (log/slog, structured), replaces the worker and goes on.
//
// Run it with:
//
//	go run ./examples/multiprocessing          # fib(32) batches
//	go run ./examples/multiprocessing -quick   # small batches
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"time"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/procpool"
)

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

// Tasks are registered at initialization, in the parent and in every
// worker: they run the same binary.
var (
	fibTask = procpool.Register("multiprocessing.fib", func(_ context.Context, n int) (int, error) {
		return fib(n), nil
	})

	whereTask = procpool.Register("multiprocessing.where", func(_ context.Context, n int) (where, error) {
		// Run a little first, so the CPU read next is the one the task ran on.
		w := where{PID: os.Getpid(), CPU: -1, Fib: fib(n)}
		if cpu, err := affinity.LastCPU(w.PID); err == nil {
			w.CPU = cpu
		}
		if set, err := affinity.ProcessAllowed(w.PID); err == nil {
			w.Allowed = set.String()
		}
		return w, nil
	})

	exitTask = procpool.Register("multiprocessing.exit", func(_ context.Context, code int) (int, error) {
		fmt.Fprintf(os.Stderr, "task: calling os.Exit(%d)\n", code)
		os.Exit(code)
		return 0, nil
	})
)

// where is what a worker reports about itself.
type where struct {
	PID     int
	CPU     int    // CPU the worker last ran on
	Allowed string // its Cpus_allowed_list
	Fib     int    // fib(n), the work done first
}

type config struct {
	fibN int // fib argument of one task
	jobs int // tasks per batch
}

func main() {
	procpool.Main() // in a worker process: serve tasks, then exit
	quick := flag.Bool("quick", false, "small batches (fib(27)), for a fast look")
	flag.Parse()
	cfg := config{fibN: 32, jobs: 4 * runtime.GOMAXPROCS(0)}
	if *quick {
		cfg = config{fibN: 27, jobs: 4 * runtime.GOMAXPROCS(0)}
	}
	// Ctrl-C reaches only this process (workers ignore SIGINT): it cancels
	// the context, and the pools shut their workers down in order.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, cfg); err != nil {
		log.Fatal(err)
	}
}

// round keeps three significant digits or so of a duration.
func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func run(ctx context.Context, w io.Writer, cfg config) error {
	jobs := make([]int, cfg.jobs)
	for i := range jobs {
		jobs[i] = cfg.fibN
	}

	fmt.Fprintf(w, "1. One worker process\n")
	one, err := procpool.New(procpool.WithWorkers(1), procpool.WithOutput(w))
	if err != nil {
		return err
	}
	start := time.Now()
	v, err := fibTask.Call(ctx, one, cfg.fibN)
	if err != nil {
		one.Close()
		return err
	}
	fmt.Fprintf(w, "   fib(%d) = %d in worker pid %d (parent pid %d), %v\n",
		cfg.fibN, v, one.Stats().PerWorker[0].PID, os.Getpid(), round(time.Since(start)))
	start = time.Now()
	if _, err := fibTask.Map(ctx, one, jobs, procpool.WithChunkSize(1)); err != nil {
		one.Close()
		return err
	}
	serial := time.Since(start)
	fmt.Fprintf(w, "   %d × fib(%d) on 1 worker: %v\n", len(jobs), cfg.fibN, round(serial))
	if err := one.Shutdown(ctx); err != nil {
		return err
	}

	// No WithWorkers (or WithWorkers(0)): one worker per GOMAXPROCS, which
	// on Linux follows the CPU affinity mask and the cgroup CPU quota.
	p, err := procpool.New(procpool.WithOutput(w))
	if err != nil {
		return err
	}
	n := p.Stats().Workers
	fmt.Fprintf(w, "\n2. A pool of %d workers (the default: one per GOMAXPROCS) with Map\n", n)
	// One tiny task per worker first, so every worker has started serving.
	if _, err := fibTask.Map(ctx, p, make([]int, n), procpool.WithChunkSize(1)); err != nil {
		p.Close()
		return err
	}
	start = time.Now()
	out, err := fibTask.Map(ctx, p, jobs, procpool.WithChunkSize(1))
	parallel := time.Since(start)
	if err != nil {
		p.Close()
		return err
	}
	fmt.Fprintf(w, "   results: %v ... (%d values, in input order)\n", out[:min(3, len(out))], len(out))
	fmt.Fprintf(w, "   %d × fib(%d) on %d workers: %v, speedup %.2f over 1 worker (ideal %d)\n",
		len(jobs), cfg.fibN, n, round(parallel), serial.Seconds()/parallel.Seconds(), n)
	for _, ws := range p.Stats().PerWorker {
		fmt.Fprintf(w, "   worker %d (pid %d) ran %d tasks\n", ws.ID, ws.PID, ws.Tasks)
	}
	if err := p.Shutdown(ctx); err != nil {
		return err
	}

	fmt.Fprintf(w, "\n3. One worker pinned per CPU\n")
	pinned, err := procpool.New(procpool.WithWorkers(n), procpool.WithPinnedWorkers(), procpool.WithOutput(w))
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		fmt.Fprintf(w, "   pinning is not supported on %s\n", runtime.GOOS)
	case err != nil:
		return err
	default:
		// Two rounds of n tasks at once, so every worker gets some.
		in := make([]int, 2*n)
		for i := range in {
			in[i] = 20
		}
		ws, err := whereTask.Map(ctx, pinned, in, procpool.WithChunkSize(1))
		if err != nil {
			pinned.Close()
			return err
		}
		for _, s := range pinned.Stats().PerWorker {
			for _, x := range ws {
				if x.PID == s.PID {
					fmt.Fprintf(w, "   worker %d (pid %d) pinned to CPU %d: ran on CPU %d, Cpus_allowed_list %s\n",
						s.ID, s.PID, s.PinnedCPU, x.CPU, x.Allowed)
					break
				}
			}
		}
		if err := pinned.Shutdown(ctx); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\n4. A task that calls os.Exit\n")
	// The pool reports its own events (workers spawned, crashed, recycled)
	// to a log/slog logger, slog.Default() unless WithLogger sets one: here
	// a text handler on the lesson's output, without the time.
	logger := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	p, err = procpool.New(procpool.WithWorkers(2), procpool.WithOutput(w), procpool.WithLogger(logger))
	if err != nil {
		return err
	}
	defer p.Close()
	before := p.Stats().PerWorker
	_, err = exitTask.Call(ctx, p, 3)
	var ce *procpool.CrashError
	if !errors.As(err, &ce) {
		return fmt.Errorf("exit task: want a crash, got %v", err)
	}
	fmt.Fprintf(w, "   the call failed: %v\n", err)
	v, err = fibTask.Call(ctx, p, 20)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "   the pool goes on: fib(20) = %d\n", v)
	start = time.Now()
	st := p.Stats()
	for st.Alive < 2 && time.Since(start) < 10*time.Second {
		time.Sleep(time.Millisecond)
		st = p.Stats()
	}
	fmt.Fprintf(w, "   a new worker took the dead one's place (waited %v more for it)\n", round(time.Since(start)))
	fmt.Fprintf(w, "   crashes %d, restarts %d, workers alive %d; pids before %d %d, now %d %d\n",
		st.Crashes, st.Restarts, st.Alive, before[0].PID, before[1].PID, st.PerWorker[0].PID, st.PerWorker[1].PID)
	return p.Shutdown(ctx)
}

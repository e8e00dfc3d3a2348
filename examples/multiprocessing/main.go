// Command multiprocessing is the guide's multiprocessing lesson in Go.
//
// Go has no global interpreter lock, so goroutines already use every core;
// processes are for isolation: a task that crashes, leaks, must be killed on
// timeout, or should own one CPU. This program re-executes itself as child
// processes, first by hand with os/exec, then as worker processes with
// procpool, and shows, with figures measured as it runs:
//
//  1. one child process started and joined by hand: os/exec, its stdin
//     and stdout as pipes, its exit status (Python's mp.Process);
//  2. two child processes, a producer and a consumer, exchanging
//     length-prefixed JSON messages through a pipe, ended by a sentinel
//     (Python's mp.Queue);
//  3. one procpool worker process running a CPU-bound task, the name
//     top and ps show for it, and the task rate of one worker (Python's
//     mp.Pool(1));
//  4. a pool of the default size, one worker per GOMAXPROCS, running a
//     batch with Map, and its speedup over the single worker;
//  5. one worker pinned per CPU, each reporting the CPU it ran on;
//  6. a task that calls os.Exit: its call fails, the pool logs the crash
//     (log/slog, structured), replaces the worker and goes on.
//
// Run it with:
//
//	go run ./examples/multiprocessing          # fib(32), 500 ms per worker in lessons 3 and 4
//	go run ./examples/multiprocessing -quick   # small tasks and batches
//	go run ./examples/multiprocessing -v       # and the pools' debug log on stderr
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
	"time"

	"github.com/corework/corework/procpool"
)

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

type config struct {
	fibN     int           // fib argument of one task
	batch    time.Duration // time each worker spends on the measured batches of lessons 3 and 4
	minTasks int           // fewest tasks per worker in those batches
	messages int           // messages the producer of lesson 2 sends
	logger   *slog.Logger  // debug logger (-v); nil: the pools log to slog.Default()
}

// quickConfig is the configuration of -quick, which the tests run too:
// fib(27), batches of 50 ms per worker, three messages through the queue.
func quickConfig() config {
	return config{fibN: 27, batch: 50 * time.Millisecond, minTasks: 4, messages: 3}
}

// debugLogger is the logger of -v: every record, debug included, as text.
func debugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// debug logs to the -v logger, if there is one.
func (c config) debug(msg string, args ...any) {
	if c.logger != nil {
		c.logger.Debug(msg, args...)
	}
}

func main() {
	procpool.Main() // in a worker process: serve tasks, then exit
	childMain()     // in a child started by hand (lessons 1, 2): its role, then exit
	quick := flag.Bool("quick", false, "small tasks and batches (fib(27), 50 ms per worker), for a fast look")
	batch := flag.Duration("batch", 500*time.Millisecond, "time each worker spends on the measured batches of lessons 3 and 4")
	verbose := flag.Bool("v", false, "debug logging on stderr: workers spawned, children started")
	flag.Parse()
	cfg := config{fibN: 32, batch: *batch, minTasks: 4, messages: 5}
	if *quick {
		cfg = quickConfig()
	}
	if *verbose {
		cfg.logger = debugLogger(os.Stderr)
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
	if err := byHand(ctx, w, cfg); err != nil {
		return err
	}
	if err := queueLesson(ctx, w, cfg); err != nil {
		return err
	}
	one, err := oneWorker(ctx, w, cfg)
	if errors.Is(err, errors.ErrUnsupported) {
		fmt.Fprintf(w, "   procpool is not supported here: %v\n", err)
		return nil
	}
	if one != nil {
		defer one.pool.Close()
	}
	if err != nil {
		return err
	}
	n, err := poolSpeedup(ctx, w, cfg, one)
	if err != nil {
		return err
	}
	if err := one.pool.Shutdown(ctx); err != nil {
		return err
	}
	if err := pinnedWorkers(ctx, w, cfg, n); err != nil {
		return err
	}
	return survive(ctx, w, cfg)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/procpool"
)

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

// options are the options of every pool of the lessons: the workers'
// output to w, the -v logger.
func (c config) options(w io.Writer, more ...procpool.Option) []procpool.Option {
	opts := append([]procpool.Option{procpool.WithOutput(w)}, more...)
	if c.logger != nil {
		opts = append(opts, procpool.WithLogger(c.logger))
	}
	return opts
}

// serial is lesson 3's pool of one worker and what it measured, which
// lesson 4 compares against.
type serial struct {
	pool      *procpool.Pool
	perWorker int     // tasks each worker runs in a measured batch
	rate      float64 // tasks per second on one worker
}

// oneWorker is lesson 3: one worker process, one call, then tasks for
// cfg.batch or more, to time the rate of one worker. The caller closes
// the pool it returns.
func oneWorker(ctx context.Context, w io.Writer, cfg config) (*serial, error) {
	fmt.Fprintf(w, "\n3. One worker process with procpool (mp.Pool(1))\n")
	one, err := procpool.New(cfg.options(w, procpool.WithWorkers(1))...)
	if err != nil {
		return nil, err
	}
	r := &serial{pool: one}
	start := time.Now()
	v, err := fibTask.Call(ctx, one, cfg.fibN)
	if err != nil {
		return r, err
	}
	pid := one.Stats().PerWorker[0].PID
	fmt.Fprintf(w, "   fib(%d) = %d in worker pid %d (parent pid %d), %v\n",
		cfg.fibN, v, pid, os.Getpid(), round(time.Since(start)))
	// On Linux a worker names itself after the program and its slot.
	comm, err1 := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	args, err2 := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err1 == nil && err2 == nil {
		fmt.Fprintf(w, "   top and ps -o comm show the worker as %q, ps -o args and htop as %q\n",
			strings.TrimSpace(string(comm)), strings.TrimSpace(strings.ReplaceAll(string(args), "\x00", " ")))
	}
	// Rounds of minTasks tasks until cfg.batch has passed: the rate of one
	// worker, and the number of tasks that fill a batch.
	rnd := make([]int, cfg.minTasks)
	for i := range rnd {
		rnd[i] = cfg.fibN
	}
	k := 0
	use := cpuUse(one)
	start = time.Now()
	for k == 0 || time.Since(start) < cfg.batch {
		if _, err := fibTask.Map(ctx, one, rnd, procpool.WithChunkSize(1)); err != nil {
			return r, err
		}
		k += len(rnd)
	}
	took := time.Since(start)
	r.perWorker, r.rate = k, float64(k)/took.Seconds()
	fmt.Fprintf(w, "   %d × fib(%d) on 1 worker, in rounds of %d until %v had passed: %v, %.1f tasks/s%s\n",
		k, cfg.fibN, len(rnd), cfg.batch, round(took), r.rate, use(took))
	return r, nil
}

// poolSpeedup is lesson 4: a pool of the default size runs a batch of
// the same length per worker as lesson 3's; its rate over one worker's is
// the speedup. It returns the pool's size.
func poolSpeedup(ctx context.Context, w io.Writer, cfg config, one *serial) (int, error) {
	// No WithWorkers (or WithWorkers(0)): one worker per GOMAXPROCS, which
	// on Linux follows the CPU affinity mask and the cgroup CPU quota.
	p, err := procpool.New(cfg.options(w)...)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	n := p.Stats().Workers
	fmt.Fprintf(w, "\n4. A pool of %d workers (the default: one per GOMAXPROCS) with Map (mp.Pool().map)\n", n)
	// One task per worker first, so every worker has started serving; the
	// Stats taken after it are the baseline of the measured batch.
	if _, err := fibTask.Map(ctx, p, make([]int, n), procpool.WithChunkSize(1)); err != nil {
		return 0, err
	}
	before := p.Stats()
	jobs := make([]int, n*one.perWorker)
	for i := range jobs {
		jobs[i] = cfg.fibN
	}
	use := cpuUse(p)
	start := time.Now()
	out, err := fibTask.Map(ctx, p, jobs, procpool.WithChunkSize(1))
	parallel := time.Since(start)
	if err != nil {
		return 0, err
	}
	after := p.Stats()
	rate := float64(len(jobs)) / parallel.Seconds()
	fmt.Fprintf(w, "   results: %v ... (%d values, in input order)\n", out[:min(3, len(out))], len(out))
	fmt.Fprintf(w, "   %d × fib(%d) on %d workers: %v, %.1f tasks/s%s\n",
		len(jobs), cfg.fibN, n, round(parallel), rate, use(parallel))
	var counts []string
	var total uint64
	for i, ws := range after.PerWorker {
		ran := ws.Tasks - before.PerWorker[i].Tasks
		total += ran
		counts = append(counts, strconv.FormatUint(ran, 10))
		fmt.Fprintf(w, "   worker %d (pid %d) ran %d tasks of the batch\n", ws.ID, ws.PID, ran)
	}
	fmt.Fprintf(w, "   %s = %d tasks: the measured batch, without the warm-up\n", strings.Join(counts, " + "), total)
	// Lesson 3's worker again, on a batch of the same length: the base of
	// the speedup is the mean of its rates before and after the pool's
	// batch, so that a change in the machine's load (other programs)
	// while the lesson runs weighs on both sides alike.
	use = cpuUse(one.pool)
	start = time.Now()
	if _, err := fibTask.Map(ctx, one.pool, jobs[:one.perWorker], procpool.WithChunkSize(1)); err != nil {
		return 0, err
	}
	took := time.Since(start)
	again := float64(one.perWorker) / took.Seconds()
	base := (one.rate + again) / 2
	fmt.Fprintf(w, "   %d × fib(%d) on 1 worker again: %v, %.1f tasks/s%s (before: %.1f)\n",
		one.perWorker, cfg.fibN, round(took), again, use(took), one.rate)
	fmt.Fprintf(w, "   speedup %.2f over 1 worker (ideal %d): %.1f tasks/s over their mean, %.1f\n",
		rate/base, n, rate, base)
	return n, p.Shutdown(ctx)
}

// cpuUse measures the CPUs a pool's workers keep busy: call it before a
// batch, and the function it returns after, with the batch's wall time.
// That function returns ", 1.97 CPUs busy", or "" where the CPU time of a
// process cannot be read (see cpuTime). Below the number of workers, the
// CPUs went to other programs, or the workers waited for tasks.
func cpuUse(p *procpool.Pool) func(wall time.Duration) string {
	before, ok := workersCPU(p)
	return func(wall time.Duration) string {
		after, ok2 := workersCPU(p)
		if !ok || !ok2 || wall <= 0 {
			return ""
		}
		return fmt.Sprintf(", %.2f CPUs busy", (after-before).Seconds()/wall.Seconds())
	}
}

// workersCPU is the CPU time a pool's worker processes have used so far.
func workersCPU(p *procpool.Pool) (time.Duration, bool) {
	var sum time.Duration
	for _, ws := range p.Stats().PerWorker {
		t, ok := cpuTime(ws.PID)
		if !ok {
			return 0, false
		}
		sum += t
	}
	return sum, true
}

// pinnedWorkers is lesson 5: n workers, each pinned to one CPU.
func pinnedWorkers(ctx context.Context, w io.Writer, cfg config, n int) error {
	fmt.Fprintf(w, "\n5. One worker pinned per CPU\n")
	pinned, err := procpool.New(cfg.options(w, procpool.WithWorkers(n), procpool.WithPinnedWorkers())...)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		fmt.Fprintf(w, "   pinning is not supported on %s\n", runtime.GOOS)
		return nil
	case err != nil:
		return err
	}
	defer pinned.Close()
	// Two rounds of n tasks at once, so every worker gets some.
	in := make([]int, 2*n)
	for i := range in {
		in[i] = 20
	}
	ws, err := whereTask.Map(ctx, pinned, in, procpool.WithChunkSize(1))
	if err != nil {
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
	return pinned.Shutdown(ctx)
}

// survive is lesson 6: a task that kills its worker.
func survive(ctx context.Context, w io.Writer, cfg config) error {
	fmt.Fprintf(w, "\n6. A task that calls os.Exit\n")
	// The pool reports its own events (workers spawned, crashed, recycled)
	// to a log/slog logger, slog.Default() unless WithLogger sets one: here
	// a text handler on the lesson's output, without the time, at the debug
	// level under -v.
	level := slog.LevelInfo
	if cfg.logger != nil {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	p, err := procpool.New(procpool.WithWorkers(2), procpool.WithOutput(w), procpool.WithLogger(logger))
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
	v, err := fibTask.Call(ctx, p, 20)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "   the pool goes on: fib(20) = %d\n", v)
	start := time.Now()
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

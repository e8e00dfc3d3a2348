package corework_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/internal/cputime"
	"github.com/corework/corework/pool"
	"github.com/corework/corework/procpool"
)

func TestMain(m *testing.M) {
	procpool.Main() // first: in a worker process this serves tasks and exits
	os.Exit(m.Run())
}

// procFib runs fib in a worker process; registered at package
// initialization so the workers (this test binary, re-executed) know it.
var procFib = procpool.Register("corework.bench.fib", func(_ context.Context, n int) (int, error) {
	return fib(n), nil
})

// sink keeps the compiler from dropping the work.
var sink atomic.Int64

// fib is the CPU-bound workload: no memory traffic, no locks, no I/O.
func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

const (
	scalingFibN  = 24 // about 0.1-0.2 ms per job
	scalingBatch = 64 // jobs per benchmark operation
)

// perOp remembers the time per operation of every run, by variant and
// worker count, so that later runs report their speedup over the one-worker
// run of the same variant in the same benchmark invocation.
var perOp sync.Map // scalingKey -> float64 ns/op

type scalingKey struct {
	variant string
	workers int
}

// BenchmarkScaling runs the same batch of fib jobs through a goroutine pool
// and through a process pool of 1 to GOMAXPROCS workers. It reports jobs/s,
// the speedup of each over its own one-worker run, and, for processes,
// "proc/goroutine": their jobs/s as a fraction of a goroutine pool's at the
// same worker count (1 means processes cost nothing extra; below 1 is the
// price of isolation). That ratio is paired: each process batch is timed
// right after a goroutine batch on a pool of its own, so that both see the
// same machine; on a shared virtual machine the speed drifts by more than
// the difference measured, and a ratio of runs seconds apart measures the
// drift.
func BenchmarkScaling(b *testing.B) {
	for w := 1; w <= runtime.GOMAXPROCS(0); w++ {
		b.Run(fmt.Sprintf("pool/workers=%d", w), func(b *testing.B) {
			p := pool.New(w)
			defer p.Close()
			reportScaling(b, "pool", w, goroutineBatch(p))
		})
	}
	jobs := make([]int, scalingBatch)
	for i := range jobs {
		jobs[i] = scalingFibN
	}
	for w := 1; w <= runtime.GOMAXPROCS(0); w++ {
		b.Run(fmt.Sprintf("process/workers=%d", w), func(b *testing.B) {
			p, err := procpool.New(procpool.WithWorkers(w), procpool.WithOutput(io.Discard))
			if errors.Is(err, errors.ErrUnsupported) {
				b.Skipf("worker processes unsupported on %s: %v", runtime.GOOS, err)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			g := pool.New(w)
			defer g.Close()
			ctx := context.Background()
			reportScaling(b, "process", w, func() {
				out, err := procFib.Map(ctx, p, jobs, procpool.WithChunkSize(1))
				if err != nil {
					b.Fatal(err)
				}
				sink.Add(int64(out[0]))
			}, goroutineBatch(g))
		})
	}
}

// goroutineBatch returns a batch of fib jobs on the goroutine pool p.
func goroutineBatch(p *pool.Pool) func() {
	return func() {
		for j := 0; j < scalingBatch; j++ {
			p.Go(func() { sink.Add(int64(fib(scalingFibN))) })
		}
		p.Wait()
	}
}

// reportScaling times batch b.N times, reports jobs/s and the speedup over
// the one-worker run of the same variant (1 for that run itself), and
// returns the time per batch. For processes it also reports
// "parent-us/task": the CPU time this process, the pool's parent, spent
// per job in the process batches (the workers' time is not in it), where
// the system counts it. With a paired batch (the goroutine baseline), it
// runs one before each batch, outside the timer, and reports
// "proc/goroutine": the paired batches' time over batch's.
func reportScaling(b *testing.B, variant string, workers int, batch func(), paired ...func()) float64 {
	batch() // warm up: start the workers
	for _, f := range paired {
		f()
	}
	b.ResetTimer()
	var cpu, pairedNs time.Duration
	cpuOK := true
	for i := 0; i < b.N; i++ {
		if len(paired) > 0 {
			b.StopTimer()
			t0 := time.Now()
			paired[0]()
			pairedNs += time.Since(t0)
			b.StartTimer()
		}
		cpu0, ok0 := cputime.Self()
		batch()
		cpu1, ok1 := cputime.Self()
		cpu += cpu1 - cpu0
		cpuOK = cpuOK && ok0 && ok1
	}
	b.StopTimer()
	if variant == "process" && cpuOK {
		b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N*scalingBatch), "parent-us/task")
	}
	nsPerOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	perOp.Store(scalingKey{variant, workers}, nsPerOp)
	b.ReportMetric(scalingBatch*1e9/nsPerOp, "jobs/s")
	if len(paired) > 0 {
		// jobs/s of processes over jobs/s of goroutines.
		b.ReportMetric(float64(pairedNs.Nanoseconds())/float64(b.N)/nsPerOp, "proc/goroutine")
	}
	if workers == 1 {
		b.ReportMetric(1, "speedup")
		return nsPerOp
	}
	base, ok := perOp.Load(scalingKey{variant, 1})
	if !ok {
		// A -bench filter skipped the workers=1 run: no honest baseline.
		b.Logf("no workers=1 run of %s in this run: run the whole BenchmarkScaling for a speedup", variant)
		return nsPerOp
	}
	b.ReportMetric(base.(float64)/nsPerOp, "speedup")
	return nsPerOp
}

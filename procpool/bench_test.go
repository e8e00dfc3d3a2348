package procpool_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/corework/corework/internal/cputime"
	"github.com/corework/corework/procpool"
)

// benchPool starts a pool that the benchmark closes when it ends. Where
// worker processes are unsupported (Windows), the benchmark is skipped.
func benchPool(b *testing.B, opts ...procpool.Option) *procpool.Pool {
	b.Helper()
	p, err := procpool.New(opts...)
	if errors.Is(err, errors.ErrUnsupported) {
		b.Skipf("worker processes unsupported on %s: %v", runtime.GOOS, err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// parentCPU starts measuring the CPU time of this process, the pool's
// parent (its workers are other processes and do not count). The function
// it returns reports that time per task as "parent-us/task", given the
// tasks run since; it reports nothing where the system has no counter.
func parentCPU(b *testing.B) func(tasks int) {
	start, ok := cputime.Self()
	return func(tasks int) {
		end, ok2 := cputime.Self()
		if ok && ok2 && tasks > 0 {
			b.ReportMetric(float64((end-start).Nanoseconds())/1e3/float64(tasks), "parent-us/task")
		}
	}
}

// BenchmarkCall measures one tiny task's round trip on an idle pool.
func BenchmarkCall(b *testing.B) {
	p := benchPool(b, procpool.WithWorkers(1))
	ctx := context.Background()
	cpu := parentCPU(b)
	for b.Loop() {
		if _, err := double.Call(ctx, p, 1); err != nil {
			b.Fatal(err)
		}
	}
	cpu(b.N)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N), "us/op")
}

// BenchmarkMap measures Map over 100k tiny tasks on all CPUs, one request
// per input (unchunked) and with automatic chunks.
func BenchmarkMap(b *testing.B) {
	in := ints(100_000)
	for _, bc := range []struct {
		name  string
		chunk int
	}{{"unchunked", 1}, {"chunked", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			p := benchPool(b)
			ctx := context.Background()
			// Let the pool learn the task's cost (window, chunk size).
			if _, err := double.Map(ctx, p, in[:10_000], procpool.WithChunkSize(bc.chunk)); err != nil {
				b.Fatal(err)
			}
			cpu := parentCPU(b)
			for b.Loop() {
				if _, err := double.Map(ctx, p, in, procpool.WithChunkSize(bc.chunk)); err != nil {
					b.Fatal(err)
				}
			}
			cpu(b.N * len(in))
			b.ReportMetric(float64(b.N*len(in))/b.Elapsed().Seconds(), "jobs/s")
		})
	}
}

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

var fibTask = procpool.Register("test.fib", func(_ context.Context, n int) (int, error) { return fib(n), nil })

// BenchmarkSpeedup runs the same CPU-bound batch (64 × fib(24), about
// 0.1-0.2 ms a job, the root BenchmarkScaling's workload) on 1 to
// GOMAXPROCS worker processes (the default pool size) and reports the
// speedup over one worker.
func BenchmarkSpeedup(b *testing.B) {
	jobs := make([]int, 64)
	for i := range jobs {
		jobs[i] = 24
	}
	n := runtime.GOMAXPROCS(0)
	run := func(b *testing.B, workers int) float64 {
		p := benchPool(b, procpool.WithWorkers(workers))
		ctx := context.Background()
		if _, err := fibTask.Map(ctx, p, jobs[:workers], procpool.WithChunkSize(1)); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := fibTask.Map(ctx, p, jobs, procpool.WithChunkSize(1)); err != nil {
				b.Fatal(err)
			}
		}
		return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	}
	var base float64
	for w := 1; w <= n; w++ {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			perOp := run(b, w)
			if w == 1 {
				base = perOp
			}
			if base > 0 {
				b.ReportMetric(base/perOp, "speedup")
			}
		})
	}
}

package monitor_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/pool"
)

// Take a snapshot over a 100 ms window and draw it.
func ExampleSampler_Sample() {
	s, err := monitor.NewSampler(monitor.WithMinWindow(100 * time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	snap, err := s.Sample(context.Background()) // waits for the window
	if err != nil {
		fmt.Println(err)
		return
	}
	var out strings.Builder
	monitor.Render(&out, snap)
	fmt.Println(snap.Window >= 100*time.Millisecond, len(snap.Cores) > 0)
	fmt.Println(strings.Contains(out.String(), "CPU Total:"))
	// Output:
	// true true
	// true
}

// Render draws a snapshot as the guide's terminal view, without colour
// unless the writer is a terminal.
func ExampleRender() {
	monitor.Render(os.Stdout, monitor.Snapshot{
		Time: time.Date(2025, 1, 2, 12, 45, 30, 0, time.UTC),
		CPU:  0.452,
		Cores: []monitor.Core{
			{CPU: 0, Usage: 0.605},
			{CPU: 1, Usage: 0.301},
		},
		Memory: monitor.Memory{Total: 2000 << 20, Used: 708 << 20, UsedRatio: 0.354},
		Load:   monitor.Load{Load1: 1.23, Load5: 0.98, Load15: 0.76},
		Procs: []monitor.Process{
			{PID: 4242, Name: "worker", CPU: 0.98, RSS: 12 << 20, LastCPU: 1, Allowed: affinity.CPUSet{1}},
		},
	})
	// Output:
	// [12:45:30] ==================================================
	// CPU Total:  45.2%
	//   CPU0: [████████████░░░░░░░░] 60.5%
	//   CPU1: [██████░░░░░░░░░░░░░░] 30.1%
	// Memory:     35.4% (708/2000 MB)
	// Load Avg:  1.23, 0.98, 0.76
	// PID 4242    worker          CPU  98.0%  RSS   12.0 MB  last CPU 1  allowed 1
}

// Register the system collector, the Go and process collectors and a pool
// collector on a registry, then serve it with monitor.Handler(reg).
func ExampleRegister() {
	s, err := monitor.NewSampler(monitor.WithMinWindow(10 * time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	stats := func() pool.Stats { return pool.Stats{Size: 4} } // normally p.Stats
	reg := prometheus.NewRegistry()
	if err := monitor.Register(reg, s, monitor.NewPoolCollector("images", stats)); err != nil {
		fmt.Println(err)
		return
	}
	fams, err := reg.Gather()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range fams {
		if name := f.GetName(); strings.HasPrefix(name, "corework_") {
			fmt.Println(name, f.GetType())
		}
	}
	// Output:
	// corework_cpu_core_usage_ratio GAUGE
	// corework_cpu_seconds_total COUNTER
	// corework_cpu_usage_ratio GAUGE
	// corework_cpu_usage_window_seconds GAUGE
	// corework_load1 GAUGE
	// corework_load15 GAUGE
	// corework_load5 GAUGE
	// corework_memory_available_bytes GAUGE
	// corework_memory_total_bytes GAUGE
	// corework_memory_used_bytes GAUGE
	// corework_memory_used_ratio GAUGE
	// corework_pool_queue_wait_max_seconds GAUGE
	// corework_pool_queue_wait_seconds_total COUNTER
	// corework_pool_size GAUGE
	// corework_pool_tasks_completed_total COUNTER
	// corework_pool_tasks_panicked_total COUNTER
	// corework_pool_tasks_running GAUGE
	// corework_pool_tasks_submitted_total COUNTER
	// corework_pool_tasks_waiting GAUGE
	// corework_pool_workers GAUGE
	// corework_process_allowed_cpus GAUGE
	// corework_process_cpu_seconds_total COUNTER
	// corework_process_cpu_usage_ratio GAUGE
	// corework_process_last_cpu GAUGE
	// corework_process_resident_memory_bytes GAUGE
}

// A job queue's collector exports, among its counters and gauges, a real
// Prometheus histogram of run durations per job type, whose buckets are
// the powers of two nanoseconds from 2^10 to 2^42.
func ExampleNewJobQueueCollector() {
	q, err := jobqueue.New(jobqueue.Config{Workers: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "resize", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	q.Start()
	for _, n := range []string{"1", "2", "3"} {
		if _, err := q.Run(context.Background(), jobqueue.JobRequest{Type: "resize", Payload: []byte(n)}); err != nil {
			fmt.Println(err)
			return
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(monitor.NewJobQueueCollector("media", q.Stats))
	fams, err := reg.Gather()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range fams {
		if f.GetName() == "corework_jobqueue_run_duration_seconds" {
			h := f.GetMetric()[0].GetHistogram()
			fmt.Println(f.GetType(), h.GetSampleCount(), len(h.GetBucket()))
		}
	}
	// Output:
	// HISTOGRAM 3 33
}

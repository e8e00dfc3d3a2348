package monitor_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/corework/corework/monitor"
	"github.com/corework/corework/procpool"
)

// Tasks of the process pool tests, registered at initialization so that
// the worker processes of the test binary have them too.
var (
	squareTask = procpool.Register("monitor.square", func(_ context.Context, n int) (int, error) { return n * n, nil })
	failTask   = procpool.Register("monitor.fail", func(_ context.Context, n int) (int, error) {
		return 0, fmt.Errorf("input %d refused", n)
	})
	exitTask = procpool.Register("monitor.exit", func(_ context.Context, code int) (int, error) {
		os.Exit(code)
		return 0, nil
	})
)

// gather registers c on a fresh registry and gathers it, by family name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// byLabel returns the metrics of family name by the value of label.
func byLabel(t *testing.T, fams map[string]*dto.MetricFamily, name, label string) map[string]*dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("%s missing", name)
	}
	out := map[string]*dto.Metric{}
	for _, m := range f.GetMetric() {
		out[labels(m)[label]] = m
	}
	return out
}

func lint(t *testing.T, c prometheus.Collector) {
	t.Helper()
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// A real pool of two worker processes runs tasks, fails some, loses a
// worker to a crash and replaces it; the collector reports all of it, per
// pool and per worker slot, and a default Sampler shows the workers as
// child process rows.
func TestNewProcPoolCollector(t *testing.T) {
	p, err := procpool.New(procpool.WithWorkers(2), procpool.WithOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := t.Context()
	inputs := make([]int, 20)
	for i := range inputs {
		inputs[i] = i
	}
	if _, err := squareTask.Map(ctx, p, inputs); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := failTask.Call(ctx, p, i); err == nil {
			t.Fatal("monitor.fail succeeded")
		}
	}
	if _, err := exitTask.Call(ctx, p, 3); !errors.Is(err, procpool.ErrWorkerCrashed) {
		t.Fatalf("exit task: %v, want a crash", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st := p.Stats(); st.Alive != 2 || st.Restarts != 1; st = p.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("worker not replaced: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}

	c := monitor.NewProcPoolCollector("thumbs", p.Stats)
	lint(t, c)
	const want = `
# HELP corework_procpool_crashes_total Workers that ended without being asked to.
# TYPE corework_procpool_crashes_total counter
corework_procpool_crashes_total{pool="thumbs"} 1
# HELP corework_procpool_requests_in_flight Requests sent to workers and not answered yet.
# TYPE corework_procpool_requests_in_flight gauge
corework_procpool_requests_in_flight{pool="thumbs"} 0
# HELP corework_procpool_requests_queued Requests waiting for a worker.
# TYPE corework_procpool_requests_queued gauge
corework_procpool_requests_queued{pool="thumbs"} 0
# HELP corework_procpool_restarts_total Workers started in place of one that ended (crash, kill, recycling).
# TYPE corework_procpool_restarts_total counter
corework_procpool_restarts_total{pool="thumbs"} 1
# HELP corework_procpool_tasks_completed_total Inputs that returned an output.
# TYPE corework_procpool_tasks_completed_total counter
corework_procpool_tasks_completed_total{pool="thumbs"} 20
# HELP corework_procpool_tasks_failed_total Inputs that returned an error (handler error, panic, crash, ...).
# TYPE corework_procpool_tasks_failed_total counter
corework_procpool_tasks_failed_total{pool="thumbs"} 4
# HELP corework_procpool_workers Configured number of worker processes.
# TYPE corework_procpool_workers gauge
corework_procpool_workers{pool="thumbs"} 2
# HELP corework_procpool_workers_alive Worker processes running now.
# TYPE corework_procpool_workers_alive gauge
corework_procpool_workers_alive{pool="thumbs"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"corework_procpool_crashes_total", "corework_procpool_requests_in_flight", "corework_procpool_requests_queued",
		"corework_procpool_restarts_total", "corework_procpool_tasks_completed_total", "corework_procpool_tasks_failed_total",
		"corework_procpool_workers", "corework_procpool_workers_alive"); err != nil {
		t.Error(err)
	}

	st := p.Stats()
	fams := gather(t, c)
	tasks := byLabel(t, fams, "corework_procpool_worker_tasks_total", "worker")
	pids := byLabel(t, fams, "corework_procpool_worker_pid", "worker")
	last := byLabel(t, fams, "corework_procpool_worker_last_cpu", "worker")
	if _, ok := fams["corework_procpool_worker_pinned_cpu"]; ok {
		t.Error("pinned CPU exported for a pool that is not pinned")
	}
	var sum float64
	for _, w := range st.PerWorker {
		id := strconv.Itoa(w.ID)
		if tasks[id] == nil || pids[id] == nil || last[id] == nil {
			t.Fatalf("worker %s: tasks %v, pid %v, last CPU %v", id, tasks[id], pids[id], last[id])
		}
		sum += value(tasks[id])
		if got := int(value(pids[id])); got != w.PID || got == os.Getpid() {
			t.Errorf("worker %s: pid %d, want %d", id, got, w.PID)
		}
		if l := labels(pids[id]); len(l) != 2 || l["pool"] != "thumbs" {
			t.Errorf("worker %s: labels %v", id, l)
		}
		if cpu := value(last[id]); cpu < 0 {
			t.Errorf("worker %s: last CPU %v", id, cpu)
		}
		if value(byLabel(t, fams, "corework_procpool_worker_requests_in_flight", "worker")[id]) != 0 {
			t.Errorf("worker %s: requests in flight at rest", id)
		}
	}
	if len(tasks) != 2 || sum != 24 {
		t.Errorf("%d worker slots with %v tasks, want 2 with 24", len(tasks), sum)
	}

	// The workers are this process's children: a default Sampler has a
	// row for each, with the CPU it last ran on and the CPUs it may use.
	snap := sample(t, newSampler(t, monitor.WithMinWindow(0)))
	for _, w := range st.PerWorker {
		i := slices.IndexFunc(snap.Procs, func(p monitor.Process) bool { return p.PID == w.PID })
		if i < 1 {
			t.Errorf("worker %d (PID %d) not among the rows after this process: %+v", w.ID, w.PID, snap.Procs)
			continue
		}
		if r := snap.Procs[i]; r.RSS == 0 || r.LastCPU < 0 || !r.Allowed.Contains(r.LastCPU) {
			t.Errorf("worker row %+v", r)
		}
	}
}

func TestNewProcPoolCollectorNil(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "monitor: ") {
			t.Errorf("recovered %v, want a monitor: panic", r)
		}
	}()
	monitor.NewProcPoolCollector("x", nil)
}

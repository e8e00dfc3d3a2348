package monitor

import (
	"strconv"

	"github.com/corework/corework/procpool"
	"github.com/prometheus/client_golang/prometheus"
)

// NewProcPoolCollector returns a Prometheus collector for one process pool,
// reading stats (normally the pool's Stats method) once per scrape. Every
// metric carries the label pool=name; the per-worker ones also carry
// worker, the slot number (0 to workers-1), which stays the same when the
// slot's process is replaced, so restarts add no series. stats must be safe
// to call from any goroutine and should not block. NewProcPoolCollector
// panics if stats is nil. It exports:
//
//	corework_procpool_workers                      gauge   configured number of workers
//	corework_procpool_workers_alive                gauge   worker processes running
//	corework_procpool_restarts_total               counter workers started in place of one that ended
//	corework_procpool_crashes_total                counter workers that ended without being asked to
//	corework_procpool_requests_queued              gauge   waiting for a worker
//	corework_procpool_requests_in_flight           gauge   sent to workers, not answered yet
//	corework_procpool_tasks_completed_total        counter inputs that returned an output
//	corework_procpool_tasks_failed_total           counter inputs that returned an error
//	corework_procpool_worker_tasks_total{worker}   counter inputs sent to the slot
//	corework_procpool_worker_requests_in_flight{worker} gauge
//	corework_procpool_worker_pid{worker}           gauge   while a process runs in the slot
//	corework_procpool_worker_last_cpu{worker}      gauge   CPU it last ran on (Linux)
//	corework_procpool_worker_pinned_cpu{worker}    gauge   for a pinned pool
//
// The process rows of a [Sampler] (its CPU usage, memory and affinity) show
// the same workers by PID: they are this process's children.
func NewProcPoolCollector(name string, stats func() procpool.Stats) prometheus.Collector {
	if stats == nil {
		panic("monitor: NewProcPoolCollector with nil stats")
	}
	l := prometheus.Labels{"pool": name}
	const g, c = prometheus.GaugeValue, prometheus.CounterValue
	const sub = "procpool"
	type S = procpool.Stats
	worker := []string{"worker"}
	var (
		tasks    = newStatDesc(sub, "worker_tasks_total", "Inputs sent to the processes of one worker slot.", worker, l)
		inFlight = newStatDesc(sub, "worker_requests_in_flight", "Requests sent to the process of one worker slot and not answered yet.", worker, l)
		pid      = newStatDesc(sub, "worker_pid", "PID of the process running in one worker slot; absent while none runs.", worker, l)
		lastCPU  = newStatDesc(sub, "worker_last_cpu", "CPU the process of one worker slot last ran on; absent where unknown.", worker, l)
		pinned   = newStatDesc(sub, "worker_pinned_cpu", "CPU one worker slot is pinned to; absent if not pinned.", worker, l)
	)
	return &statsCollector[S]{
		stats: stats,
		metrics: []statMetric[S]{
			newStatMetric(sub, "workers", "Configured number of worker processes.", g, l,
				func(s S) float64 { return float64(s.Workers) }),
			newStatMetric(sub, "workers_alive", "Worker processes running now.", g, l,
				func(s S) float64 { return float64(s.Alive) }),
			newStatMetric(sub, "restarts_total", "Workers started in place of one that ended (crash, kill, recycling).", c, l,
				func(s S) float64 { return float64(s.Restarts) }),
			newStatMetric(sub, "crashes_total", "Workers that ended without being asked to.", c, l,
				func(s S) float64 { return float64(s.Crashes) }),
			newStatMetric(sub, "requests_queued", "Requests waiting for a worker.", g, l,
				func(s S) float64 { return float64(s.Queued) }),
			newStatMetric(sub, "requests_in_flight", "Requests sent to workers and not answered yet.", g, l,
				func(s S) float64 { return float64(s.InFlight) }),
			newStatMetric(sub, "tasks_completed_total", "Inputs that returned an output.", c, l,
				func(s S) float64 { return float64(s.Completed) }),
			newStatMetric(sub, "tasks_failed_total", "Inputs that returned an error (handler error, panic, crash, ...).", c, l,
				func(s S) float64 { return float64(s.Failed) }),
		},
		extra: []*prometheus.Desc{tasks, inFlight, pid, lastCPU, pinned},
		more: func(s S, ch chan<- prometheus.Metric) {
			for _, w := range s.PerWorker {
				id := strconv.Itoa(w.ID)
				ch <- prometheus.MustNewConstMetric(tasks, c, float64(w.Tasks), id)
				ch <- prometheus.MustNewConstMetric(inFlight, g, float64(w.InFlight), id)
				for _, m := range []struct {
					d *prometheus.Desc
					v int
				}{{pid, w.PID}, {lastCPU, w.CPU}, {pinned, w.PinnedCPU}} {
					if m.v >= 0 {
						ch <- prometheus.MustNewConstMetric(m.d, g, float64(m.v), id)
					}
				}
			}
		},
	}
}

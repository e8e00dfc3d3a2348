package monitor

import (
	"github.com/corework/corework/pool"
	"github.com/prometheus/client_golang/prometheus"
)

// NewPoolCollector returns a Prometheus collector for one goroutine pool,
// reading stats (normally the pool's Stats method) once per scrape. Every
// metric carries the label pool=name, so several pools can be registered on
// one registry under different names; registering two with the same name
// fails. stats must be safe to call from any goroutine and should not block.
// NewPoolCollector panics if stats is nil. It exports:
//
//	corework_pool_size                         gauge   configured maximum of workers
//	corework_pool_workers                      gauge   worker goroutines alive
//	corework_pool_tasks_running                gauge
//	corework_pool_tasks_waiting                gauge   submitted, not started
//	corework_pool_tasks_submitted_total        counter
//	corework_pool_tasks_completed_total        counter panicked ones included
//	corework_pool_tasks_panicked_total         counter
//	corework_pool_queue_wait_seconds_total     counter summed wait before start
//	corework_pool_queue_wait_max_seconds       gauge   longest single wait
func NewPoolCollector(name string, stats func() pool.Stats) prometheus.Collector {
	if stats == nil {
		panic("monitor: NewPoolCollector with nil stats")
	}
	l := prometheus.Labels{"pool": name}
	const g, c = prometheus.GaugeValue, prometheus.CounterValue
	type S = pool.Stats
	return &statsCollector[S]{stats: stats, metrics: []statMetric[S]{
		newStatMetric("pool", "size", "Configured maximum number of workers.", g, l,
			func(s S) float64 { return float64(s.Size) }),
		newStatMetric("pool", "workers", "Worker goroutines alive.", g, l,
			func(s S) float64 { return float64(s.Workers) }),
		newStatMetric("pool", "tasks_running", "Tasks running now.", g, l,
			func(s S) float64 { return float64(s.Running) }),
		newStatMetric("pool", "tasks_waiting", "Tasks submitted and not yet started.", g, l,
			func(s S) float64 { return float64(s.Waiting) }),
		newStatMetric("pool", "tasks_submitted_total", "Tasks submitted.", c, l,
			func(s S) float64 { return float64(s.Submitted) }),
		newStatMetric("pool", "tasks_completed_total", "Tasks finished, panicked ones included.", c, l,
			func(s S) float64 { return float64(s.Completed) }),
		newStatMetric("pool", "tasks_panicked_total", "Tasks that panicked.", c, l,
			func(s S) float64 { return float64(s.Panicked) }),
		newStatMetric("pool", "queue_wait_seconds_total", "Summed time tasks waited between submission and start.", c, l,
			func(s S) float64 { return s.QueueWaitTotal.Seconds() }),
		newStatMetric("pool", "queue_wait_max_seconds", "Longest time a single task waited before it started.", g, l,
			func(s S) float64 { return s.QueueWaitMax.Seconds() }),
	}}
}

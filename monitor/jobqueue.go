package monitor

import (
	"strconv"

	"github.com/corework/corework/jobqueue"
	"github.com/prometheus/client_golang/prometheus"
)

// priorityLabels are the values of the priority label, "0" to "9".
var priorityLabels = func() []string {
	l := make([]string, jobqueue.NumPriorities)
	for p := range l {
		l[p] = strconv.Itoa(p)
	}
	return l
}()

// NewJobQueueCollector returns a Prometheus collector for one job queue,
// reading stats (normally the Queue's Stats method) once per scrape. Every
// metric carries the label queue=name. stats must be safe to call from any
// goroutine and should not block. NewJobQueueCollector panics if stats is
// nil. It exports:
//
//	corework_jobqueue_jobs_total{type,state}             counter jobs ended succeeded, failed or canceled
//	corework_jobqueue_retries_total{type}                counter failed attempts followed by a retry
//	corework_jobqueue_jobs_submitted_total               counter jobs accepted by Submit and Run
//	corework_jobqueue_jobs_active{state}                 gauge   pending, scheduled, retrying, running
//	corework_jobqueue_jobs_retained                      gauge   finished jobs kept for Get and List
//	corework_jobqueue_depth{priority}                    gauge   pending jobs per level, "0" to "9"
//	corework_jobqueue_workers                            gauge   worker goroutines configured
//	corework_jobqueue_workers_busy                       gauge   workers running a handler
//	corework_jobqueue_throughput_jobs_per_second         gauge   jobs finished in the last full second
//	corework_jobqueue_run_duration_seconds{type}         histogram every attempt
//	corework_jobqueue_wait_duration_seconds{priority}    histogram ready to first start
//
// Counters and durations cover the jobs of this Queue's workers, per
// registered job type (every registered type has its series); the gauges
// read from the backend (active jobs, depth, retained) cover every process
// sharing it. The wait histogram of a priority level appears once a job has
// started at that level, so that the levels a program never uses cost no
// series. The histograms' buckets are the powers of two from 2^10 ns
// (1.024µs) to 2^42 ns (about 73 minutes), exact counts read off
// [jobqueue.Latency]'s Buckets, so histogram_quantile over them is as
// precise as the bucket bounds allow.
func NewJobQueueCollector(name string, stats func() jobqueue.Stats) prometheus.Collector {
	if stats == nil {
		panic("monitor: NewJobQueueCollector with nil stats")
	}
	l := prometheus.Labels{"queue": name}
	const g, c = prometheus.GaugeValue, prometheus.CounterValue
	const sub = "jobqueue"
	type S = jobqueue.Stats
	var (
		jobs    = newStatDesc(sub, "jobs_total", "Jobs ended, by type and final state (succeeded, failed, canceled).", []string{"type", "state"}, l)
		retries = newStatDesc(sub, "retries_total", "Failed attempts followed by a retry, by job type.", []string{"type"}, l)
		active  = newStatDesc(sub, "jobs_active", "Jobs not finished, by state (pending, scheduled, retrying, running).", []string{"state"}, l)
		depth   = newStatDesc(sub, "depth", "Pending jobs per priority level.", []string{"priority"}, l)
		run     = newStatDesc(sub, "run_duration_seconds", "Duration of every attempt, by job type.", []string{"type"}, l)
		wait    = newStatDesc(sub, "wait_duration_seconds", "Time from a job becoming ready to its first attempt's start, by priority level.", []string{"priority"}, l)
	)
	return &statsCollector[S]{
		stats: stats,
		metrics: []statMetric[S]{
			newStatMetric(sub, "jobs_submitted_total", "Jobs accepted by Submit and Run.", c, l,
				func(s S) float64 { return float64(s.Submitted) }),
			newStatMetric(sub, "jobs_retained", "Finished jobs kept for Get and List.", g, l,
				func(s S) float64 { return float64(s.Retained) }),
			newStatMetric(sub, "workers", "Worker goroutines: configured, or the autoscaler's count now.", g, l,
				func(s S) float64 { return float64(s.Workers) }),
			newStatMetric(sub, "worker_resizes_total", "Changes of the worker count by the autoscaler (jobqueue.Config.Autoscale).", c, l,
				func(s S) float64 { return float64(s.Resizes) }),
			newStatMetric(sub, "workers_busy", "Workers running a handler now.", g, l,
				func(s S) float64 { return float64(s.Busy) }),
			newStatMetric(sub, "throughput_jobs_per_second", "Jobs this queue's workers finished in the last full second.", g, l,
				func(s S) float64 { return s.Throughput }),
		},
		extra: []*prometheus.Desc{jobs, retries, active, depth, run, wait},
		more: func(s S, ch chan<- prometheus.Metric) {
			for typ, ts := range s.Types {
				ch <- prometheus.MustNewConstMetric(jobs, c, float64(ts.Succeeded), typ, "succeeded")
				ch <- prometheus.MustNewConstMetric(jobs, c, float64(ts.Failed), typ, "failed")
				ch <- prometheus.MustNewConstMetric(jobs, c, float64(ts.Canceled), typ, "canceled")
				ch <- prometheus.MustNewConstMetric(retries, c, float64(ts.Retried), typ)
				ch <- latencyHistogram(run, ts.Run, typ)
			}
			ch <- prometheus.MustNewConstMetric(active, g, float64(s.Pending), "pending")
			ch <- prometheus.MustNewConstMetric(active, g, float64(s.Scheduled), "scheduled")
			ch <- prometheus.MustNewConstMetric(active, g, float64(s.Retrying), "retrying")
			ch <- prometheus.MustNewConstMetric(active, g, float64(s.Running), "running")
			for p, n := range s.Depth {
				ch <- prometheus.MustNewConstMetric(depth, g, float64(n), priorityLabels[p])
			}
			for p, ls := range s.Priorities {
				if ls.Wait.Count > 0 { // a level appears once a job has started at it
					ch <- latencyHistogram(wait, ls.Wait, priorityLabels[p])
				}
			}
		},
	}
}

// latencyHistogram turns a jobqueue.Latency into a Prometheus histogram in
// seconds. A jobqueue bucket counts the durations shorter than its bound,
// a Prometheus one those at most its bound: the same up to one nanosecond.
func latencyHistogram(d *prometheus.Desc, l jobqueue.Latency, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(l.Buckets))
	for _, b := range l.Buckets {
		buckets[b.UpperBound.Seconds()] = b.Count
	}
	return prometheus.MustNewConstHistogram(d, l.Count, l.Sum.Seconds(), buckets, labels...)
}

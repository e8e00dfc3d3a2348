// Package monitor measures the machine and the corework library at work:
// per-core and total CPU usage, memory, load, and the processes that run
// the work (their CPU usage, memory, the CPU each last ran on and the CPUs
// each may use). It shows them as terminal bars and exports them, with the
// library's own Stats, to Prometheus.
//
// A [Sampler] turns cumulative CPU counters into usage ratios from its own
// previous reading, so that every Sampler has its own baseline:
//
//	s, err := monitor.NewSampler()
//	if err != nil {
//		return err
//	}
//	snap, err := s.Sample(ctx) // the first Sample waits for a 200 ms window
//	if err != nil {
//		return err
//	}
//	monitor.Render(os.Stdout, snap)
//
// [Watch] redraws such a view every interval; [Register] and [Handler]
// serve the same figures on /metrics, with a collector per goroutine pool,
// process pool, job queue and WebSocket bridge of the program:
//
//	reg := prometheus.NewRegistry()
//	monitor.Register(reg, s,
//		monitor.NewPoolCollector("images", p.Stats),
//		monitor.NewProcPoolCollector("thumbs", pp.Stats),
//		monitor.NewJobQueueCollector("media", q.Stats),
//		monitor.NewWSBridgeCollector("api", bridge.Stats))
//	http.Handle("/metrics", monitor.Handler(reg))
//
// Metric names follow the Prometheus conventions: the corework_ namespace,
// base units (seconds, bytes), _total on counters and _ratio on values from
// 0 to 1. The process rows are this process and, on Linux, its child
// processes (the worker processes of a process pool among them), plus any
// PIDs asked for; the last-CPU and allowed-CPU figures come from the
// affinity package. Outside Linux, LastCPU is -1 and Allowed nil.
//
// The package starts no goroutine; Sample and Watch block in the caller's.
// It panics only on a nil stats function given to a collector constructor.
package monitor

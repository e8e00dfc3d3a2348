package monitor

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric name this package defines.
const Namespace = "corework"

var (
	descCPUUsage = prometheus.NewDesc(Namespace+"_cpu_usage_ratio",
		"Busy share of all CPUs together over the last sample window, 0 to 1.", nil, nil)
	descCoreUsage = prometheus.NewDesc(Namespace+"_cpu_core_usage_ratio",
		"Busy share of one logical CPU over the last sample window, 0 to 1.", []string{"cpu"}, nil)
	descCPUSeconds = prometheus.NewDesc(Namespace+"_cpu_seconds_total",
		"Seconds each logical CPU spent in each mode since boot.", []string{"cpu", "mode"}, nil)
	descCPUWindow = prometheus.NewDesc(Namespace+"_cpu_usage_window_seconds",
		"Span covered by the CPU usage ratios.", nil, nil)
	descMemTotal = prometheus.NewDesc(Namespace+"_memory_total_bytes",
		"Total usable memory.", nil, nil)
	descMemAvailable = prometheus.NewDesc(Namespace+"_memory_available_bytes",
		"Memory available to programs without swapping.", nil, nil)
	descMemUsed = prometheus.NewDesc(Namespace+"_memory_used_bytes",
		"Memory in use: total minus available.", nil, nil)
	descMemRatio = prometheus.NewDesc(Namespace+"_memory_used_ratio",
		"Memory in use as a share of the total, 0 to 1.", nil, nil)
	descLoad1 = prometheus.NewDesc(Namespace+"_load1",
		"1 minute load average.", nil, nil)
	descLoad5 = prometheus.NewDesc(Namespace+"_load5",
		"5 minute load average.", nil, nil)
	descLoad15 = prometheus.NewDesc(Namespace+"_load15",
		"15 minute load average.", nil, nil)

	procLabels  = []string{"pid", "name"}
	descProcCPU = prometheus.NewDesc(Namespace+"_process_cpu_usage_ratio",
		"CPU usage of a watched process over the last sample window; 1 is one CPU busy.", procLabels, nil)
	descProcSeconds = prometheus.NewDesc(Namespace+"_process_cpu_seconds_total",
		"User plus system CPU time of a watched process.", procLabels, nil)
	descProcRSS = prometheus.NewDesc(Namespace+"_process_resident_memory_bytes",
		"Resident memory of a watched process.", procLabels, nil)
	descProcLastCPU = prometheus.NewDesc(Namespace+"_process_last_cpu",
		"Number of the CPU the main thread of a watched process last ran on.", procLabels, nil)
	descProcAllowed = prometheus.NewDesc(Namespace+"_process_allowed_cpus",
		"Number of CPUs a watched process may run on (its affinity mask).", procLabels, nil)
)

// cpuModes names the modes of corework_cpu_seconds_total as node_exporter
// does.
var cpuModes = [...]struct {
	name string
	get  func(CPUTimes) float64
}{
	{"user", func(t CPUTimes) float64 { return t.User }},
	{"nice", func(t CPUTimes) float64 { return t.Nice }},
	{"system", func(t CPUTimes) float64 { return t.System }},
	{"idle", func(t CPUTimes) float64 { return t.Idle }},
	{"iowait", func(t CPUTimes) float64 { return t.IOWait }},
	{"irq", func(t CPUTimes) float64 { return t.IRQ }},
	{"softirq", func(t CPUTimes) float64 { return t.SoftIRQ }},
	{"steal", func(t CPUTimes) float64 { return t.Steal }},
}

type systemCollector struct{ s *Sampler }

// NewSystemCollector returns a Prometheus collector that takes a Sample from
// s at every scrape and exports, under the corework_ namespace:
//
//	corework_cpu_usage_ratio                    gauge   all CPUs, 0 to 1
//	corework_cpu_core_usage_ratio{cpu}          gauge   one CPU, 0 to 1
//	corework_cpu_seconds_total{cpu,mode}        counter as node_cpu_seconds_total
//	corework_cpu_usage_window_seconds           gauge   span of the ratios
//	corework_memory_{total,available,used}_bytes gauge
//	corework_memory_used_ratio                  gauge   0 to 1
//	corework_load1, corework_load5, corework_load15 gauges
//	corework_process_cpu_usage_ratio{pid,name}  gauge   1 is one CPU busy
//	corework_process_cpu_seconds_total{pid,name} counter
//	corework_process_resident_memory_bytes{pid,name} gauge
//	corework_process_last_cpu{pid,name}         gauge   CPU number (Linux)
//	corework_process_allowed_cpus{pid,name}     gauge   size of the affinity mask (Linux)
//
// The ratios cover the window since the previous Sample of s, at least its
// minimum window (see [WithMinWindow]); a Sampler shared with a terminal
// view shares that window. A Sample error is reported to the scrape as an
// invalid metric, beside every metric that was read. Collect blocks as long
// as Sample does; the first scrape waits for the first window.
func NewSystemCollector(s *Sampler) prometheus.Collector {
	return systemCollector{s}
}

// Describe sends the descriptors of every metric the collector may export.
func (c systemCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descCPUUsage, descCoreUsage, descCPUSeconds, descCPUWindow,
		descMemTotal, descMemAvailable, descMemUsed, descMemRatio,
		descLoad1, descLoad5, descLoad15,
		descProcCPU, descProcSeconds, descProcRSS, descProcLastCPU, descProcAllowed,
	} {
		ch <- d
	}
}

// Collect takes a Sample and sends its metrics.
func (c systemCollector) Collect(ch chan<- prometheus.Metric) {
	snap, err := c.s.Sample(context.Background())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descCPUUsage, err)
	}
	if snap.Time.IsZero() {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descCPUUsage, snap.CPU)
	gauge(descCPUWindow, snap.Window.Seconds())
	for _, core := range snap.Cores {
		cpu := strconv.Itoa(core.CPU)
		gauge(descCoreUsage, core.Usage, cpu)
		for _, m := range cpuModes {
			counter(descCPUSeconds, m.get(core.Times), cpu, m.name)
		}
	}
	m := snap.Memory
	if m.Total > 0 {
		gauge(descMemTotal, float64(m.Total))
		gauge(descMemAvailable, float64(m.Available))
		gauge(descMemUsed, float64(m.Used))
		gauge(descMemRatio, m.UsedRatio)
	}
	gauge(descLoad1, snap.Load.Load1)
	gauge(descLoad5, snap.Load.Load5)
	gauge(descLoad15, snap.Load.Load15)
	for _, p := range snap.Procs {
		pid := strconv.Itoa(p.PID)
		gauge(descProcCPU, p.CPU, pid, p.Name)
		counter(descProcSeconds, p.CPUSeconds, pid, p.Name)
		gauge(descProcRSS, float64(p.RSS), pid, p.Name)
		if p.LastCPU >= 0 {
			gauge(descProcLastCPU, float64(p.LastCPU), pid, p.Name)
		}
		if p.Allowed != nil {
			gauge(descProcAllowed, float64(len(p.Allowed)), pid, p.Name)
		}
	}
}

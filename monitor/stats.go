package monitor

import "github.com/prometheus/client_golang/prometheus"

// statMetric is one metric read off a library's Stats struct.
type statMetric[T any] struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(T) float64
}

// statsCollector exports a fixed list of metrics read from one call of
// stats per scrape. It is how a library package whose Stats() returns a
// plain struct T gets a collector: list its metrics with newStatMetric and
// wrap them (see NewPoolCollector). Metrics with variable labels or
// histograms are described by extra and sent by more, from the same call of
// stats (see NewProcPoolCollector).
type statsCollector[T any] struct {
	stats   func() T
	metrics []statMetric[T]
	extra   []*prometheus.Desc
	more    func(T, chan<- prometheus.Metric)
}

// newStatMetric describes metric Namespace_subsystem_name, labelled with
// the const labels of the collector instance.
func newStatMetric[T any](subsystem, name, help string, kind prometheus.ValueType, labels prometheus.Labels, value func(T) float64) statMetric[T] {
	return statMetric[T]{
		desc:  prometheus.NewDesc(prometheus.BuildFQName(Namespace, subsystem, name), help, nil, labels),
		kind:  kind,
		value: value,
	}
}

// newStatDesc describes metric Namespace_subsystem_name with variable
// labels, and the const labels of the collector instance.
func newStatDesc(subsystem, name, help string, variable []string, labels prometheus.Labels) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, subsystem, name), help, variable, labels)
}

func (c *statsCollector[T]) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	for _, d := range c.extra {
		ch <- d
	}
}

func (c *statsCollector[T]) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s))
	}
	if c.more != nil {
		c.more(s, ch)
	}
}

package monitor

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Register registers on reg the system collector of s (see
// [NewSystemCollector]), the Go runtime collector (go_*) and the process
// collector of this process (process_*), then each collector of cs: one
// made by [NewPoolCollector], [NewProcPoolCollector], [NewJobQueueCollector]
// or [NewWSBridgeCollector], say. It registers all it can and returns the
// errors joined; a collector already registered gives a
// prometheus.AlreadyRegisteredError.
func Register(reg prometheus.Registerer, s *Sampler, cs ...prometheus.Collector) error {
	all := append([]prometheus.Collector{
		NewSystemCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cs...)
	var errs []error
	for _, c := range all {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}

package monitor

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Register registers on reg the system collector of s (see [NewCollector]),
// the Go runtime collector (go_*) and the process collector of this process
// (process_*), then each collector of cs: a [PoolCollector],
// [ProcPoolCollector], [JobQueueCollector] or [WSBridgeCollector], say. It
// registers all it can and returns the errors joined; a collector already
// registered gives a prometheus.AlreadyRegisteredError.
func Register(reg prometheus.Registerer, s *Sampler, cs ...prometheus.Collector) error {
	all := append([]prometheus.Collector{
		NewCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cs...)
	var errs []error
	for _, c := range all {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}

// Handler returns an HTTP handler serving the metrics of g in the text
// exposition format (or another one the scraper negotiates), built with
// promhttp.HandlerFor. A collector error fails the scrape with HTTP 500 and
// the error in the body, so that no failure goes unseen.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

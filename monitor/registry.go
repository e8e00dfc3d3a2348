package monitor

import (
	"compress/gzip"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// Handler returns an HTTP handler serving the metrics of g in the text
// exposition format (or another one the scraper negotiates), built with
// promhttp.HandlerFor. A collector error fails the scrape with HTTP 500 and
// the error in the body, so that no failure goes unseen. A scraper that
// accepts gzip (Prometheus does) gets the body gzipped at the fastest level:
// at promhttp's default level, compressing took a third of a scrape's time.
func Handler(g prometheus.Gatherer) http.Handler {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{DisableCompression: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.ServeHTTP(w, r)
			return
		}
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(w)
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		h.ServeHTTP(&gzipResponse{ResponseWriter: w, zw: zw}, r)
		zw.Close()
		gzipWriters.Put(zw)
	})
}

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // a valid level: no error
	return zw
}}

// gzipResponse sends the body through a gzip writer.
type gzipResponse struct {
	http.ResponseWriter
	zw *gzip.Writer
}

func (g *gzipResponse) Write(b []byte) (int, error) { return g.zw.Write(b) }

// WriteHeader drops a Content-Length set for the uncompressed body.
func (g *gzipResponse) WriteHeader(code int) {
	g.Header().Del("Content-Length")
	g.ResponseWriter.WriteHeader(code)
}

func acceptsGzip(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

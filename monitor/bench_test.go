package monitor_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/monitor"
)

// BenchmarkSample measures one full Sample: CPU counters, memory, load and
// the row of this process (name, CPU time, RSS, last CPU, allowed CPUs).
// With a zero window every Sample also closes a window. Target: <= 1 ms.
func BenchmarkSample(b *testing.B) {
	s, err := monitor.NewSampler(monitor.WithMinWindow(0))
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	start := time.Now()
	for b.Loop() {
		if _, err := s.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/sample")
}

// BenchmarkScrape measures one scrape of /metrics over loopback HTTP from
// a registry holding everything Register adds (system with this process's
// row, Go and process collectors) and a pool collector. Target: <= 2 ms.
func BenchmarkScrape(b *testing.B) {
	s, err := monitor.NewSampler(monitor.WithMinWindow(0))
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := monitor.Register(reg, s, monitor.PoolCollector("images", poolStats)); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(monitor.Handler(reg))
	defer srv.Close()
	client := srv.Client()
	var size int64
	start := time.Now()
	for b.Loop() {
		resp, err := client.Get(srv.URL + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatal(resp.Status, err)
		}
		size = n
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/scrape")
	b.ReportMetric(float64(size), "bytes/scrape")
}

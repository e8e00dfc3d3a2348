package monitor_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
)

// BenchmarkSample measures one full Sample: CPU counters, memory, load,
// the listing of this process's children (none here) and the row of this
// process (name, CPU time, RSS, last CPU, allowed CPUs). With a zero window
// every Sample also closes a window. Target: <= 1 ms.
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
// row, Go and process collectors) and a pool collector; with library, also
// a process pool, a WebSocket bridge and a real job queue that ran jobs of
// two types at the four named priorities (so six histograms of 33 buckets
// each). Target: <= 2 ms.
func BenchmarkScrape(b *testing.B) {
	b.Run("pool", func(b *testing.B) { benchScrape(b, monitor.NewPoolCollector("images", poolStats)) })
	b.Run("library", func(b *testing.B) {
		q, err := jobqueue.New(jobqueue.Config{Workers: 2})
		if err != nil {
			b.Fatal(err)
		}
		defer q.Shutdown(context.Background())
		for _, typ := range []string{"resize", "mail"} {
			jobqueue.HandleFunc(q, typ, func(context.Context, any) (int, error) { return 0, nil })
		}
		q.Start()
		for i := range 100 {
			typ := []string{"resize", "mail"}[i%2]
			prio := []jobqueue.Priority{jobqueue.Low, jobqueue.Normal, jobqueue.High, jobqueue.Critical}[i%4]
			if _, err := q.Run(b.Context(), jobqueue.JobRequest{Type: typ, Priority: prio}); err != nil {
				b.Fatal(err)
			}
		}
		benchScrape(b,
			monitor.NewPoolCollector("images", poolStats),
			monitor.NewProcPoolCollector("thumbs", procPoolStats),
			monitor.NewJobQueueCollector("media", q.Stats),
			monitor.NewWSBridgeCollector("api", wsBridgeStats))
	})
}

func benchScrape(b *testing.B, cs ...prometheus.Collector) {
	s, err := monitor.NewSampler(monitor.WithMinWindow(0))
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := monitor.Register(reg, s, cs...); err != nil {
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

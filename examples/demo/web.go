package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/procpool"
	"github.com/corework/corework/wsbridge"
)

// web serves /metrics and, at every other path, the browser dashboard and
// WebSocket bridge of the phase that is running. Each phase has its own
// queue, so the bridge is replaced between phases; the dashboard page
// reconnects by itself.
type web struct {
	sampler *monitor.Sampler
	metrics http.Handler
	srv     *http.Server
	done    chan struct{}

	mu     sync.Mutex
	bridge *wsbridge.Server
	q      *jobqueue.Queue
	pp     *procpool.Pool
}

func serveWeb(addr string, s *monitor.Sampler, w io.Writer) (*web, error) {
	h := &web{sampler: s, done: make(chan struct{})}
	reg := prometheus.NewRegistry()
	err := monitor.Register(reg, s,
		monitor.NewJobQueueCollector("demo", h.queueStats),
		monitor.NewProcPoolCollector("demo", h.poolStats))
	if err != nil {
		return nil, err
	}
	h.metrics = monitor.Handler(reg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(h.done)
		_ = h.srv.Serve(ln)
	}()
	fmt.Fprintf(w, "dashboard: http://%s/   metrics: http://%s/metrics\n", ln.Addr(), ln.Addr())
	return h, nil
}

func (h *web) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" {
		h.metrics.ServeHTTP(w, r)
		return
	}
	h.mu.Lock()
	b := h.bridge
	h.mu.Unlock()
	if b == nil {
		http.Error(w, "between phases: retry in a moment", http.StatusServiceUnavailable)
		return
	}
	b.ServeHTTP(w, r)
}

// attach makes q (and pp, which may be nil) the phase the page shows.
func (h *web) attach(q *jobqueue.Queue, pp *procpool.Pool) {
	b := wsbridge.New(q, wsbridge.Config{
		Fallback:      wsbridge.Dashboard(),
		StatsInterval: time.Second,
		SystemStats:   monitor.DashboardStats(h.sampler),
	})
	h.mu.Lock()
	h.bridge, h.q, h.pp = b, q, pp
	h.mu.Unlock()
}

// detach closes the phase's bridge (its clients get close 1001) before its
// queue shuts down.
func (h *web) detach() {
	h.mu.Lock()
	b := h.bridge
	h.bridge, h.q, h.pp = nil, nil, nil
	h.mu.Unlock()
	if b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	}
}

func (h *web) close() {
	h.detach()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
	<-h.done
}

func (h *web) queueStats() jobqueue.Stats {
	h.mu.Lock()
	q := h.q
	h.mu.Unlock()
	if q == nil {
		return jobqueue.Stats{}
	}
	return q.Stats()
}

func (h *web) poolStats() procpool.Stats {
	h.mu.Lock()
	pp := h.pp
	h.mu.Unlock()
	if pp == nil {
		return procpool.Stats{}
	}
	return pp.Stats()
}

// Command monitor shows what the machine's cores are doing, three ways.
//
//	go run ./examples/monitor                   # print one snapshot and exit
//	go run ./examples/monitor monitor           # redraw every -interval until Ctrl-C
//	go run ./examples/monitor prometheus        # serve /metrics on -addr (127.0.0.1:8000) until Ctrl-C
//
// Flags (after the subcommand): -interval (1s), -addr (127.0.0.1:8000),
// -pids (comma-separated PIDs to watch beside this process and its
// children), -threads (a row per thread, Linux only), -demo (run a small
// job queue, a pool of two worker processes and a goroutine pool beside, so
// that their metrics and process rows have data). -h prints the usage.
// prometheus.yml and grafana/ beside this file scrape and chart the
// prometheus subcommand.
//
// The prometheus subcommand listens on the loopback interface only, so that
// only this machine can scrape it. -addr :8000 listens on every interface,
// for a Prometheus on another machine: the metrics are read-only, but they
// tell whoever can reach the port the names, PIDs, CPU and memory use of
// the processes watched and the load of the machine, and nothing asks who
// is scraping. Put a firewall rule that lets only the Prometheus server in,
// or a reverse proxy with authentication and TLS, in front of it.
//
// The process rows are this process and its child processes (Linux), such
// as the demo's worker processes, plus the -pids. An application registers
// the collectors of its own pools and queues (monitor.NewPoolCollector,
// monitor.NewProcPoolCollector, monitor.NewJobQueueCollector) the way -demo
// does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/monitor"
	"github.com/corework/corework/procpool"
)

// defaultAddr is the listen address of the prometheus subcommand without
// -addr: loopback only (see the package doc before exposing it).
const defaultAddr = "127.0.0.1:8000"

func main() {
	procpool.Main() // in a worker process of the -demo pool: serve tasks, then exit
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "monitor:", err)
		os.Exit(1)
	}
}

// run carries out one subcommand until it is done or ctx is cancelled; a
// cancellation is a clean exit and returns nil.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("monitor "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	interval := fs.Duration("interval", time.Second, "sampling interval")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: monitor [monitor | prometheus] [flags]\n\n"+
			"  (none)      print one snapshot and exit\n"+
			"  monitor     redraw every -interval until Ctrl-C\n"+
			"  prometheus  serve /metrics on -addr until Ctrl-C\n\nflags:\n")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", defaultAddr, "listen `address` of the prometheus subcommand (:8000: every interface)")
	pidList := fs.String("pids", "", "comma-separated PIDs to watch beside this process and its children")
	threads := fs.Bool("threads", false, "show a row per thread (Linux only)")
	withDemo := fs.Bool("demo", false, "run a small job queue, process pool and goroutine pool to watch")
	verbose := fs.Bool("v", false, "debug log on stderr of the -demo's job queue and process pool")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage is printed, and asking for it is no failure
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cmd != "" && cmd != "monitor" && cmd != "prometheus" {
		return fmt.Errorf("unknown subcommand %q (want none, monitor or prometheus)", cmd)
	}
	if *interval <= 0 {
		return errors.New("-interval must be positive")
	}
	// A window of half the interval: ticks jitter, and a Sample that came a
	// little early must still close a window rather than repeat the last.
	opts := []monitor.Option{monitor.WithMinWindow(*interval / 2)}
	if *pidList != "" {
		for f := range strings.SplitSeq(*pidList, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || pid <= 0 {
				return fmt.Errorf("-pids: bad PID %q", f)
			}
			opts = append(opts, monitor.WithPIDs(pid))
		}
	}
	if *threads {
		opts = append(opts, monitor.WithThreads())
	}
	s, err := monitor.NewSampler(opts...)
	if err != nil {
		return err
	}
	var collectors []prometheus.Collector
	if *withDemo {
		var logger *slog.Logger
		if *verbose {
			logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		d, derr := startDemo(stderr, logger)
		if derr != nil {
			return fmt.Errorf("demo: %w", derr)
		}
		defer func() { err = errors.Join(err, d.stopDemo()) }() // err: run's result
		collectors = d.collectors()
	}

	switch cmd {
	case "":
		snap, err := s.Sample(ctx)
		if snap.Time.IsZero() {
			return ignoreCancel(err)
		}
		if err := monitor.Render(stdout, snap); err != nil {
			return err
		}
		return err
	case "monitor":
		return ignoreCancel(monitor.Watch(ctx, stdout, s, *interval))
	default: // "prometheus"
		return serve(ctx, s, *addr, stdout, collectors...)
	}
}

// serve serves /metrics on addr, with the collectors cs beside the
// sampler's, until ctx is cancelled, then shuts the server down, waiting up
// to five seconds for scrapes in flight.
func serve(ctx context.Context, s *monitor.Sampler, addr string, stdout io.Writer, cs ...prometheus.Collector) error {
	reg, err := newRegistry(s, cs...)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", monitor.Handler(reg))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "corework monitor: metrics at /metrics")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "serving http://%s/metrics (Ctrl-C to stop)\n", ln.Addr())

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done: // Serve failed on its own
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutCtx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// newRegistry returns the registry the prometheus subcommand serves. A
// program adds here a monitor.NewPoolCollector per goroutine pool, a
// monitor.NewProcPoolCollector per process pool and a
// monitor.NewJobQueueCollector per job queue, as -demo does.
func newRegistry(s *monitor.Sampler, cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	return reg, monitor.Register(reg, s, cs...)
}

// ignoreCancel turns the cancellation by Ctrl-C into a clean exit.
func ignoreCancel(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

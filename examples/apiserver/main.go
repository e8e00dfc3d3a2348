// Command apiserver is exercise 2 of corework: a REST API that hands work
// to a priority job queue and returns results by polling, by server-sent
// events or over a WebSocket.
//
//	go run ./examples/apiserver                    # http://127.0.0.1:8080, jobs in memory
//	go run ./examples/apiserver -store ./jobs      # durable: embedded NATS JetStream in ./jobs
//
// Endpoints: POST /jobs, GET /jobs, GET /jobs/{id}, DELETE /jobs/{id},
// GET /jobs/{id}/events (server-sent events), GET /stats and the WebSocket
// bridge on /ws. Ctrl-C stops it gracefully: the HTTP server first, then
// the queue, whose running jobs get -grace to finish.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// config is what one run serves. The zero value of each field is noted.
type config struct {
	addr    string        // listen address (empty: 127.0.0.1:8080)
	workers int           // worker goroutines (0: one per CPU)
	store   string        // JetStream directory (empty: jobs in memory)
	maxBody int64         // request body limit (0: 64 KiB)
	grace   time.Duration // shutdown time for running jobs (0: 10 s)
	// ready, if set, is called with the base URL once the server listens.
	ready func(url string)
}

func main() {
	os.Exit(cli(os.Args[1:], os.Stderr))
}

// cli parses args and serves until the process gets an interrupt; it
// returns the exit code: 0 after a clean shutdown, 1 on error, 2 on bad
// flags.
func cli(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("apiserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "listen `address` (host:port)")
	fs.IntVar(&cfg.workers, "workers", 0, "worker goroutines (0: one per CPU)")
	fs.StringVar(&cfg.store, "store", "", "keep jobs durably in an embedded NATS JetStream server storing its files in `dir` (default: in memory)")
	fs.Int64Var(&cfg.maxBody, "max-body", defaultMaxBody, "request body limit in `bytes`")
	fs.DurationVar(&cfg.grace, "grace", 10*time.Second, "how long running jobs may take to finish at shutdown")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "apiserver: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stderr, cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// run serves the API until ctx ends, then shuts down: the event streams
// and WebSocket clients are told, the HTTP server drains its requests,
// and the queue stops fetching and gives running jobs cfg.grace to end.
// It logs to logw and returns nil after a clean shutdown.
func run(ctx context.Context, logw io.Writer, cfg config) error {
	if cfg.addr == "" {
		cfg.addr = "127.0.0.1:8080"
	}
	if cfg.grace <= 0 {
		cfg.grace = 10 * time.Second
	}
	qcfg := jobqueue.Config{
		Workers:        cfg.workers,
		RetryDelay:     200 * time.Millisecond,
		MaxRetryDelay:  5 * time.Second,
		ShutdownPolicy: jobqueue.LeavePending,
	}
	if cfg.workers < 0 {
		return fmt.Errorf("apiserver: -workers %d: must not be negative", cfg.workers)
	}
	backend := "memory"
	if cfg.store != "" {
		b, err := jetstream.Embedded(cfg.store)
		if err != nil {
			return fmt.Errorf("apiserver: -store %s: %w", cfg.store, err)
		}
		qcfg.Backend = b
		backend = "jetstream in " + cfg.store
	}
	q, err := jobqueue.New(qcfg)
	if err != nil {
		if qcfg.Backend != nil {
			qcfg.Backend.Close(context.Background())
		}
		return fmt.Errorf("apiserver: %w", err)
	}
	registerJobs(q)
	api := newServer(q, serverConfig{MaxBody: cfg.maxBody})
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}

	// Stop everything in order, whatever happens below.
	shutdown := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.grace)
		defer cancel()
		err := errors.Join(api.shutdown(sctx), hs.Shutdown(sctx))
		if qerr := q.Shutdown(sctx); qerr != nil {
			// Running handlers have had their contexts canceled; wait for
			// them to return.
			fmt.Fprintf(logw, "apiserver: jobs still running after %v were canceled\n", cfg.grace)
			err = errors.Join(err, q.Shutdown(context.Background()))
		}
		return err
	}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return errors.Join(fmt.Errorf("apiserver: %w", err), shutdown())
	}
	if err := q.Start(); err != nil {
		ln.Close()
		return errors.Join(fmt.Errorf("apiserver: %w", err), shutdown())
	}
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(logw, "apiserver: listening on %s (%d workers, jobs in %s); Ctrl-C stops\n", url, q.Stats().Workers, backend)
	if cfg.ready != nil {
		cfg.ready(url)
	}

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	var serveErr error
	select {
	case serveErr = <-served: // the listener failed
	case <-ctx.Done():
		fmt.Fprintln(logw, "apiserver: shutting down")
	}
	err = shutdown()
	if serveErr == nil {
		serveErr = <-served // http.ErrServerClosed once Shutdown has begun
	}
	if !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(fmt.Errorf("apiserver: %w", serveErr), err)
	}
	if err == nil {
		st := q.Stats()
		fmt.Fprintf(logw, "apiserver: stopped; %d succeeded, %d failed, %d canceled, %d left in the store\n", st.Succeeded, st.Failed, st.Canceled, st.Left)
	}
	return err
}

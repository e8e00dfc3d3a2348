// Command apiserver is exercise 2 of corework: a REST API that hands work
// to a priority job queue and returns results by polling, by server-sent
// events or over a WebSocket.
//
//	go run ./examples/apiserver                    # http://127.0.0.1:8080, jobs in memory
//	go run ./examples/apiserver -store ./jobs      # durable: embedded NATS JetStream in ./jobs
//	go run ./examples/apiserver -addr :8080 -tokens tokens.txt   # open to other machines
//
// Endpoints: POST /jobs, GET /jobs, GET /jobs/{id}, DELETE /jobs/{id},
// GET /jobs/{id}/events (server-sent events), GET /stats and the WebSocket
// bridge on /ws. Ctrl-C stops it gracefully: the HTTP server first, then
// the queue, whose running jobs get -grace to finish.
//
// With -tokens, every request needs "Authorization: Bearer <token>" and
// acts for the token's principal: a principal sees and cancels its own
// jobs only (an operator's token sees all), within per-principal quotas.
// Without tokens every request is the principal "local", and the server
// refuses to listen beyond loopback unless -insecure is given.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
	"github.com/corework/corework/wsbridge"
)

// config is what one run serves. The zero value of each field is noted;
// a negative limit or timeout is an error.
type config struct {
	addr     string        // listen address (empty: 127.0.0.1:8080)
	workers  int           // worker goroutines (0: one per CPU)
	store    string        // JetStream directory (empty: jobs in memory)
	maxBody  int64         // request body limit (0: 64 KiB)
	grace    time.Duration // shutdown time for running jobs (0: 10 s)
	tokens   string        // token file (empty: no tokens, every request is access.Local)
	insecure bool          // listen beyond loopback without tokens
	logger   *slog.Logger  // the queue's, the bridge's and the JetStream backend's (-v); nil: none
	tlsCert  string        // certificate file (PEM); with tlsKey, serve https:// (and wss:// on /ws)
	tlsKey   string        // its private key file (PEM)

	// Per-principal limits (see serverConfig).
	maxActive       int   // active jobs (0: 1000)
	maxPayloadBytes int64 // payload bytes of active jobs (0: 16 MiB)
	maxStreams      int   // open event streams (0: 16)
	maxStreamsTotal int   // open event streams of all principals (0: 256)

	// Timeouts of the http.Server (event streams are exempt from the
	// read and write timeouts; see sseWriteTimeout).
	readHeaderTimeout time.Duration // (0: 10 s)
	readTimeout       time.Duration // a whole request, body included (0: 30 s)
	writeTimeout      time.Duration // from the end of the request header to the end of the answer (0: 30 s)
	idleTimeout       time.Duration // a keep-alive connection between requests (0: 60 s)
	heartbeat         time.Duration // event stream keep-alive period (0: 15 s)

	// ready, if set, is called with the base URL once the server listens.
	ready func(url string)
}

// Defaults of the http.Server's timeouts.
const (
	defaultReadHeaderTimeout = 10 * time.Second
	defaultReadTimeout       = 30 * time.Second
	defaultWriteTimeout      = 30 * time.Second
	defaultIdleTimeout       = 60 * time.Second
)

// httpServer returns the http.Server of h with cfg's timeouts. Every one
// is set, so that no client holds a connection, a goroutine or a buffered
// answer for long by sending or reading slowly; the event streams lift
// the read and write timeouts for themselves (see jobEvents).
func httpServer(cfg config, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cmp.Or(cfg.readHeaderTimeout, defaultReadHeaderTimeout),
		ReadTimeout:       cmp.Or(cfg.readTimeout, defaultReadTimeout),
		WriteTimeout:      cmp.Or(cfg.writeTimeout, defaultWriteTimeout),
		IdleTimeout:       cmp.Or(cfg.idleTimeout, defaultIdleTimeout),
		MaxHeaderBytes:    16 << 10,
	}
}

// check returns an error naming the flag of the first invalid field.
func (c *config) check() error {
	for _, v := range []struct {
		flag string
		n    int64
	}{
		{"workers", int64(c.workers)},
		{"max-body", c.maxBody},
		{"max-active", int64(c.maxActive)},
		{"max-payload-bytes", c.maxPayloadBytes},
		{"max-streams", int64(c.maxStreams)},
		{"max-streams-total", int64(c.maxStreamsTotal)},
		{"grace", int64(c.grace)},
		{"read-header-timeout", int64(c.readHeaderTimeout)},
		{"read-timeout", int64(c.readTimeout)},
		{"write-timeout", int64(c.writeTimeout)},
		{"idle-timeout", int64(c.idleTimeout)},
		{"heartbeat", int64(c.heartbeat)},
	} {
		if v.n < 0 {
			return fmt.Errorf("apiserver: -%s: must not be negative", v.flag)
		}
	}
	return nil
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
	fs.StringVar(&cfg.tokens, "tokens", "", "bearer tokens from `file`, one \"<token> <name> [operator]\" per line (default: none, every request is the principal \"local\", loopback only)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", "", "certificate `file` (PEM, the chain after the leaf); with -tls-key, serve https:// and wss://")
	fs.StringVar(&cfg.tlsKey, "tls-key", "", "private key `file` (PEM) of -tls-cert")
	fs.BoolVar(&cfg.insecure, "insecure", false, "listen beyond loopback without -tokens (only behind a proxy or firewall that guards the server)")
	fs.IntVar(&cfg.maxActive, "max-active", defaultMaxActive, "active jobs per principal (429 beyond)")
	fs.Int64Var(&cfg.maxPayloadBytes, "max-payload-bytes", defaultMaxPayloadBytes, "payload `bytes` of the active jobs per principal (429 beyond)")
	fs.IntVar(&cfg.maxStreams, "max-streams", defaultMaxStreams, "open event streams per principal (503 beyond)")
	fs.IntVar(&cfg.maxStreamsTotal, "max-streams-total", defaultMaxStreamsTotal, "open event streams of all principals (503 beyond)")
	fs.DurationVar(&cfg.writeTimeout, "write-timeout", defaultWriteTimeout, "time to write an answer, from the end of the request header (event streams: 10s per write instead)")
	verbose := fs.Bool("v", false, "debug log on stderr (the queue's, the WebSocket bridge's and, with -store, the JetStream backend's)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *verbose {
		cfg.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "apiserver: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for name, v := range map[string]int64{
		"max-body":          cfg.maxBody,
		"max-active":        int64(cfg.maxActive),
		"max-payload-bytes": cfg.maxPayloadBytes,
		"max-streams":       int64(cfg.maxStreams),
		"max-streams-total": int64(cfg.maxStreamsTotal),
		"write-timeout":     int64(cfg.writeTimeout),
	} {
		if v <= 0 {
			fmt.Fprintf(stderr, "apiserver: -%s %s: must be positive\n", name, fs.Lookup(name).Value)
			return 2
		}
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintln(stderr, err)
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
	if err := cfg.check(); err != nil {
		return err
	}
	// Who may use the server is settled before anything starts.
	var tokens map[string]wsbridge.Principal
	if cfg.tokens != "" {
		var err error
		if tokens, err = access.LoadTokens(cfg.tokens); err != nil {
			return fmt.Errorf("apiserver: -%w", err)
		}
	}
	if err := access.CheckListen(cfg.addr, len(tokens), cfg.insecure); err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	qcfg := jobqueue.Config{
		Workers:        cfg.workers,
		RetryDelay:     200 * time.Millisecond,
		MaxRetryDelay:  5 * time.Second,
		ShutdownPolicy: jobqueue.LeavePending,
		Logger:         cfg.logger,
	}
	backend := "memory"
	if cfg.store != "" {
		var opts []jetstream.Option
		if cfg.logger != nil {
			opts = append(opts, jetstream.WithLogger(cfg.logger))
		}
		b, err := jetstream.Embedded(cfg.store, opts...)
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
	api := newServer(q, serverConfig{
		MaxBody:         cfg.maxBody,
		Heartbeat:       cfg.heartbeat,
		Tokens:          tokens,
		MaxActive:       cfg.maxActive,
		MaxPayloadBytes: cfg.maxPayloadBytes,
		MaxStreams:      cfg.maxStreams,
		MaxStreamsTotal: cfg.maxStreamsTotal,
		WS:              wsbridge.Config{Logger: cfg.logger},
	})
	hs := httpServer(cfg, api)

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
	scheme := "http"
	if cfg.tlsCert != "" || cfg.tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			ln.Close()
			return errors.Join(fmt.Errorf("apiserver: -tls-cert/-tls-key: %w", err), shutdown())
		}
		// HTTP/1.1 only (no h2 in NextProtos): /ws upgrades need it.
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln, scheme = tls.NewListener(ln, hs.TLSConfig), "https"
	}
	if err := q.Start(); err != nil {
		ln.Close()
		return errors.Join(fmt.Errorf("apiserver: %w", err), shutdown())
	}
	url := scheme + "://" + ln.Addr().String()
	who := fmt.Sprintf("%d tokens", len(tokens))
	if tokens == nil {
		who = "no tokens"
	}
	fmt.Fprintf(logw, "apiserver: listening on %s (%d workers, jobs in %s, %s); Ctrl-C stops\n", url, q.Stats().Workers, backend, who)
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

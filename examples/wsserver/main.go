// Command wsserver is the WebSocket lesson of corework: an asynchronous
// server keeps many connections responsive while the heavy work (naive
// Fibonacci) runs on queue workers on the other CPUs, and each result comes
// back on the socket that asked for it.
//
//	go run ./examples/wsserver                     # serve on 127.0.0.1:8765
//	go run ./examples/wsserver -addr 0.0.0.0:8765  # accept other machines too
//	go run ./examples/wsserver client              # terminal client session
//	go run ./examples/wsserver -quick              # serve, run the session against itself, exit
//	go run ./examples/wsserver -v                  # debug logs of the queue and the bridge on stderr
//
// The server shows a dashboard at http://127.0.0.1:8765/ (job form, live
// jobs, per-core CPU bars) and speaks the wsbridge protocol on the same URL,
// so the guide's browser snippet works as is:
//
//	const ws = new WebSocket('ws://127.0.0.1:8765');
//	ws.onmessage = (event) => { const data = JSON.parse(event.data); console.log('Recibido:', data); };
//	ws.onopen = () => ws.send(JSON.stringify({ command: 'submit_job', task_type: 'calcular_fibonacci', data: { n: 35 } }));
//
// Ctrl-C stops it cleanly: no new connections, close 1001 to every client,
// then the queue drains.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/wsbridge"
)

// config is what a run needs; main fills it from the flags.
type config struct {
	addr      string          // listen address (server) or the server's address (client)
	workers   int             // queue workers; 0 is one per CPU
	session   session         // the client session's jobs
	quick     bool            // serve on a free port, run the session against it, exit
	ready     chan<- net.Addr // if set, receives the listening address (tests)
	statsTick time.Duration   // period of the dashboard's stats
	hosts     []string        // further names the server answers to (wsbridge.Config.Hosts)
	operator  string          // the operator's token; empty: a fresh one per run
	logger    *slog.Logger    // the queue's, the bridge's and the client's logger; nil: none
	tlsCert   string          // server: certificate file (PEM); with tlsKey, serve https and wss
	tlsKey    string          // server: its private key file (PEM)
	tls       bool            // client: dial wss://
	ca        string          // client: trust this certificate file (PEM) for wss://; implies tls
	proxies   []netip.Prefix  // server: reverse proxies whose X-Forwarded-For counts (wsbridge.Config.TrustedProxies)
}

// command is what the command line asks for.
type command struct {
	client bool // the client session against cfg.addr
	cfg    config
}

// parseArgs reads the command line (without the program name). Help and
// bad flags return flag.ErrHelp or the flag error, after printing to
// stderr.
func parseArgs(args []string, stderr io.Writer) (command, error) {
	var cmd command
	if len(args) > 0 && args[0] == "client" {
		cmd.client, args = true, args[1:]
	}
	fs := flag.NewFlagSet("wsserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8765", "address to listen on (server) or to connect to (client)")
	workers := fs.Int("workers", 0, "queue workers (0: one per CPU)")
	quick := fs.Bool("quick", false, "serve on a free port, run the client session against it with small jobs, and exit")
	hosts := fs.String("hosts", "", "comma-separated host names the server answers to besides its address (e.g. jobs.example.com), for browsers that reach it by name")
	verbose := fs.Bool("v", false, "debug logging on stderr (the queue's, the bridge's, the client's)")
	tlsCert := fs.String("tls-cert", "", "server: certificate `file` (PEM, the chain after the leaf); with -tls-key, serve https:// and wss://")
	tlsKey := fs.String("tls-key", "", "server: private key `file` (PEM) of -tls-cert")
	useTLS := fs.Bool("tls", false, "client: connect with wss:// (the system's trusted roots, or -ca)")
	ca := fs.String("ca", "", "client: trust the certificate in `file` (PEM) for wss://, e.g. the server's self-signed one; implies -tls")
	proxies := fs.String("trusted-proxies", "", "server: comma-separated `prefixes` of reverse proxies in front (127.0.0.1/32,::1/128 for one on this machine): anonymous clients then get a quota per address from X-Forwarded-For instead of sharing the proxy's")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: wsserver [-addr host:port] [-hosts names] [-workers n] [-tls-cert file -tls-key file] [-trusted-proxies prefixes] [-quick] [-v]\n       wsserver client [-addr host:port] [-tls] [-ca file] [-v]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cmd, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wsserver: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return cmd, errUsage
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(stderr, "wsserver: -tls-cert and -tls-key go together")
		return cmd, errUsage
	}
	cmd.cfg = config{addr: *addr, workers: *workers, session: fullSession, quick: *quick, statsTick: time.Second,
		tlsCert: *tlsCert, tlsKey: *tlsKey, tls: *useTLS || *ca != "", ca: *ca}
	if *hosts != "" {
		cmd.cfg.hosts = strings.Split(*hosts, ",")
	}
	if *proxies != "" {
		for _, f := range strings.Split(*proxies, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(f))
			if err != nil {
				fmt.Fprintf(stderr, "wsserver: -trusted-proxies: %v (want prefixes such as 127.0.0.1/32)\n", err)
				return cmd, errUsage
			}
			cmd.cfg.proxies = append(cmd.cfg.proxies, p)
		}
	}
	if *verbose {
		cmd.cfg.logger = debugLogger(stderr)
	}
	if cmd.cfg.quick {
		cmd.cfg.addr, cmd.cfg.session = "127.0.0.1:0", quickSession
	}
	return cmd, nil
}

// errUsage is a command line that parsed but makes no sense.
var errUsage = errors.New("wsserver: bad usage")

// debugLogger is what -v turns on: every record, Debug included, as text.
func debugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func main() {
	cmd, err := parseArgs(os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case err != nil:
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := cmd.cfg
	if cmd.client {
		var opts []wsbridge.Option
		scheme := "ws"
		if cfg.tls {
			scheme = "wss"
			if cfg.ca != "" {
				tc, err := trusting(cfg.ca)
				if err != nil {
					fmt.Fprintln(os.Stderr, "wsserver:", err)
					os.Exit(1)
				}
				opts = append(opts, wsbridge.WithTLSConfig(tc))
			}
		}
		_, err = runClient(ctx, os.Stdout, scheme+"://"+dialAddr(cfg.addr)+"/", cfg.session, cfg.logger, opts...)
	} else {
		err = run(ctx, os.Stdout, cfg)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "wsserver:", err)
		os.Exit(1)
	}
}

// trusting returns a TLS configuration that trusts the certificates of the
// PEM file path (a self-signed server certificate, or a private CA).
func trusting(path string) (*tls.Config, error) {
	pemData, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// dialAddr turns a listen address into one a client can dial.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// newQueue returns a started queue with the lesson's handlers.
func newQueue(workers int, logger *slog.Logger) (*jobqueue.Queue, error) {
	q, err := jobqueue.New(jobqueue.Config{Workers: workers, Logger: logger})
	if err != nil {
		return nil, err
	}
	// The guide's client asks for "calcular_fibonacci"; both names run the
	// same handler. (The apiserver example's "fib-big" is another job:
	// big-integer iteration.)
	jobqueue.HandleFunc(q, fibType, fibonacci)
	jobqueue.HandleFunc(q, "calcular_fibonacci", fibonacci)
	jobqueue.HandleFunc(q, "sleep", sleep)
	if err := q.Start(); err != nil {
		return nil, err
	}
	return q, nil
}

// run serves until ctx ends (or, with cfg.quick, until the client session
// against itself is done), then shuts down in order: the listener, the
// WebSocket clients, the queue.
func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	q, err := newQueue(cfg.workers, cfg.logger)
	if err != nil {
		return err
	}
	sampler, err := monitor.NewSampler(monitor.WithMinWindow(cfg.statsTick/2), monitor.WithSelf(false))
	if err != nil {
		return errors.Join(err, q.Shutdown(context.Background()))
	}
	// Anyone who can reach the port may submit jobs and sees only their
	// own; the operator, holding the token printed below, sees and cancels
	// every job (as Jupyter prints its URL with a token).
	if cfg.operator == "" {
		cfg.operator = wsbridge.NewToken()
	}
	bridge := wsbridge.New(q, wsbridge.Config{
		Authenticate: wsbridge.OptionalTokenAuth(map[string]wsbridge.Principal{
			cfg.operator: {Name: "operator", Operator: true},
		}),
		Hosts:          cfg.hosts,
		TrustedProxies: cfg.proxies,
		Fallback:       wsbridge.Dashboard(),
		StatsInterval:  cfg.statsTick,
		SystemStats:    monitor.DashboardStats(sampler),
		OnError:        func(err error) { fmt.Fprintln(os.Stderr, "wsserver:", err) },
		Logger:         cfg.logger,
	})
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return errors.Join(err, bridge.Shutdown(context.Background()), q.Shutdown(context.Background()))
	}
	srv := &http.Server{Handler: bridge, ReadHeaderTimeout: 10 * time.Second}
	web, wsScheme := "http", "ws"
	var clientOpts []wsbridge.Option // for the -quick session against this server
	if cfg.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			ln.Close()
			return errors.Join(fmt.Errorf("-tls-cert/-tls-key: %w", err), bridge.Shutdown(context.Background()), q.Shutdown(context.Background()))
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		web, wsScheme = "https", "wss"
		if cfg.quick {
			tc, err := trusting(cfg.tlsCert)
			if err != nil {
				ln.Close()
				return errors.Join(err, bridge.Shutdown(context.Background()), q.Shutdown(context.Background()))
			}
			clientOpts = append(clientOpts, wsbridge.WithTLSConfig(tc))
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "wsserver:", err)
		}
	}()
	addr := ln.Addr().String()
	fmt.Fprintf(out, "serving the dashboard on %s://%s/ and WebSocket jobs on %s://%s/ (%d workers; Ctrl-C to stop)\n",
		web, addr, wsScheme, addr, q.Stats().Workers)
	fmt.Fprintf(out, "operator view (every job; keep this URL to yourself): %s://%s/?token=%s\n", web, addr, cfg.operator)
	if cfg.ready != nil {
		cfg.ready <- ln.Addr()
	}

	if cfg.quick {
		_, err = runClient(ctx, out, wsScheme+"://"+addr+"/", cfg.session, cfg.logger, clientOpts...)
	} else {
		<-ctx.Done()
		err = ctx.Err()
	}

	fmt.Fprintln(out, "shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, srv.Shutdown(sctx), bridge.Shutdown(sctx), q.Shutdown(sctx))
	wg.Wait()
	return err
}

// fibType is the job type of naive recursive Fibonacci.
const fibType = "fib-recursive"

// fibIn is the payload of a fib-recursive job.
type fibIn struct {
	N int `json:"n"`
}

// fibOut is its result.
type fibOut struct {
	N         int   `json:"n"`
	Result    int64 `json:"result"`
	ElapsedMS int64 `json:"elapsed_ms"`
}

// maxFib bounds n: naive recursion makes about 1.6^n calls, so 45 already
// takes several seconds.
const maxFib = 45

// fibonacci computes fib(n) by naive recursion, on purpose: it is the
// lesson's CPU-bound work. It reports its progress (calls made out of the
// 2·fib(n+1)-1 the recursion makes) every 100 ms or 25%, whichever comes
// first, and stops when its context ends.
func fibonacci(ctx context.Context, in fibIn) (fibOut, error) {
	if in.N < 0 || in.N > maxFib {
		return fibOut{}, jobqueue.Permanent(fmt.Errorf("n must be from 0 to %d, not %d", maxFib, in.N))
	}
	start := time.Now()
	f := fibber{ctx: ctx, total: 2*fibIter(in.N+1) - 1, last: start}
	r := f.fib(in.N)
	if f.err != nil {
		return fibOut{}, f.err
	}
	return fibOut{N: in.N, Result: r, ElapsedMS: time.Since(start).Milliseconds()}, nil
}

type fibber struct {
	ctx     context.Context
	calls   int64
	total   int64
	last    time.Time
	lastPct float64
	err     error
}

func (f *fibber) fib(n int) int64 {
	f.calls++
	if f.calls&(1<<18-1) == 0 && f.check() {
		return 0
	}
	if n < 2 || f.err != nil {
		return int64(n)
	}
	return f.fib(n-1) + f.fib(n-2)
}

// check reports progress and records a canceled context, which unwinds
// the recursion. It runs every 2^18 calls, about a millisecond.
func (f *fibber) check() bool {
	if err := f.ctx.Err(); err != nil {
		f.err = err
		return true
	}
	now, pct := time.Now(), 100*float64(f.calls)/float64(f.total)
	if now.Sub(f.last) >= 100*time.Millisecond || pct-f.lastPct >= 25 {
		f.last, f.lastPct = now, pct
		_ = jobqueue.Progress(f.ctx, pct, fmt.Sprintf("%d of %d calls", f.calls, f.total))
	}
	return false
}

func fibIter(n int) int64 {
	a, b := int64(0), int64(1)
	for range n {
		a, b = b, a+b
	}
	return a
}

// sleepIn is the payload of a sleep job: it waits, reporting progress,
// without using a CPU (the I/O side of the lesson).
type sleepIn struct {
	Seconds float64 `json:"seconds"`
}

func sleep(ctx context.Context, in sleepIn) (string, error) {
	if in.Seconds < 0 || in.Seconds > 3600 {
		return "", jobqueue.Permanent(errors.New("seconds must be from 0 to 3600"))
	}
	d := time.Duration(in.Seconds * float64(time.Second))
	step := d / 10
	for i := 1; i <= 10; i++ {
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
		_ = jobqueue.Progress(ctx, float64(i*10), fmt.Sprintf("%v of %v", step*time.Duration(i), d))
	}
	return fmt.Sprintf("slept %v", d), nil
}

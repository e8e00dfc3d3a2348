// Command thumbnails is exercise 3 of corework: an upload service that
// makes thumbnails in several sizes through a priority job queue, the
// small previews first.
//
//	go run ./examples/thumbnails                  # http://127.0.0.1:8081, files in a temp dir
//	go run ./examples/thumbnails -dir ./thumbs    # keep the files
//	curl -F image=@photo.jpg http://127.0.0.1:8081/upload
//
// POST /upload stores the image and queues one job per size; GET
// /thumbnails/{id}/{size} serves a thumbnail once it is made, GET
// /uploads/{id} and GET /jobs/{id} show the jobs' state and progress.
// Ctrl-C stops it gracefully.
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
	"strings"
	"syscall"
	"time"

	"github.com/corework/corework/jobqueue"
)

// config is what one run serves. The zero value of each field is noted.
type config struct {
	addr      string // listen address (empty: 127.0.0.1:8081)
	dir       string // store directory (empty: a new temp dir, removed at exit)
	workers   int    // worker goroutines (0: one per CPU)
	sizes     []int  // thumbnail sizes (nil: 64, 128, 256, 512, 1024)
	filter    string // resampling filter (empty: catmullrom)
	maxUpload int64  // upload limit in bytes (0: 32 MiB)
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
	fs := flag.NewFlagSet("thumbnails", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8081", "listen `address` (host:port)")
	fs.StringVar(&cfg.dir, "dir", "", "`directory` for originals and thumbnails (default: a new temp dir, removed at exit)")
	fs.IntVar(&cfg.workers, "workers", 0, "worker goroutines (0: one per CPU)")
	sizes := fs.String("sizes", "64,128,256,512,1024", "thumbnail `sizes` in pixels on the longer side, comma-separated")
	fs.StringVar(&cfg.filter, "filter", "catmullrom", "resampling `filter`: catmullrom (best), bilinear or approx (fastest)")
	fs.Int64Var(&cfg.maxUpload, "max-upload", defaultMaxUpload, "upload limit in `bytes`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "thumbnails: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var err error
	if cfg.sizes, err = parseSizes(*sizes); err != nil {
		fmt.Fprintf(stderr, "thumbnails: -sizes: %v\n", err)
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

// run serves until ctx ends, then shuts down: the HTTP server drains its
// requests, then the queue lets running jobs finish (at most ten seconds)
// and drops the pending ones. It logs to logw and returns nil after a
// clean shutdown.
func run(ctx context.Context, logw io.Writer, cfg config) (err error) {
	if cfg.addr == "" {
		cfg.addr = "127.0.0.1:8081"
	}
	if cfg.filter == "" {
		cfg.filter = "catmullrom"
	}
	scaler, ok := filters[strings.ToLower(cfg.filter)]
	if !ok {
		return fmt.Errorf("thumbnails: -filter %q: want catmullrom, bilinear or approx", cfg.filter)
	}
	if cfg.workers < 0 {
		return fmt.Errorf("thumbnails: -workers %d: must not be negative", cfg.workers)
	}
	dir := cfg.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "corework-thumbnails-"); err != nil {
			return fmt.Errorf("thumbnails: %w", err)
		}
		defer func() {
			err = errors.Join(err, os.RemoveAll(dir))
		}()
	}
	st, err := openStore(dir)
	if err != nil {
		return fmt.Errorf("thumbnails: %w", err)
	}

	q, err := jobqueue.New(jobqueue.Config{Workers: cfg.workers, ShutdownPolicy: jobqueue.LeavePending})
	if err != nil {
		return fmt.Errorf("thumbnails: %w", err)
	}
	tn := &thumbnailer{st: st, scaler: scaler}
	jobqueue.HandleFunc(q, thumbnailType, tn.run)
	api := newServer(q, st, serverConfig{Sizes: cfg.sizes, MaxUpload: cfg.maxUpload})
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}

	shutdown := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := hs.Shutdown(sctx)
		if qerr := q.Shutdown(sctx); qerr != nil {
			err = errors.Join(err, q.Shutdown(context.Background()))
		}
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return errors.Join(fmt.Errorf("thumbnails: %w", err), shutdown())
	}
	if err := q.Start(); err != nil {
		ln.Close()
		return errors.Join(fmt.Errorf("thumbnails: %w", err), shutdown())
	}
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(logw, "thumbnails: listening on %s (%d workers, sizes %v, files in %s); Ctrl-C stops\n", url, q.Stats().Workers, api.cfg.Sizes, dir)
	if cfg.ready != nil {
		cfg.ready(url)
	}

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	var serveErr error
	select {
	case serveErr = <-served: // the listener failed
	case <-ctx.Done():
		fmt.Fprintln(logw, "thumbnails: shutting down")
	}
	err = shutdown()
	if serveErr == nil {
		serveErr = <-served // http.ErrServerClosed once Shutdown has begun
	}
	if !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(fmt.Errorf("thumbnails: %w", serveErr), err)
	}
	if err == nil {
		s := q.Stats()
		fmt.Fprintf(logw, "thumbnails: stopped; %d thumbnails made, %d failed, %d left undone\n", s.Succeeded, s.Failed, s.Left)
	}
	return err
}

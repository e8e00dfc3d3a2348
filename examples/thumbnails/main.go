// Command thumbnails is exercise 3 of corework: an upload service that
// makes thumbnails in several sizes through a priority job queue, safe to
// expose to clients who may send anything.
//
//	go run ./examples/thumbnails                  # http://127.0.0.1:8081, files in a temp dir
//	go run ./examples/thumbnails -dir ./thumbs    # keep the thumbnails
//	go run ./examples/thumbnails -addr :8081 -tokens tokens.txt   # exposed: bearer tokens
//	curl -F image=@photo.jpg http://127.0.0.1:8081/upload
//
// POST /upload checks the image's header and structure (no pixels yet),
// queues one job for it and waits until that job has decoded the image:
// the answer is 202 only for an image that decodes, within the limits
// (pixels, decoded bytes at their real size, no trailing data). The job
// decodes the image once, removes the original, and makes every size
// from that one decoded image, smallest first, each served as soon as it
// is written. Jobs of small images run at a higher priority than those of
// big ones, so previews of small images are not stuck behind big ones.
// GET /thumbnails/{id}/{size} serves a thumbnail, GET /uploads/{id} and
// GET /jobs/{id} show the job's state and progress, each to the
// upload's owner only (and to operators). Each principal has a quota of
// uploads in progress (429), and the disk used is bounded (507, after the
// oldest uploads' thumbnails are removed). Ctrl-C stops it gracefully.
package main

import (
	"cmp"
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
	"strings"
	"syscall"
	"time"

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
)

// config is what one run serves. The zero value of each field is noted.
type config struct {
	addr       string        // listen address (empty: 127.0.0.1:8081)
	dir        string        // store directory (empty: a new temp dir, removed at exit)
	workers    int           // worker goroutines (0: one per CPU)
	sizes      []int         // thumbnail sizes (nil: 64, 128, 256, 512, 1024)
	filter     string        // resampling filter (empty: catmullrom)
	maxUpload  int64         // upload limit in bytes (0: 32 MiB)
	maxPixels  int64         // pixel limit (0: 50 million)
	maxDecoded int64         // decoded-bytes limit (0: 256 MiB)
	maxDisk    int64         // disk budget in bytes (0: 1 GiB)
	maxUploads int           // uploads kept (0: 10,000)
	maxActive  int           // uploads in progress per principal (0: 4)
	decodeWait time.Duration // how long an upload waits for its decode (0: one minute)
	tokens     string        // token file (empty: no tokens, loopback only)
	insecure   bool          // listen beyond loopback without tokens
	logger     *slog.Logger  // the queue's (-v: debug records on stderr); nil: none
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
	fs.Int64Var(&cfg.maxUpload, "max-upload", defaultMaxUpload, "upload limit in `bytes` (413 beyond)")
	fs.Int64Var(&cfg.maxPixels, "max-pixels", defaultMaxPixels, "limit on an image's width x height (413 beyond)")
	fs.Int64Var(&cfg.maxDecoded, "max-decoded", defaultMaxDecoded, "limit in `bytes` on an image decoded, counted at its real bytes per pixel (413 beyond)")
	fs.Int64Var(&cfg.maxDisk, "max-disk", defaultMaxDisk, "`bytes` of uploads and thumbnails kept on disk; the oldest thumbnails go first (507 when uploads in progress fill it)")
	fs.IntVar(&cfg.maxUploads, "max-uploads", defaultMaxUploads, "uploads whose thumbnails are kept; the oldest go first")
	fs.IntVar(&cfg.maxActive, "max-active", defaultMaxActive, "uploads a principal may have in progress (429 beyond)")
	fs.DurationVar(&cfg.decodeWait, "decode-wait", defaultDecodeWait, "how long an upload waits for its image to be decoded (503 beyond)")
	fs.StringVar(&cfg.tokens, "tokens", "", "`file` of bearer tokens, one \"<token> <name> [operator]\" per line (default: none, loopback only)")
	fs.BoolVar(&cfg.insecure, "insecure", false, "listen beyond loopback without tokens (another layer must guard the server)")
	verbose := fs.Bool("v", false, "debug log of the job queue on stderr")
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
	for _, l := range []struct {
		name string
		v    int64
	}{{"max-upload", cfg.maxUpload}, {"max-pixels", cfg.maxPixels}, {"max-decoded", cfg.maxDecoded},
		{"max-disk", cfg.maxDisk}, {"max-uploads", int64(cfg.maxUploads)}, {"max-active", int64(cfg.maxActive)}, {"decode-wait", int64(cfg.decodeWait)}} {
		if l.v < 0 {
			return fmt.Errorf("thumbnails: -%s %d: must not be negative (0 is the default)", l.name, l.v)
		}
	}
	maxUpload, maxDisk := cmp.Or(cfg.maxUpload, defaultMaxUpload), cmp.Or(cfg.maxDisk, defaultMaxDisk)
	if maxDisk < maxUpload {
		return fmt.Errorf("thumbnails: -max-disk %d is below -max-upload %d: no upload would fit", maxDisk, maxUpload)
	}
	var tokens map[string]wsbridge.Principal
	if cfg.tokens != "" {
		if tokens, err = access.LoadTokens(cfg.tokens); err != nil {
			return fmt.Errorf("thumbnails: %w", err)
		}
	}
	if err := access.CheckListen(cfg.addr, len(tokens), cfg.insecure); err != nil {
		return fmt.Errorf("thumbnails: %w", err)
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

	// Aging: a job waiting 2 seconds ranks one level higher, so a big
	// image's job (low priority) waits at most about 20 seconds plus the
	// jobs ranked above it, however many small images arrive.
	q, err := jobqueue.New(jobqueue.Config{Workers: cfg.workers, ShutdownPolicy: jobqueue.LeavePending, AgingInterval: 2 * time.Second, Logger: cfg.logger})
	if err != nil {
		return fmt.Errorf("thumbnails: %w", err)
	}
	tn := &thumbnailer{st: st, scaler: scaler}
	jobqueue.HandleFunc(q, thumbnailsType, tn.run)
	api := newServer(q, st, serverConfig{Sizes: cfg.sizes, MaxUpload: cfg.maxUpload, MaxPixels: cfg.maxPixels,
		MaxDecoded: cfg.maxDecoded, MaxDisk: cfg.maxDisk, MaxUploads: cfg.maxUploads, MaxActive: cfg.maxActive,
		DecodeWait: cfg.decodeWait, Tokens: tokens})
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
	who := "no tokens: loopback only"
	switch {
	case len(tokens) > 0:
		who = fmt.Sprintf("%d tokens", len(tokens))
	case cfg.insecure && !access.Loopback(cfg.addr):
		who = "no tokens, -insecure"
	}
	fmt.Fprintf(logw, "thumbnails: listening on %s (%s; %d workers, sizes %v, files in %s); Ctrl-C stops\n", url, who, q.Stats().Workers, api.cfg.Sizes, dir)
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
		fmt.Fprintf(logw, "thumbnails: stopped; %d uploads done, %d failed or refused, %d left undone\n", s.Succeeded, s.Failed, s.Left)
	}
	return err
}

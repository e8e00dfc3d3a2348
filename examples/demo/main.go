// Command demo is corework's main job: a batch of images turned into
// thumbnails in several sizes through a priority job queue whose CPU work
// runs in worker processes pinned one per CPU, with a live terminal
// dashboard and a final report measured in the same run.
//
//	go run ./examples/demo                       # generated images, worker processes
//	go run ./examples/demo -mode goroutines      # the same on a goroutine pool
//	go run ./examples/demo -in photos -out thumbs
//	go run ./examples/demo -http 127.0.0.1:8080  # also the browser dashboard and /metrics while it runs
//	go run ./examples/demo -quick                # a small batch, for a smoke test
//	go run ./examples/demo -v                    # and the pool's and queue's debug log on stderr
//
// Images over 1 MiB decoded are decoded once in the parent and lent to the
// worker processes in shared memory (procpool.Shared); smaller ones are
// read from their files by the workers. Without -out the images and
// thumbnails go to a temporary directory, removed at exit.
//
// The batch runs twice: once on one worker, then on one worker per CPU, so
// the speedup it prints is measured, not assumed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/pool"
	"github.com/corework/corework/procpool"
)

type config struct {
	mode    string // "processes" or "goroutines"
	workers int    // workers of the full run; 0 means one per allowed CPU
	pinned  bool   // pin worker processes one per CPU
	images  int    // images to generate when in is empty
	width   int    // size of generated images
	height  int
	sizes   []int  // thumbnail sizes (longer side, pixels)
	in      string // directory of input images; empty means generate
	out     string // output directory; empty means a new temp dir
	http    string // address for /metrics and the dashboard; empty means none
	exposed bool   // serve http beyond loopback (-insecure)
	live    bool   // draw the live dashboard
	tick    time.Duration
	// shareAbove is the decoded size, in bytes, above which a source
	// image is decoded in the parent and lent to the workers in shared
	// memory (processes mode).
	shareAbove int
	logger     *slog.Logger // debug log of the pool and the queue (-v); nil: procpool's default, a silent queue
}

func main() {
	procpool.Main() // in a worker process this serves thumbnails and never returns

	var cfg config
	var sizes string
	var quick bool
	flag.StringVar(&cfg.mode, "mode", "processes", "where the CPU work runs: processes (procpool) or goroutines (one process)")
	flag.IntVar(&cfg.workers, "workers", 0, "workers for the full run (0: one per allowed CPU)")
	flag.BoolVar(&cfg.pinned, "pin", true, "pin worker processes one per CPU")
	flag.IntVar(&cfg.images, "images", 24, "images to generate when -in is not given")
	flag.StringVar(&sizes, "sizes", "64,128,256,512", "thumbnail sizes in pixels (longer side)")
	flag.StringVar(&cfg.in, "in", "", "directory of input images (default: generate them)")
	flag.StringVar(&cfg.out, "out", "", "output directory (default: a new temporary directory)")
	flag.StringVar(&cfg.http, "http", "", "serve the browser dashboard and /metrics on this address while running, e.g. 127.0.0.1:8080")
	flag.BoolVar(&cfg.exposed, "insecure", false, "let -http listen beyond loopback: the dashboard has no tokens, and whoever reaches it can watch and submit jobs")
	flag.BoolVar(&quick, "quick", false, "a small batch that finishes in a few seconds")
	verbose := flag.Bool("v", false, "debug logging on stderr: worker processes, the queue, images shared (plain progress lines instead of the live dashboard)")
	flag.Parse()

	cfg.width, cfg.height = 1280, 960
	if quick {
		cfg.images, cfg.width, cfg.height = 6, 640, 480 // 1.2 MiB decoded: shared
	}
	cfg.shareAbove = 1 << 20
	var err error
	if cfg.sizes, err = parseSizes(sizes); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	cfg.live = isTerminal(os.Stdout)
	if *verbose {
		cfg.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.live = false // log lines would tear the dashboard redrawn in place
	}
	cfg.tick = time.Second
	if cfg.live {
		cfg.tick = 250 * time.Millisecond
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, os.Stdout, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 8192 {
			return nil, fmt.Errorf("bad size %q in -sizes (want pixels, 1-8192)", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// report is what run measured.
type report struct {
	Jobs       int
	Workers    int
	One, Full  phaseResult
	Speedup    float64
	OutDir     string
	Thumbnails []string
}

func run(ctx context.Context, w io.Writer, cfg config) (report, error) {
	var r report
	if cfg.mode != "processes" && cfg.mode != "goroutines" {
		return r, fmt.Errorf("-mode %q: want processes or goroutines", cfg.mode)
	}
	if len(cfg.sizes) == 0 {
		return r, errors.New("no thumbnail sizes")
	}
	if cfg.http != "" && !cfg.exposed && !access.Loopback(cfg.http) {
		return r, fmt.Errorf("refusing to serve -http %s beyond loopback: the dashboard has no tokens, and whoever reaches it can watch and submit jobs; "+
			"use 127.0.0.1 (from another machine: ssh -L 8080:127.0.0.1:8080), or pass -insecure if a firewall guards it", cfg.http)
	}
	if cfg.workers <= 0 {
		cfg.workers = runtime.GOMAXPROCS(0)
		if cpus, err := affinity.Allowed(); err == nil && len(cpus) > 0 {
			cfg.workers = len(cpus)
		}
	}
	r.Workers = cfg.workers
	out := cfg.out
	if out == "" {
		var err error
		if out, err = os.MkdirTemp("", "corework-demo-"); err != nil {
			return r, err
		}
		// Deferred first, so it runs last: after the worker processes
		// and the web server, deferred below, have stopped.
		defer os.RemoveAll(out)
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		return r, err
	}
	r.OutDir = out

	sampler, err := monitor.NewSampler(monitor.WithMinWindow(cfg.tick / 2))
	if err != nil {
		return r, err
	}
	var site *web
	if cfg.http != "" {
		if site, err = serveWeb(cfg.http, sampler, w); err != nil {
			return r, err
		}
		defer site.close()
	}

	// Inputs: the given directory, or images generated in parallel.
	var srcs []string
	if cfg.in != "" {
		if srcs, err = inputs(cfg.in); err != nil {
			return r, err
		}
		fmt.Fprintf(w, "input:  %d images from %s\n", len(srcs), cfg.in)
	} else {
		dir := filepath.Join(out, "originals")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return r, err
		}
		idx := make([]int, cfg.images)
		for i := range idx {
			idx[i] = i
		}
		start := time.Now()
		p := pool.New(0)
		srcs, err = pool.Map(ctx, p, idx, func(_ context.Context, i int) (string, error) {
			path := filepath.Join(dir, fmt.Sprintf("image-%03d.jpg", i))
			return path, generate(path, i, cfg.width, cfg.height)
		})
		p.Close()
		if err != nil {
			return r, err
		}
		fmt.Fprintf(w, "input:  %d generated %dx%d JPEG images in %v\n", len(srcs), cfg.width, cfg.height, time.Since(start).Round(time.Millisecond))
	}
	fmt.Fprintf(w, "work:   %d thumbnails (sizes %v) on %s, small sizes at higher priority\n", len(srcs)*len(cfg.sizes), cfg.sizes, describe(cfg))
	if cfg.out == "" {
		fmt.Fprintf(w, "output: %s (temporary, removed at exit; -out DIR keeps the files)\n\n", out)
	} else {
		fmt.Fprintf(w, "output: %s\n\n", out)
	}

	jobs := func(phase string) ([]thumbIn, error) {
		dir := filepath.Join(out, phase)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		var js []thumbIn
		for _, src := range srcs {
			base := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
			for _, size := range cfg.sizes {
				js = append(js, thumbIn{Src: src, Dst: filepath.Join(dir, fmt.Sprintf("%s_%d.png", base, size)), Size: size})
			}
		}
		return js, nil
	}

	oneJobs, err := jobs("one-worker")
	if err != nil {
		return r, err
	}
	r.Jobs = len(oneJobs)
	fmt.Fprintf(w, "== Phase 1 of 2: one worker (the baseline)\n")
	if r.One, err = runPhase(ctx, w, cfg, 1, oneJobs, sampler, site); err != nil {
		return r, err
	}
	fullJobs, err := jobs("thumbnails")
	if err != nil {
		return r, err
	}
	fmt.Fprintf(w, "\n== Phase 2 of 2: %d workers\n", cfg.workers)
	if r.Full, err = runPhase(ctx, w, cfg, cfg.workers, fullJobs, sampler, site); err != nil {
		return r, err
	}
	for _, j := range fullJobs {
		r.Thumbnails = append(r.Thumbnails, j.Dst)
	}
	r.Speedup = r.One.Elapsed.Seconds() / r.Full.Elapsed.Seconds()
	printReport(w, cfg, r)
	return r, nil
}

func describe(cfg config) string {
	if cfg.mode == "goroutines" {
		return fmt.Sprintf("a goroutine pool of %d workers (one process)", cfg.workers)
	}
	pin := "unpinned"
	if cfg.pinned {
		pin = "pinned one per CPU"
	}
	return fmt.Sprintf("%d worker processes, %s", cfg.workers, pin)
}

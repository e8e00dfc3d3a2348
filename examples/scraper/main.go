// Command scraper is exercise 1 of corework: a parallel web scraper that
// fetches pages on a bounded goroutine pool, extracts each page's <title>
// and stores the results in SQLite.
//
//	go run ./examples/scraper                 # 50 pages from a built-in local server, 100 ms each
//	go run ./examples/scraper -quick          # the same with 10 ms pages
//	go run ./examples/scraper -urls urls.txt  # real URLs, one per line
//	go run ./examples/scraper -v              # and a debug record per fetch on stderr
//
// It fetches the URLs twice in the same run, first one after another and
// then on a pool of -workers goroutines, and prints both measured times and
// the speedup. Ctrl-C stops it: requests in flight are cancelled and the
// rows already fetched are kept.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/corework/corework/pool"
)

// config is what one run does. The zero value of each field is noted.
type config struct {
	urls    []string      // URLs to fetch; nil starts the built-in server
	pages   int           // pages the built-in server serves (0: 50)
	latency time.Duration // built-in server's delay per page (0: none)
	workers int           // pool size for the concurrent pass (0: 10)
	dbPath  string        // SQLite file (empty: a new file in a temp dir)
	timeout time.Duration // limit on each request (0: 10 s)
	logger  *slog.Logger  // a Debug record per fetch (-v); nil: none
}

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// cli parses args, runs the scraper until it finishes or the process gets
// an interrupt, and returns the exit code: 0, 1 on error, 2 on bad flags,
// 130 when interrupted.
func cli(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("scraper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "built-in pages answer in 10 ms instead of 100 ms")
	urlsFile := fs.String("urls", "", "`file` of URLs to fetch, one per line (# starts a comment); default: the built-in server")
	dbPath := fs.String("db", "", "SQLite database `path` (default: scraper.db in a new temp dir)")
	workers := fs.Int("workers", 10, "goroutines fetching at once")
	timeout := fs.Duration("timeout", 10*time.Second, "limit on each request")
	verbose := fs.Bool("v", false, "debug log on stderr: one record per fetch")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "scraper: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg := config{pages: 50, latency: 100 * time.Millisecond, workers: *workers, dbPath: *dbPath, timeout: *timeout}
	if *quick {
		cfg.latency = 10 * time.Millisecond
	}
	if *verbose {
		cfg.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if *urlsFile != "" {
		urls, err := readURLs(*urlsFile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		cfg.urls = urls
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err := run(ctx, stdout, cfg)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "scraper: interrupted; rows fetched so far were kept")
		return 130
	default:
		fmt.Fprintln(stderr, err)
		return 1
	}
}

// summary is what run measured and stored.
type summary struct {
	DBPath     string
	Fetched    int    // results this run stored in its concurrent pass
	Failures   []page // of those, the ones that failed
	Rows       int    // rows in the database afterwards
	Largest    []page // up to 5 successful pages by size, read back from the database
	Sequential time.Duration
	Concurrent time.Duration
	Speedup    float64 // Sequential / Concurrent
}

// run fetches cfg's URLs (or the built-in server's pages) one after another
// and then on a pool, upserting every result into the database, and prints
// what it measured to w. When ctx ends it cancels the requests in flight,
// keeps the rows already fetched and returns ctx.Err().
func run(ctx context.Context, w io.Writer, cfg config) (summary, error) {
	var s summary
	if cfg.pages <= 0 {
		cfg.pages = 50
	}
	if cfg.workers == 0 {
		cfg.workers = 10
	}
	if cfg.workers < 0 {
		return s, fmt.Errorf("scraper: -workers %d: must be positive", cfg.workers)
	}
	if cfg.timeout <= 0 {
		cfg.timeout = 10 * time.Second
	}

	urls, site := cfg.urls, ""
	if urls == nil {
		srv, err := startPageServer(cfg.pages, cfg.latency)
		if err != nil {
			return s, err
		}
		defer srv.close()
		urls, site = srv.urls(), srv.addr
		fmt.Fprintf(w, "source:     %d pages from the built-in server %s (listening on %s), %v each\n", len(urls), srv.base, srv.addr, cfg.latency)
	} else {
		fmt.Fprintf(w, "source:     %d URLs\n", len(urls))
	}
	if len(urls) == 0 {
		return s, errors.New("scraper: no URLs to fetch")
	}

	s.DBPath = cfg.dbPath
	if s.DBPath == "" {
		dir, err := os.MkdirTemp("", "corework-scraper-")
		if err != nil {
			return s, fmt.Errorf("scraper: %w", err)
		}
		s.DBPath = filepath.Join(dir, "scraper.db")
	}
	st, err := openStore(ctx, s.DBPath)
	if err != nil {
		return s, err
	}
	defer st.close()
	fmt.Fprintf(w, "database:   %s\n", s.DBPath)

	f := newFetcher(cfg.workers, cfg.timeout, site)
	f.log = cfg.logger
	defer f.close()

	// Pass 1: one request at a time, the way a plain loop would do it.
	start := time.Now()
	_, err = st.saveAll(ctx, sequential(ctx, f, urls))
	s.Sequential = time.Since(start)
	if err != nil {
		return s, err
	}
	fmt.Fprintf(w, "sequential: %d pages in %v, one at a time\n", len(urls), s.Sequential.Round(time.Millisecond))

	// Pass 2: the same URLs on a bounded pool. MapSeq yields the results
	// in input order on this goroutine, so one goroutine writes the
	// database while the workers fetch.
	p := pool.New(cfg.workers)
	defer p.Close()
	start = time.Now()
	results, err := st.saveAll(ctx, concurrent(ctx, p, f, urls))
	s.Concurrent = time.Since(start)
	if err != nil {
		return s, err
	}
	s.Fetched = len(results)
	for _, r := range results {
		if r.Err != "" {
			s.Failures = append(s.Failures, r)
		}
	}
	s.Speedup = float64(s.Sequential) / float64(s.Concurrent)
	fmt.Fprintf(w, "concurrent: %d pages in %v on a pool of %d workers\n", len(urls), s.Concurrent.Round(time.Millisecond), cfg.workers)
	fmt.Fprintf(w, "speedup:    %.1fx\n", s.Speedup)

	if s.Rows, err = st.count(ctx); err != nil {
		return s, err
	}
	if s.Largest, err = st.largest(ctx, 5); err != nil {
		return s, err
	}
	fmt.Fprintf(w, "stored:     %d rows in the database; this run %d fetched, %d failed\n", s.Rows, s.Fetched, len(s.Failures))
	for i, r := range s.Failures {
		if i == 5 {
			fmt.Fprintf(w, "  ... and %d more failures\n", len(s.Failures)-i)
			break
		}
		fmt.Fprintf(w, "  failed  %s: %s\n", r.URL, r.Err)
	}
	if len(s.Largest) > 0 {
		fmt.Fprintln(w, "largest pages:")
		for _, r := range s.Largest {
			fmt.Fprintf(w, "  %7d B  %-40q  %s\n", r.Bytes, r.Title, r.URL)
		}
	}
	return s, nil
}

// readURLs reads one URL per line from path, skipping blank lines, lines
// that start with # and repeats. Each URL must be absolute http or https.
func readURLs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scraper: %w", err)
	}
	defer f.Close()
	var urls []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") || seen[s] {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("scraper: %s:%d: %q is not an http or https URL", path, line, s)
		}
		seen[s] = true
		urls = append(urls, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scraper: %s: %w", path, err)
	}
	return urls, nil
}

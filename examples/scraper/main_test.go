package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// row is one row of the pages table as a test reads it back.
type row struct {
	title, fetchedAt string
	status, fetches  int
	bytes            int64
	durationMS       float64
	err              sql.NullString
}

// readDB opens the database at path on its own, the way any other program
// would, and returns its rows by URL.
func readDB(t *testing.T, path string) map[string]row {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM pages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT url, title, status, bytes, duration_ms, fetched_at, error, fetches FROM pages`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]row{}
	for rows.Next() {
		var u string
		var r row
		if err := rows.Scan(&u, &r.title, &r.status, &r.bytes, &r.durationMS, &r.fetchedAt, &r.err, &r.fetches); err != nil {
			t.Fatal(err)
		}
		out[u] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) != n {
		t.Fatalf("COUNT(*) = %d but %d rows read", n, len(out))
	}
	return out
}

// TestQuick is the -quick run on the built-in server: the database must
// hold 50 rows with the right titles, each fetched by both passes.
func TestQuick(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "scraper.db")
	var out bytes.Buffer
	s, err := run(context.Background(), &out, config{pages: 50, latency: 10 * time.Millisecond, workers: 10, dbPath: dbPath})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if s.Rows != 50 || s.Fetched != 50 || len(s.Failures) != 0 {
		t.Errorf("summary: %d rows, %d fetched, failures %v", s.Rows, s.Fetched, s.Failures)
	}
	if s.Sequential <= 0 || s.Concurrent <= 0 || s.Speedup <= 0 {
		t.Errorf("times not measured: %+v", s)
	}
	if len(s.Largest) != 5 || s.Largest[0].Title != pageTitle(50) {
		t.Errorf("largest pages: %+v", s.Largest)
	}
	for _, want := range []string{"sequential:", "concurrent:", "speedup:", "stored:     50 rows", dbPath, pageTitle(50)} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	rows := readDB(t, dbPath)
	if len(rows) != 50 {
		t.Fatalf("database holds %d rows, want 50", len(rows))
	}
	for u, r := range rows {
		i, err := strconv.Atoi(u[strings.LastIndex(u, "/")+1:])
		if err != nil {
			t.Fatalf("unexpected URL %q", u)
		}
		if r.title != pageTitle(i) || r.status != 200 || r.err.Valid || r.bytes < int64(len(pageHTML(i))) {
			t.Errorf("%s: got %+v, want title %q", u, r, pageTitle(i))
		}
		if r.fetches != 2 { // the sequential pass inserted it, the pool's pass upserted it
			t.Errorf("%s: fetches = %d, want 2", u, r.fetches)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.fetchedAt); err != nil || r.durationMS <= 0 {
			t.Errorf("%s: fetched_at %q, duration %v ms", u, r.fetchedAt, r.durationMS)
		}
	}
}

// site is a test server whose pages can fail, hang or block, and which
// records how many requests it served at once.
type site struct {
	*httptest.Server
	inflight, highWater atomic.Int64
}

func newSite(t *testing.T) *site {
	s := &site{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok/{i}", func(w http.ResponseWriter, r *http.Request) {
		s.enter()
		defer s.inflight.Add(-1)
		time.Sleep(10 * time.Millisecond)
		fmt.Fprintf(w, "<html><title>ok %s</title>", r.PathValue("i"))
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "<title>Internal error</title>")
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only when the client gives up
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *site) enter() {
	n := s.inflight.Add(1)
	for {
		hw := s.highWater.Load()
		if n <= hw || s.highWater.CompareAndSwap(hw, n) {
			return
		}
	}
}

// closedPort returns a loopback URL on which nothing listens.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String() + "/"
	ln.Close()
	return u
}

// TestFailuresAreStored checks that an HTTP 500, a refused connection and
// a request that overruns its timeout each leave a row with the error, and
// that the pool never has more requests in flight than it has workers.
func TestFailuresAreStored(t *testing.T) {
	s := newSite(t)
	urls := []string{s.URL + "/broken", closedPort(t), s.URL + "/hang"}
	for i := range 20 {
		urls = append(urls, fmt.Sprintf("%s/ok/%d", s.URL, i))
	}
	const workers = 4
	dbPath := filepath.Join(t.TempDir(), "scraper.db")
	var out bytes.Buffer
	sum, err := run(context.Background(), &out, config{urls: urls, workers: workers, dbPath: dbPath, timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if sum.Rows != len(urls) || len(sum.Failures) != 3 {
		t.Errorf("summary: %d rows, failures %+v", sum.Rows, sum.Failures)
	}
	if !strings.Contains(out.String(), "failed  "+s.URL+"/broken: HTTP 500") {
		t.Errorf("output does not list the failure:\n%s", out.String())
	}
	rows := readDB(t, dbPath)
	if len(rows) != len(urls) {
		t.Fatalf("database holds %d rows, want %d", len(rows), len(urls))
	}
	broken := rows[s.URL+"/broken"]
	if broken.status != 500 || !strings.Contains(broken.err.String, "500") || broken.title != "Internal error" {
		t.Errorf("500 page stored as %+v", broken)
	}
	if r := rows[urls[1]]; r.status != 0 || !r.err.Valid || r.err.String == "" {
		t.Errorf("closed port stored as %+v", r)
	}
	if r := rows[s.URL+"/hang"]; r.status != 0 || !strings.Contains(r.err.String, "deadline exceeded") {
		t.Errorf("hanging page stored as %+v", r)
	}
	for i := range 20 {
		u := fmt.Sprintf("%s/ok/%d", s.URL, i)
		if r := rows[u]; r.err.Valid || r.title != fmt.Sprintf("ok %d", i) {
			t.Errorf("%s stored as %+v", u, r)
		}
	}
	if hw := s.highWater.Load(); hw > workers || hw < 2 {
		t.Errorf("at most %d requests were in flight at once; want 2..%d", hw, workers)
	}
}

// blockingSite answers its first n requests at once and holds every later
// one until the client gives up, reporting on arrived when the first of
// those comes in.
func blockingSite(t *testing.T, n int64) (*httptest.Server, <-chan struct{}) {
	arrived := make(chan struct{})
	var once sync.Once
	var count atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if count.Add(1) > n {
			once.Do(func() { close(arrived) })
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, "<title>fast</title>")
	}))
	t.Cleanup(srv.Close)
	return srv, arrived
}

// TestCancel cancels a run while a request hangs, in each pass, and checks
// that run returns promptly with context.Canceled and keeps the rows it had
// already fetched.
func TestCancel(t *testing.T) {
	const pages = 8
	for _, tc := range []struct {
		name      string
		fastFirst int64 // requests answered before the server starts to hang
		wantRows  int
	}{
		{"sequential", 3, 3},
		{"concurrent", pages, pages},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, arrived := blockingSite(t, tc.fastFirst)
			var urls []string
			for i := range pages {
				urls = append(urls, fmt.Sprintf("%s/%d", srv.URL, i))
			}
			dbPath := filepath.Join(t.TempDir(), "scraper.db")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := run(ctx, &bytes.Buffer{}, config{urls: urls, workers: 4, dbPath: dbPath, timeout: time.Minute})
				done <- err
			}()
			select {
			case <-arrived:
			case err := <-done:
				t.Fatalf("run returned %v before a request hung", err)
			case <-time.After(20 * time.Second):
				t.Fatal("no request reached the hanging handler")
			}
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("run returned %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("run did not return within 5 s of cancel")
			}
			if rows := readDB(t, dbPath); len(rows) != tc.wantRows {
				t.Errorf("database kept %d rows, want %d", len(rows), tc.wantRows)
			}
		})
	}
}

// TestInterrupt sends the process an interrupt while the command is waiting
// on a request, as Ctrl-C does, and checks that it exits with code 130.
func TestInterrupt(t *testing.T) {
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	srv, arrived := blockingSite(t, 0)
	list := filepath.Join(t.TempDir(), "urls.txt")
	if err := os.WriteFile(list, []byte(srv.URL+"/a\n"+srv.URL+"/b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- cli([]string{"-urls", list, "-db", filepath.Join(t.TempDir(), "s.db")}, &stdout, &stderr)
	}()
	select {
	case <-arrived: // the command is running, so its signal handler is installed
	case code := <-done:
		t.Fatalf("exited with %d before a request hung: %s", code, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("no request reached the hanging handler")
	}
	if err := self.Signal(os.Interrupt); err != nil {
		// Windows cannot send itself an interrupt; stop the command by
		// closing the server instead so that no goroutine is left behind.
		srv.CloseClientConnections()
		<-done
		t.Skipf("cannot signal this process: %v", err)
	}
	select {
	case code := <-done:
		if code != 130 || !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("exit code %d, stderr %q; want 130 and an interrupted message", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the command did not exit within 5 s of the interrupt")
	}
}

func TestCLIFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli([]string{"-no-such-flag"}, &stdout, &stderr); code != 2 {
		t.Errorf("unknown flag: exit code %d, want 2", code)
	}
	if code := cli([]string{"-urls", filepath.Join(t.TempDir(), "missing.txt")}, &stdout, &stderr); code != 1 {
		t.Errorf("missing -urls file: exit code %d, want 1", code)
	}
	if code := cli([]string{"-workers", "-1"}, &stdout, &stderr); code != 1 {
		t.Errorf("-workers -1: exit code %d, want 1", code)
	}
}

func TestReadURLs(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	if err := os.WriteFile(good, []byte("# pages\nhttps://example.com/\n\n  http://example.org/a  \r\nhttps://example.com/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	urls, err := readURLs(good)
	if err != nil || strings.Join(urls, " ") != "https://example.com/ http://example.org/a" {
		t.Errorf("readURLs = %q, %v", urls, err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("https://example.com/\nexample.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readURLs(bad); err == nil || !strings.Contains(err.Error(), "bad.txt:2:") {
		t.Errorf("readURLs of a bad line: %v, want an error naming line 2", err)
	}
}

var titleCases = []struct{ html, want string }{
	{"<html><head><title>Hello</title></head></html>", "Hello"},
	{"<TITLE>Upper\n\t case </TITLE>", "Upper case"},
	{"<title>Fish &amp; chips &lt;3</title>", "Fish & chips <3"},
	{"<title>never closed <b>bold", "never closed <b>bold"},
	{"<p>no title here", ""},
	{"", ""},
	{"<!-- <title>comment</title> --><title>real</title>", "real"},
	{"<script>var s = '<title>no</title>'</script><title>yes</title>", "yes"},
	{"<title>one</title><title>two</title>", "one"},
	{"<title>bad \xff utf-8</title>", "bad \uFFFD utf-8"},
	{"<title>" + strings.Repeat("long ", 1000), strings.Repeat("long ", 1000)[:maxTitle]},
}

func TestExtractTitle(t *testing.T) {
	for _, tc := range titleCases {
		if got := extractTitle(strings.NewReader(tc.html)); got != tc.want {
			t.Errorf("extractTitle(%.40q) = %.60q, want %.60q", tc.html, got, tc.want)
		}
	}
}

func FuzzExtractTitle(f *testing.F) {
	for _, tc := range titleCases {
		f.Add(tc.html)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		title := extractTitle(strings.NewReader(doc))
		if len(title) > maxTitle || strings.TrimSpace(title) != title || strings.Contains(title, "  ") {
			t.Errorf("extractTitle(%q) = %q", doc, title)
		}
	})
}

// TestRerunSameDB runs the built-in site twice on one database, each run
// on a new port, as `-db scraper.db` run twice does: the database keeps
// one row per page, each fetched by all four passes.
func TestRerunSameDB(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "scraper.db")
	cfg := config{pages: 12, latency: time.Millisecond, workers: 4, dbPath: dbPath}
	for run1 := range 2 {
		var out bytes.Buffer
		s, err := run(context.Background(), &out, cfg)
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run1+1, err, out.String())
		}
		if s.Rows != 12 || len(s.Failures) != 0 {
			t.Fatalf("run %d: %d rows, failures %v\n%s", run1+1, s.Rows, s.Failures, out.String())
		}
	}
	rows := readDB(t, dbPath)
	if len(rows) != 12 {
		t.Fatalf("database holds %d rows after two runs, want 12", len(rows))
	}
	for u, r := range rows {
		if !strings.HasPrefix(u, "http://"+siteHost+"/page/") || r.fetches != 4 || r.status != 200 {
			t.Errorf("%s: %+v, want a built-in page fetched 4 times", u, r)
		}
	}
}

// TestVerboseAndHelp checks -h (exit 0, the flags printed) and -v (a debug
// record per fetch on stderr).
func TestVerboseAndHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli([]string{"-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "-v\tdebug log") {
		t.Errorf("-h: exit code %d, stderr:\n%s", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	db := filepath.Join(t.TempDir(), "v.db")
	if code := cli([]string{"-v", "-quick", "-db", db}, &stdout, &stderr); code != 0 {
		t.Fatalf("-v -quick: exit code %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if n := strings.Count(stderr.String(), `level=DEBUG msg=fetched url=http://scraper-site.test/page/`); n != 100 {
		t.Errorf("-v: %d debug records of fetches, want 100 (50 pages, 2 passes):\n%s", n, stderr.String())
	}
}

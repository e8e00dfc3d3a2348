package main

import (
	"bytes"
	"context"
	"image"
	_ "image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/procpool"
)

func TestMain(m *testing.M) {
	procpool.Main() // the demo's worker processes are this test binary
	goleak.VerifyTestMain(m)
}

func quickConfig(t *testing.T, mode string) config {
	return config{mode: mode, workers: 2, pinned: true, images: 3, width: 320, height: 200,
		sizes: []int{64, 128, 400}, out: t.TempDir(), tick: 50 * time.Millisecond, shareAbove: 1 << 20}
}

func checkRun(t *testing.T, cfg config) (report, string) {
	t.Helper()
	var out bytes.Buffer
	r, err := run(context.Background(), &out, cfg)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if r.Jobs != 9 || r.One.Done != 9 || r.Full.Done != 9 || len(r.Thumbnails) != 9 {
		t.Fatalf("report: %+v", r)
	}
	// The speedup is the ratio of the two measured phases, not a constant.
	if r.One.Elapsed <= 0 || r.Full.Elapsed <= 0 || r.Speedup != r.One.Elapsed.Seconds()/r.Full.Elapsed.Seconds() {
		t.Fatalf("speedup %v from %v and %v", r.Speedup, r.One.Elapsed, r.Full.Elapsed)
	}
	want := map[string][2]int{"64": {64, 40}, "128": {128, 80}, "400": {320, 200}} // 400 > 320: not enlarged
	for _, path := range r.Thumbnails {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := image.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		size := strings.TrimSuffix(filepath.Base(path)[strings.LastIndex(filepath.Base(path), "_")+1:], ".png")
		if w := want[size]; c.Width != w[0] || c.Height != w[1] {
			t.Errorf("%s: %dx%d, want %dx%d", path, c.Width, c.Height, w[0], w[1])
		}
	}
	text := out.String()
	for _, s := range []string{"speedup:", "per worker:", "load distribution", "priorities"} {
		if !strings.Contains(text, s) {
			t.Errorf("output lacks %q:\n%s", s, text)
		}
	}
	return r, text
}

func TestQuickProcesses(t *testing.T) {
	cfg := quickConfig(t, "processes")
	r, text := checkRun(t, cfg)
	// 320x200 RGBA is 250 KiB: under 1 MiB, the workers read the files.
	if r.Full.Shared != 0 || !strings.Contains(text, "shared memory: none (no source image over 1 MiB decoded") {
		t.Errorf("small images shared: %d\n%s", r.Full.Shared, text)
	}
}

// TestSharedImages: images over the threshold are decoded in the parent
// and lent to the workers, and the thumbnails come out the same.
func TestSharedImages(t *testing.T) {
	cfg := quickConfig(t, "processes")
	cfg.shareAbove = 64 << 10
	r, text := checkRun(t, cfg)
	if r.Full.Shared != 3 || r.Full.SharedBytes != 3*4*320*200 ||
		!strings.Contains(text, "shared memory: 3 source images over 64 KiB decoded") {
		t.Errorf("shared %d images, %d bytes, want 3 and %d:\n%s", r.Full.Shared, r.Full.SharedBytes, 3*4*320*200, text)
	}
}

// TestTempDirRemoved: without -out the run's directory is removed at exit;
// with -out (the other tests) the thumbnails stay.
func TestTempDirRemoved(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	cfg := quickConfig(t, "goroutines")
	cfg.out = ""
	var out bytes.Buffer
	r, err := run(context.Background(), &out, cfg)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.HasPrefix(r.OutDir, tmp) || !strings.Contains(out.String(), "a temporary directory removed at exit") {
		t.Errorf("output directory %s, not under %s:\n%s", r.OutDir, tmp, out.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in %s after the run: %v", tmp, left)
	}
	// And when the run fails part way (bad -in), too.
	cfg.in = t.TempDir()
	if _, err := run(context.Background(), &bytes.Buffer{}, cfg); err == nil {
		t.Fatal("empty -in directory accepted")
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in %s after a failed run: %v", tmp, left)
	}
}

// TestVerbose: -v's logger gets the debug records of the pool, the
// queue's records, and the images shared.
func TestVerbose(t *testing.T) {
	cfg := quickConfig(t, "processes")
	cfg.shareAbove = 64 << 10
	var log lockedBuffer
	cfg.logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	checkRun(t, cfg)
	for _, want := range []string{`level=DEBUG msg="procpool: worker spawned"`, `msg="queue started"`, `level=DEBUG msg="demo: image shared"`} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("debug log lacks %s:\n%s", want, log.String())
		}
	}
}

// lockedBuffer is a log destination written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestQuickGoroutines(t *testing.T) {
	checkRun(t, quickConfig(t, "goroutines"))
}

func TestPriorityOrder(t *testing.T) {
	// One worker, every job queued before it starts: every 64px thumbnail
	// (critical) finishes before any 400px one (low).
	cfg := quickConfig(t, "goroutines")
	cfg.workers = 1
	var out bytes.Buffer
	r, err := run(context.Background(), &out, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Full.LastDone[64] > r.Full.FirstDone[128] || r.Full.LastDone[128] > r.Full.FirstDone[400] {
		t.Fatalf("priorities not honoured: first %v last %v", r.Full.FirstDone, r.Full.LastDone)
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := quickConfig(t, "goroutines")
	if _, err := run(ctx, &bytes.Buffer{}, cfg); err == nil {
		t.Fatal("run on a canceled context succeeded")
	}
}

func TestBadInput(t *testing.T) {
	cfg := quickConfig(t, "threads")
	if _, err := run(context.Background(), &bytes.Buffer{}, cfg); err == nil {
		t.Fatal("bad -mode accepted")
	}
	if _, err := parseSizes("64,abc"); err == nil {
		t.Fatal("bad -sizes accepted")
	}
	cfg = quickConfig(t, "goroutines")
	cfg.in = t.TempDir() // empty
	if _, err := run(context.Background(), &bytes.Buffer{}, cfg); err == nil {
		t.Fatal("empty -in directory accepted")
	}
}

// TestExposedHTTP: -http on an address other machines can reach is
// refused, before anything runs, unless -insecure is given.
func TestExposedHTTP(t *testing.T) {
	for _, addr := range []string{":8080", "0.0.0.0:8080", "192.0.2.1:8080"} {
		cfg := quickConfig(t, "goroutines")
		cfg.http = addr
		var out bytes.Buffer
		_, err := run(context.Background(), &out, cfg)
		if err == nil || !strings.Contains(err.Error(), "refusing to serve -http "+addr+" beyond loopback") || !strings.Contains(err.Error(), "-insecure") {
			t.Errorf("-http %s: %v", addr, err)
		}
		if out.Len() != 0 {
			t.Errorf("-http %s: ran before refusing:\n%s", addr, out.String())
		}
	}
	// With -insecure the check is passed: 192.0.2.1 (TEST-NET-1) is no
	// address of this machine, so the listen itself fails.
	cfg := quickConfig(t, "goroutines")
	cfg.http, cfg.exposed = "192.0.2.1:8080", true
	if _, err := run(context.Background(), &bytes.Buffer{}, cfg); err == nil || strings.Contains(err.Error(), "refusing") {
		t.Errorf("-http 192.0.2.1:8080 -insecure: %v, want a failure to listen", err)
	}
}

func TestFit(t *testing.T) {
	for _, c := range []struct{ w, h, size, ww, wh int }{
		{1600, 900, 64, 64, 36}, {900, 1600, 64, 36, 64}, {100, 50, 400, 100, 50}, {1000, 1, 10, 10, 1},
	} {
		if w, h := fit(c.w, c.h, c.size); w != c.ww || h != c.wh {
			t.Errorf("fit(%d,%d,%d) = %d,%d want %d,%d", c.w, c.h, c.size, w, h, c.ww, c.wh)
		}
	}
}

func TestHTTPDashboard(t *testing.T) {
	cfg := quickConfig(t, "processes")
	cfg.http = "127.0.0.1:0"
	var out bytes.Buffer
	if _, err := run(context.Background(), &out, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "dashboard: http://127.0.0.1:") {
		t.Fatalf("no dashboard address in:\n%s", out.String())
	}
}

func TestWebDuringPhase(t *testing.T) {
	s, err := monitor.NewSampler()
	if err != nil {
		t.Fatal(err)
	}
	site, err := serveWeb("127.0.0.1:0", s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer site.close()
	srv := httptest.NewServer(site)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/"); code != http.StatusServiceUnavailable {
		t.Fatalf("dashboard between phases: %d, want 503", code)
	}
	q, err := jobqueue.New(jobqueue.Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	jobqueue.HandleFunc(q, "thumbnail", makeThumbnail)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	site.attach(q, nil)
	code, body := get("/")
	if code != http.StatusOK || !strings.Contains(body, "<html") {
		t.Fatalf("dashboard during a phase: %d %.100q", code, body)
	}
	code, body = get("/metrics")
	if code != http.StatusOK || !strings.Contains(body, "corework_jobqueue_workers") || !strings.Contains(body, "corework_cpu_usage_ratio") {
		t.Fatalf("metrics: %d, missing queue or CPU series", code)
	}
	site.detach()
	if err := q.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

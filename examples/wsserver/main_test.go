package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestQuick is the -quick run: serve, run the client session against
// itself, shut down.
func TestQuick(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out syncBuffer
	cfg := config{addr: "127.0.0.1:0", session: quickSession, quick: true, statsTick: 50 * time.Millisecond}
	if err := run(ctx, &out, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, re := range []string{
		`(?m)^serving the dashboard on http://127\.0\.0\.1:\d+/`,
		`(?m)^operator view \(every job; keep this URL to yourself\): http://127\.0\.0\.1:\d+/\?token=[0-9A-Z]{26}$`,
		`(?m)^ +\+\d+ ms  -- filling the \d+ workers with low fib-recursive\(35\) jobs$`,
		`(?m)^ +\+\d+ ms  submit +\S{36}  fib-recursive\(35\) +low$`,
		`(?m)^ +\+\d+ ms  started +\S{36}  fib-recursive\(35\) +low$`,
		`(?m)^ +\+\d+ ms  progress +\S{36}  fib-recursive\(35\) +\d+% \d+ of 29860703 calls$`,
		`(?m)^ +\+\d+ ms  result +\S{36}  fib-recursive\(35\) += \{"n":35,"result":9227465,"elapsed_ms":\d+\}$`,
		`(?m)^ +\+\d+ ms  result +\S{36}  fib-recursive\(18\) += \{"n":18,"result":2584,`,
		`(?m)^started in this order:$`,
		`(?m)^shutting down$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s:\n%s", re, text)
		}
	}
	// The lines are in time order.
	last := int64(-1 << 62)
	for _, m := range regexp.MustCompile(`(?m)^ +\+(\d+) ms  `).FindAllStringSubmatch(text, -1) {
		ms, _ := strconv.ParseInt(m[1], 10, 64)
		if ms < last {
			t.Errorf("line at +%d ms printed after one at +%d ms:\n%s", ms, last, text)
			break
		}
		last = ms
	}
}

// TestClientSession runs the client session against a server with two
// workers and checks its claim with the times the events carry: every
// critical and high job started before every low job that was still
// waiting when it was submitted.
func TestClientSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addr, _ := startServer(t, ctx, config{addr: "127.0.0.1:0", workers: 2, statsTick: time.Second})
	var out syncBuffer
	// The quick session with fillers long enough (fib(38), about a third
	// of a second unloaded) that the low jobs queued behind them are still
	// waiting when the urgent ones come, however loaded the machine.
	s := quickSession
	s.fill = 38
	jobs, err := runClient(ctx, &out, "ws://"+addr.String()+"/", s, nil)
	if err != nil {
		t.Fatalf("runClient: %v\n%s", err, out.String())
	}
	want := 2 + len(s.waiting) + len(s.urgent)
	if len(jobs) != want {
		t.Fatalf("%d jobs, want %d", len(jobs), want)
	}
	lowWaiting := 0
	for _, u := range jobs {
		if u.priority < jobqueue.High {
			continue
		}
		if u.started.IsZero() {
			t.Fatalf("%s %s never started\n%s", u.priority, u.name, out.String())
		}
		for _, l := range jobs {
			if l.priority != jobqueue.Low || !l.acked.Before(u.acked) || !l.started.After(u.acked) {
				continue // not a low job waiting when u was submitted
			}
			lowWaiting++
			if !u.started.Before(l.started) {
				t.Errorf("%s %s (submitted %v) started at %v, after low %s waiting since %v started at %v",
					u.priority, u.name, u.acked, u.started, l.name, l.acked, l.started)
			}
		}
	}
	if lowWaiting == 0 {
		t.Errorf("no low job was waiting when the urgent ones were submitted: the session shows nothing\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}

// TestFlags checks the command line: -h prints the flags and asks for a
// clean exit, -v turns on debug logging, client and -quick pick their
// session.
func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	if _, err := parseArgs([]string{"-h"}, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "-v\tdebug logging") && !strings.Contains(stderr.String(), "  -v\n") {
		t.Errorf("-h: %v\n%s", err, stderr.String())
	}
	cmd, err := parseArgs([]string{"client", "-v", "-addr", "10.0.0.5:9000"}, io.Discard)
	if err != nil || !cmd.client || cmd.cfg.logger == nil || cmd.cfg.addr != "10.0.0.5:9000" || cmd.cfg.session.fill != fullSession.fill {
		t.Errorf("client -v: %+v, %v", cmd, err)
	}
	if !cmd.cfg.logger.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("-v does not enable debug records")
	}
	cmd, err = parseArgs([]string{"-quick"}, io.Discard)
	if err != nil || cmd.client || cmd.cfg.logger != nil || !cmd.cfg.quick || cmd.cfg.addr != "127.0.0.1:0" || cmd.cfg.session.fill != quickSession.fill {
		t.Errorf("-quick: %+v, %v", cmd, err)
	}
	if _, err := parseArgs([]string{"extra"}, io.Discard); err == nil {
		t.Error("an unexpected argument was accepted")
	}
	cmd, err = parseArgs([]string{"-trusted-proxies", "127.0.0.1/32, ::1/128"}, io.Discard)
	if err != nil || len(cmd.cfg.proxies) != 2 || cmd.cfg.proxies[1].String() != "::1/128" {
		t.Errorf("-trusted-proxies: %v, %v", cmd.cfg.proxies, err)
	}
	if _, err := parseArgs([]string{"-trusted-proxies", "127.0.0.1"}, io.Discard); err == nil {
		t.Error("-trusted-proxies with an address, not a prefix, was accepted")
	}
}

// TestVerbose runs a job on a server whose queue and bridge log at debug
// level, as -v makes them, and sees their records.
func TestVerbose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logs syncBuffer
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() {
		done <- run(sctx, io.Discard, config{addr: "127.0.0.1:0", workers: 1, ready: ready, statsTick: time.Second, logger: debugLogger(&logs)})
	}()
	addr := <-ready
	c, err := wsbridge.Dial(ctx, "ws://"+addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, jobqueue.JobRequest{Type: "no-such-type"}); err == nil {
		t.Error("a job of an unknown type was accepted")
	}
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: fibType, Payload: json.RawMessage(`{"n":10}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	c.Close()
	stop()
	<-done
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Errorf("no debug record logged:\n%s", logs.String())
	}
}

// TestServeUntilCanceled runs the server as `go run ./examples/wsserver`
// does, talks to it as the guide's client and the dashboard do, and stops
// it as Ctrl-C does.
func TestServeUntilCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	var out syncBuffer
	go func() {
		done <- run(ctx, &out, config{addr: "127.0.0.1:0", ready: ready, statsTick: 50 * time.Millisecond})
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	}

	// The dashboard is served at /.
	resp, err := http.Get("http://" + addr.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "job-form") {
		t.Fatalf("GET /: %s", resp.Status)
	}

	// The guide's task name works on the same URL.
	tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
	defer tcancel()
	c, err := wsbridge.Dial(tctx, "ws://"+addr.String())
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Submit(tctx, jobqueue.JobRequest{Type: "calcular_fibonacci", Payload: json.RawMessage(`{"n":25}`)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Wait(tctx, id)
	if err != nil || !strings.HasPrefix(string(info.Result), `{"n":25,"result":75025,`) {
		t.Fatalf("calcular_fibonacci: %s, %v", info.Result, err)
	}

	// Ctrl-C: run returns promptly, after closing the client with 1001.
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10 s of the cancellation")
	}
	t.Logf("stopped in %v", time.Since(start))
	c.Close()
}

func TestFibonacci(t *testing.T) {
	ctx := context.Background()
	for n, want := range map[int]int64{0: 0, 1: 1, 2: 1, 10: 55, 30: 832040} {
		got, err := fibonacci(ctx, fibIn{N: n}) // the fib-recursive handler
		if err != nil || got.Result != want || got.N != n {
			t.Errorf("fibonacci(%d) = %+v, %v; want %d", n, got, err, want)
		}
	}
	for _, n := range []int{-1, maxFib + 1} {
		if _, err := fibonacci(ctx, fibIn{N: n}); !jobqueue.IsPermanent(err) {
			t.Errorf("fibonacci(%d): %v, want a permanent error", n, err)
		}
	}
	canceled, stop := context.WithCancel(ctx)
	stop()
	if _, err := fibonacci(canceled, fibIn{N: 40}); !errors.Is(err, context.Canceled) {
		t.Errorf("fibonacci on a canceled context: %v", err)
	}
}

func TestSleep(t *testing.T) {
	got, err := sleep(context.Background(), sleepIn{Seconds: 0.01})
	if err != nil || got != "slept 10ms" {
		t.Fatalf("sleep = %q, %v", got, err)
	}
	if _, err := sleep(context.Background(), sleepIn{Seconds: -1}); !jobqueue.IsPermanent(err) {
		t.Fatalf("sleep(-1): %v", err)
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8765":   "127.0.0.1:8765",
		":8765":          "127.0.0.1:8765",
		"10.0.0.5:9000":  "10.0.0.5:9000",
		"[::]:8765":      "127.0.0.1:8765",
		"example.com:80": "example.com:80",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// startServer runs the server with cfg until the test ends and returns
// its address and what it printed.
func startServer(t *testing.T, ctx context.Context, cfg config) (net.Addr, *syncBuffer) {
	t.Helper()
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	out := &syncBuffer{}
	sctx, stop := context.WithCancel(ctx)
	cfg.ready = ready
	go func() { done <- run(sctx, out, cfg) }()
	t.Cleanup(func() {
		stop()
		<-done
	})
	select {
	case addr := <-ready:
		return addr, out
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
		return nil, nil
	}
}

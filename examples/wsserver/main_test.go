package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuffer
	cfg := config{addr: "127.0.0.1:0", jobs: quickSession, quick: true, statsTick: 50 * time.Millisecond}
	if err := run(ctx, &out, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, re := range []string{
		`(?m)^serving the dashboard on http://127\.0\.0\.1:\d+/`,
		`(?m)^operator view \(every job; keep this URL to yourself\): http://127\.0\.0\.1:\d+/\?token=[0-9A-Z]{26}$`,
		`(?m)^ack +\S{36}  fibonacci\(30\) +priority normal$`,
		`(?m)^progress +\S{36}  fibonacci\(30\) +\d+% \d+ of 2692537 calls$`,
		`(?m)^result +\S{36}  fibonacci\(30\) = \{"n":30,"result":832040,"elapsed_ms":\d+\}$`,
		`(?m)^result +\S{36}  fibonacci\(18\) = \{"n":18,"result":2584,`,
		`(?m)^shutting down$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s:\n%s", re, text)
		}
	}
	if n := strings.Count(text, "\nack "); n != len(quickSession) {
		t.Errorf("%d acks, want %d", n, len(quickSession))
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
		got, err := fibonacci(ctx, fibIn{N: n})
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

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestQuick(t *testing.T) {
	var out bytes.Buffer
	// Waits long enough that a loaded machine's timer and scheduling
	// delays (tens of milliseconds) cannot make the overlap vanish: with
	// 30 ms waits, concurrent once took 104 ms against sequential 93 ms.
	cfg := config{ioTasks: 3, ioDelay: 100 * time.Millisecond, cpuTasks: 4, fibN: 18}
	r, err := run(context.Background(), &out, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Three 100ms waits one after another take 300ms or more; run on a
	// pool they overlap.
	if r.ioSequential < 300*time.Millisecond || r.ioConcurrent >= r.ioSequential {
		t.Errorf("I/O: sequential %v, concurrent %v", r.ioSequential, r.ioConcurrent)
	}
	if r.cpuSequential <= 0 || r.cpuPool <= 0 || r.cpuOneCore <= 0 {
		t.Errorf("CPU timings not measured: %+v", r)
	}
	text := out.String()
	line := regexp.MustCompile(`(?m)^\[\d\d:\d\d:\d\d\.\d{3}\] \[worker-\d\] start I/O task-\d$`)
	if !line.MatchString(text) {
		t.Errorf("no timestamped worker line in:\n%s", text)
	}
	for _, want := range []string{"sequential:", "speedup", "GOMAXPROCS=1"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	if _, err := run(ctx, &out, config{ioTasks: 2, ioDelay: time.Hour, cpuTasks: 1, fibN: 10}); err == nil {
		t.Fatal("run on a canceled context returned no error")
	}
}

// TestFlags checks -h (flag.ErrHelp: main exits 0), -quick and -v (a Debug
// record per measured phase).
func TestFlags(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseArgs([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "-v\tdebug log") {
		t.Fatalf("-h: %v\n%s", err, help.String())
	}
	if _, err := parseArgs([]string{"extra"}, io.Discard); err == nil {
		t.Error("an unexpected argument was accepted")
	}
	var logs bytes.Buffer
	cfg, err := parseArgs([]string{"-v", "-quick"}, &logs)
	if err != nil || cfg.logger == nil || cfg.ioDelay != 50*time.Millisecond {
		t.Fatalf("-v -quick: %+v, %v", cfg, err)
	}
	cfg.ioDelay, cfg.cpuTasks, cfg.fibN = time.Millisecond, 2, 10
	if _, err := run(context.Background(), io.Discard, cfg); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), `level=DEBUG msg="phase measured"`); n != 5 {
		t.Errorf("-v: %d debug records, want 5:\n%s", n, logs.String())
	}
}

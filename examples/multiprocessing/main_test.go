package main

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/corework/corework/procpool"
)

func TestMain(m *testing.M) {
	procpool.Main()
	// Race-enabled workers would sleep 1 s in os.Exit at every Shutdown.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	goleak.VerifyTestMain(m)
}

// lockedBuffer collects the lesson's output and the workers' output, which
// arrive from different goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestRunQuick(t *testing.T) {
	var out lockedBuffer
	if err := run(context.Background(), &out, config{fibN: 20, jobs: 4}); err != nil {
		t.Fatal(err)
	}
	text := out.b.String()
	t.Log("\n" + text)
	for _, want := range []string{
		"fib(20) = 6765 in worker pid ",
		"results: [6765 6765 6765] ... (4 values, in input order)",
		"speedup ",
		"Cpus_allowed_list ",
		"task: calling os.Exit(3)", // the worker's stderr, forwarded
		"exit status 3",
		`level=WARN msg="procpool: worker crashed" worker=`, // the pool's log record
		"exit_code=3",
		"the pool goes on: fib(20) = 6765",
		"crashes 1, restarts 1, workers alive 2",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

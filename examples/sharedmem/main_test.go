package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/corework/corework/procpool"
)

func TestMain(m *testing.M) {
	procpool.Main() // the lesson's worker processes are this test binary
	// Race-enabled workers would sleep 1 s in os.Exit at every Shutdown.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	goleak.VerifyTestMain(m)
}

// TestQuick runs the lesson as -quick does and checks what it prints:
// figures measured, not typed in, and the same histograms both ways.
func TestQuick(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out, sizeConfig(4)); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Log("\n" + text)
	if strings.Contains(text, "not supported") {
		t.Skip("procpool unsupported here")
	}
	for _, re := range []string{
		`(?m)^image:  4096x1024 grayscale, 4\.0 MiB, generated in \S+ in the parent$`,
		`(?m)^pool:   2 worker processes, each given 512 rows \(2\.0 MiB\) per round$`,
		`(?m)^copied: 2\.0 MiB per request through its pipe; the whole image in \S+, \d+ MB/s$`,
		`(?m)^shared: \d+ bytes per request through its pipe; the whole image in \S+, \d+ MB/s$`,
		`during the loan the owner's Bytes says: procpool: shared buffer is lent`,
		`(?m)^shared memory: \d+\.\dx the throughput of copying through the pipes \(best of 3 rounds each\)$`,
		`(?m)^results match: true \(the parent's histogram, mean brightness \d+\.\d\d\)$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s", re)
		}
	}
	// What crossed a pipe: half the image copied, a small handle shared.
	m := regexp.MustCompile(`shared: (\d+) bytes`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no handle size")
	}
	if n, _ := strconv.Atoi(m[1]); n <= 0 || n > 512 {
		t.Errorf("handle of %d bytes per request, want a few dozen", n)
	}
}

// TestVerbose checks that -v's logger receives the pool's debug records.
func TestVerbose(t *testing.T) {
	var out, log bytes.Buffer
	cfg := sizeConfig(1)
	cfg.rounds = 1
	cfg.logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := run(context.Background(), &out, cfg); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "not supported") {
		t.Skip("procpool unsupported here")
	}
	for _, want := range []string{`level=DEBUG msg="procpool: worker spawned"`, `msg="procpool: worker stopped"`} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("debug log lacks %s:\n%s", want, log.String())
		}
	}
}

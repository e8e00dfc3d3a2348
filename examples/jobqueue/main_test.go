package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestQuickRun runs the example's quick configuration and checks that every
// job is accounted for, that the failures are the ones the example plants,
// and that priorities were honoured.
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	o := quickOptions()
	sum, err := run(ctx, &out, o)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	want := o.Images + o.Reports + o.Emails
	if sum.Submitted != want || sum.Succeeded+sum.Failed != want {
		t.Fatalf("submitted %d, succeeded %d, failed %d; want %d jobs accounted for", sum.Submitted, sum.Succeeded, sum.Failed, want)
	}
	// Two planted failures: an invalid address (permanent) and a template
	// that panics on every attempt.
	if sum.Failed != 2 || sum.Stats.Types["email"].Failed != 2 {
		t.Fatalf("failed %d (email %d), want the 2 planted e-mail failures\n%s", sum.Failed, sum.Stats.Types["email"].Failed, out.String())
	}
	if sum.Stats.Retried == 0 {
		t.Fatal("no retries, want the busy-server e-mails retried")
	}
	s := out.String()
	for _, frag := range []string{"invalid recipient", "task email panicked", ".render(", "goroutine",
		"retry  email", "ok     thumbnail", "ok     report", "report    low", "priority", "wait p50"} {
		if !strings.Contains(s, frag) {
			t.Errorf("output lacks %q", frag)
		}
	}
	// All jobs were queued before the workers started, so the first start
	// of a higher level cannot come after the median start of a lower one.
	p := sum.Stats.Priorities
	if p[9].Wait.P50 > p[6].Wait.P50 || p[6].Wait.P50 > p[3].Wait.P50 || p[3].Wait.P50 > p[0].Wait.P50 {
		t.Errorf("median waits not ordered by priority: critical %v high %v normal %v low %v",
			p[9].Wait.P50, p[6].Wait.P50, p[3].Wait.P50, p[0].Wait.P50)
	}
	if t.Failed() {
		t.Log(s)
	}
}

// TestFlags checks the command line: -h prints sane defaults, -v turns on
// the event log and the queue's debug records.
func TestFlags(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseArgs([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if s := help.String(); !strings.Contains(s, "(default 500ms)") || strings.Contains(s, "-1ns") {
		t.Errorf("-h prints:\n%s", s)
	}
	o, err := parseArgs(nil, io.Discard)
	if err != nil || o.Aging != 500*time.Millisecond || o.Logger != nil || o.Verbose {
		t.Errorf("no flags: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"-aging", "0", "-quick"}, io.Discard)
	if err != nil || o.Aging != 0 || o.Images != quickOptions().Images {
		t.Errorf("-aging 0 -quick: %+v, %v", o, err)
	}
	if _, err := parseArgs([]string{"-aging", "-1s"}, io.Discard); err == nil {
		t.Error("-aging -1s accepted")
	}
	var logs bytes.Buffer
	ctxT := context.Background()
	o, err = parseArgs([]string{"-v", "-quick"}, &logs)
	if err != nil || !o.Verbose || o.Logger == nil || !o.Logger.Enabled(ctxT, slog.LevelDebug) {
		t.Fatalf("-v: %+v, %v", o, err)
	}
	o.Emails, o.Images, o.Reports = 4, 1, 1
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := run(ctx, io.Discard, o); err != nil {
		t.Fatal(err)
	}
	// The queue logs no Debug record of its own today; its start is there.
	if s := logs.String(); !strings.Contains(s, `msg="queue started"`) {
		t.Errorf("-v logged:\n%s", s)
	}
}

// TestRecurring runs the second part on the quick configuration: the
// two-second schedule runs its report at least twice, each tick once;
// the burst grows the workers and they return to one; every thumbnail of
// the burst runs.
func TestRecurring(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncWriter
	res, err := recurring(ctx, &out, quickOptions())
	if err != nil {
		t.Fatalf("recurring: %v\n%s", err, out.String())
	}
	s := out.String()
	seen := map[string]bool{}
	for _, id := range res.Reports {
		if seen[id] || !strings.HasPrefix(id, "nightly-") {
			t.Errorf("report job %s: twice, or not a tick's", id)
		}
		seen[id] = true
	}
	// How far the workers rise depends on what the autoscaler sees at its
	// first look, while the burst is still being submitted (on a loaded
	// machine, 3 of 4); jobqueue's TestAutoscale checks the rise to the
	// maximum. Here: a rise, and a return to one.
	top := slices.Max(res.Counts)
	if len(res.Reports) < 2 || top < 2 || res.Counts[len(res.Counts)-1] != 1 || res.Counts[0] != 1 {
		t.Fatalf("%d reports, worker counts %v: want 2 or more, a rise and a return to 1\n%s", len(res.Reports), res.Counts, s)
	}
	for _, frag := range []string{"nightly report for tick", "workers -> ", "a burst of", "burst done", "scheduled reports; worker counts 1 -> "} {
		if !strings.Contains(s, frag) {
			t.Errorf("output lacks %q\n%s", frag, s)
		}
	}
	t.Logf("reports %v; worker counts %v", res.Reports, res.Counts)
}

// syncWriter is a strings.Builder for writers on several goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

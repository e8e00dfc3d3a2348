package procpool_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/procpool"
)

// recorder is a slog.Handler that keeps every record, at every level.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recorder) WithGroup(string) slog.Handler      { return h }

// logged is one record: its level and its attributes by key.
type logged struct {
	level slog.Level
	attrs map[string]any
}

// find returns the records with message msg.
func (h *recorder) find(msg string) []logged {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logged
	for _, r := range h.recs {
		if r.Message != msg {
			continue
		}
		l := logged{level: r.Level, attrs: map[string]any{}}
		r.Attrs(func(a slog.Attr) bool {
			l.attrs[a.Key] = a.Value.Resolve().Any()
			return true
		})
		out = append(out, l)
	}
	return out
}

// wait waits until a record with message msg has attribute pid equal to
// pid, and returns it.
func (h *recorder) wait(t *testing.T, msg string, pid int) logged {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range h.find(msg) {
			if l.attrs["pid"] == int64(pid) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q record for pid %d; records: %+v", msg, pid, h.find(msg))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// want checks l's level and the attributes in attrs (ints as int64).
func (l logged) want(t *testing.T, what string, level slog.Level, attrs map[string]any) {
	t.Helper()
	if l.level != level {
		t.Errorf("%s: level %v, want %v", what, l.level, level)
	}
	for k, v := range attrs {
		if got, ok := l.attrs[k]; !ok || got != v {
			t.Errorf("%s: %s = %#v, want %#v (all: %v)", what, k, got, v, l.attrs)
		}
	}
}

// TestLogCrash: a worker's start and crash reach WithLogger as records with
// structured attributes, the crash before its caller hears of it.
func TestLogCrash(t *testing.T) {
	rec := &recorder{}
	p := newPool(t, procpool.WithWorkers(1), procpool.WithOutput(discard{}), procpool.WithLogger(slog.New(rec)))
	ctx := context.Background()
	before, err := pidTask.Call(ctx, p, struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "procpool: worker spawned", before).want(t, "spawned", slog.LevelDebug,
		map[string]any{"worker": int64(0), "pid": int64(before)})

	if _, err := exitTask.Call(ctx, p, 3); !errors.Is(err, procpool.ErrWorkerCrashed) {
		t.Fatalf("exit task: %v", err)
	}
	crashes := rec.find("procpool: worker crashed")
	if len(crashes) != 1 {
		t.Fatalf("%d crash records when the call returned, want 1", len(crashes))
	}
	crashes[0].want(t, "crashed", slog.LevelWarn, map[string]any{
		"worker":    int64(0),
		"pid":       int64(before),
		"status":    "exit status 3",
		"exit_code": int64(3),
		"tasks":     int64(2), // test.pid, then test.exit
		"failed":    int64(1),
		"retried":   int64(0),
		"stderr":    "exiting with 3",
	})
	if _, ok := crashes[0].attrs["signal"]; ok {
		t.Errorf("crashed: a signal attribute for an exit: %v", crashes[0].attrs)
	}

	after, err := pidTask.Call(ctx, p, struct{}{})
	if err != nil || after == before {
		t.Fatalf("after crash: pid %d (before %d), %v", after, before, err)
	}
	rec.wait(t, "procpool: worker spawned", after).want(t, "respawned", slog.LevelDebug,
		map[string]any{"worker": int64(0)})
}

// TestLogKilledAndRecycled: a worker killed by a signal is logged with the
// signal and the request retried; a recycled worker with the tasks it
// served.
func TestLogKilledAndRecycled(t *testing.T) {
	rec := &recorder{}
	p := newPool(t, procpool.WithWorkers(1), procpool.WithRetry(1), procpool.WithMaxTasksPerWorker(3),
		procpool.WithOutput(discard{}), procpool.WithLogger(slog.New(rec)))
	ctx := context.Background()
	victim := waitAlive(t, p, 1).PerWorker[0].PID
	done := make(chan error, 1)
	go func() {
		_, err := sleepTask.Call(ctx, p, 200*time.Millisecond)
		done <- err
	}()
	waitInFlight(t, p, 1)
	proc, err := os.FindProcess(victim)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("retried call: %v", err)
	}
	rec.wait(t, "procpool: worker crashed", victim).want(t, "killed", slog.LevelWarn, map[string]any{
		"worker":    int64(0),
		"status":    "signal: killed",
		"exit_code": int64(-1),
		"signal":    "killed",
		"failed":    int64(0),
		"retried":   int64(1),
	})

	// The retry was task 1 of the new worker; after two more it has served
	// its 3, and the next call finds it full and makes it retire.
	second := waitAlive(t, p, 1).PerWorker[0].PID
	for range 3 {
		if _, err := pidTask.Call(ctx, p, struct{}{}); err != nil {
			t.Fatal(err)
		}
	}
	rec.wait(t, "procpool: worker recycled", second).want(t, "recycled", slog.LevelDebug,
		map[string]any{"worker": int64(0), "tasks": int64(3)})
}

// TestLogCloseDuringRestart: Close while a crashed worker's replacement is
// starting kills the new process in its handshake; that is the pool
// stopping, not a start failure, and logs no error.
func TestLogCloseDuringRestart(t *testing.T) {
	for range 20 {
		rec := &recorder{}
		p, err := procpool.New(procpool.WithWorkers(1), procpool.WithOutput(discard{}), procpool.WithLogger(slog.New(rec)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := exitTask.Call(context.Background(), p, 3); err == nil {
			t.Fatal("the worker did not crash")
		}
		p.Close() // the replacement is starting now
		if f := rec.find("procpool: worker start failed"); len(f) > 0 {
			t.Fatalf("Close during a restart logged %d start failures: %v", len(f), f[0].attrs)
		}
	}
}

package jobqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// recorder is a slog.Handler that keeps every record, with the attributes
// added by Logger.With, for tests to inspect.
type recorder struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func newRecorder() recorder {
	return recorder{mu: new(sync.Mutex), recs: new([]logRecord)}
}

func (r recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r recorder) Handle(_ context.Context, rec slog.Record) error {
	lr := logRecord{level: rec.Level, msg: rec.Message, attrs: map[string]slog.Value{}}
	for _, a := range r.attrs {
		lr.attrs[a.Key] = a.Value.Resolve()
	}
	rec.Attrs(func(a slog.Attr) bool {
		lr.attrs[a.Key] = a.Value.Resolve()
		return true
	})
	r.mu.Lock()
	*r.recs = append(*r.recs, lr)
	r.mu.Unlock()
	return nil
}

func (r recorder) WithAttrs(as []slog.Attr) slog.Handler {
	r.attrs = append(r.attrs[:len(r.attrs):len(r.attrs)], as...)
	return r
}

func (r recorder) WithGroup(string) slog.Handler { return r } // not used by the queue

// find returns the records with message msg.
func (r recorder) find(msg string) []logRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logRecord
	for _, lr := range *r.recs {
		if lr.msg == msg {
			out = append(out, lr)
		}
	}
	return out
}

// TestLoggerRecordsRetry checks the structured record of a retried attempt:
// message, level and attributes, not a formatted string.
func TestLoggerRecordsRetry(t *testing.T) {
	rec := newRecorder()
	q := newQueue(t, jobqueue.Config{Workers: 1, Logger: slog.New(rec),
		Backoff: func(int, error) time.Duration { return 5 * time.Millisecond }})
	var calls int
	q.Handle("flaky", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		calls++
		if calls == 1 {
			return nil, errors.New("smtp: 421 busy")
		}
		return nil, nil
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "flaky", MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}

	if n := len(rec.find("queue started")); n != 1 {
		t.Errorf("%d \"queue started\" records, want 1", n)
	}
	retries := rec.find("job retrying")
	if len(retries) != 1 {
		t.Fatalf("%d \"job retrying\" records, want 1", len(retries))
	}
	r := retries[0]
	if r.level != slog.LevelWarn {
		t.Errorf("level %v, want WARN", r.level)
	}
	checks := []struct {
		key  string
		kind slog.Kind
		want any
	}{
		{"queue", slog.KindString, q.Tag()},
		{"job", slog.KindString, id},
		{"type", slog.KindString, "flaky"},
		{"attempt", slog.KindInt64, int64(1)},
		{"max_attempts", slog.KindInt64, int64(3)},
		{"delay", slog.KindDuration, 5 * time.Millisecond},
	}
	for _, c := range checks {
		v, ok := r.attrs[c.key]
		if !ok || v.Kind() != c.kind || v.Any() != c.want {
			t.Errorf("attribute %q = %v (%v), want %v (%v)", c.key, v, v.Kind(), c.want, c.kind)
		}
	}
	if v, ok := r.attrs["err"]; !ok {
		t.Error("no err attribute")
	} else if e, isErr := v.Any().(error); !isErr || e.Error() != "smtp: 421 busy" {
		t.Errorf("err attribute %v (%T), want the handler's error value", v, v.Any())
	}
	if n := len(rec.find("job failed")); n != 0 {
		t.Errorf("%d \"job failed\" records for a job that succeeded", n)
	}
}

// TestLoggerRecordsPanicAndFailure checks the records of a job that panics
// on its only attempt: the panic with its stack, then the failure.
func TestLoggerRecordsPanicAndFailure(t *testing.T) {
	rec := newRecorder()
	q := newQueue(t, jobqueue.Config{Workers: 1, MaxAttempts: 1, Logger: slog.New(rec)})
	q.Handle("boom", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		panic("kaboom")
	}))
	q.Start()
	ctx := context.Background()
	id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "boom"})
	if _, err := q.Wait(ctx, id); !errors.Is(err, jobqueue.ErrFailed) {
		t.Fatalf("Wait = %v, want failed", err)
	}
	p := rec.find("job handler panicked")
	if len(p) != 1 || p[0].level != slog.LevelError || p[0].attrs["job"].String() != id ||
		p[0].attrs["source"].String() != "jobqueue" || p[0].attrs["stack"].String() == "" {
		t.Fatalf("panic records %+v, want one Error record with job, source and stack", p)
	}
	f := rec.find("job failed")
	if len(f) != 1 || f[0].level != slog.LevelError || f[0].attrs["job"].String() != id || f[0].attrs["attempt"].Int64() != 1 {
		t.Fatalf("failure records %+v, want one Error record for attempt 1", f)
	}
}

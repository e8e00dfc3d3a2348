package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// recorder is a slog.Handler keeping every record with its attributes
// (those added by Logger.With included).
type recorder struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newRecorder() recorder { return recorder{mu: new(sync.Mutex), recs: new([]logRecord)} }

func (r recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r recorder) Handle(_ context.Context, rec slog.Record) error {
	lr := logRecord{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	for _, a := range r.attrs {
		lr.attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		lr.attrs[a.Key] = a.Value.String()
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

func (r recorder) WithGroup(string) slog.Handler { return r }

// await waits up to 20 seconds for a record with message msg and returns
// it.
func (r recorder) await(t *testing.T, msg string) logRecord {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, lr := range *r.recs {
			if lr.msg == msg {
				r.mu.Unlock()
				return lr
			}
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q record", msg)
	return logRecord{}
}

// TestLoggerDeadLetter: a job that fails for good is logged as
// dead-lettered, with its ID, type, attempt and error as attributes.
func TestLoggerDeadLetter(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	name := uniqueName()
	b, err := srv.Backend(testOptions(jetstream.WithName(name), jetstream.WithLogger(slog.New(rec)))...)
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, b, jobqueue.Config{Workers: 1, MaxAttempts: 1})
	q.Handle("doomed", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		return nil, errors.New("disk on fire")
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	if r := rec.await(t, "jetstream backend opened"); r.attrs["jetstream"] != name || r.attrs["worker"] != q.Tag() {
		t.Errorf("open record %+v, want jetstream=%s worker=%s", r, name, q.Tag())
	}
	id, err := q.Submit(testCtx(t), jobqueue.JobRequest{Type: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Wait(testCtx(t), id); !errors.Is(err, jobqueue.ErrFailed) {
		t.Fatalf("Wait = %v, want failed", err)
	}
	r := rec.await(t, "job dead-lettered")
	want := map[string]string{"jetstream": name, "job": id, "type": "doomed", "attempt": "1", "err": "disk on fire"}
	for k, v := range want {
		if r.attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q (record %+v)", k, r.attrs[k], v, r)
		}
	}
	if r.level != slog.LevelWarn {
		t.Errorf("level %v, want WARN", r.level)
	}
}

// TestLoggerReconnect stops the server under a connected backend and starts
// it again on the same port: the backend logs the disconnect and the
// reconnect, and the handlers given with WithNATSOptions still run.
func TestLoggerReconnect(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv, err := jetstream.NewServer(dir, jetstream.WithListen(addr))
	if err != nil {
		t.Fatal(err)
	}
	var srvMu sync.Mutex
	t.Cleanup(func() {
		srvMu.Lock()
		defer srvMu.Unlock()
		srv.Shutdown()
	})
	rec := newRecorder()
	userDisc, userRecon := make(chan struct{}, 1), make(chan struct{}, 1)
	b, err := jetstream.Connect(srv.ClientURL(), jetstream.WithName(uniqueName()), jetstream.WithLogger(slog.New(rec)),
		jetstream.WithNATSOptions(
			nats.DisconnectErrHandler(func(*nats.Conn, error) {
				select {
				case userDisc <- struct{}{}:
				default:
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) {
				select {
				case userRecon <- struct{}{}:
				default:
				}
			})))
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, b, jobqueue.Config{NoWorkers: true})

	srvMu.Lock()
	srv.Shutdown()
	srvMu.Unlock()
	if r := rec.await(t, "nats disconnected; reconnecting"); r.level != slog.LevelWarn {
		t.Errorf("disconnect logged at %v, want WARN", r.level)
	}
	select {
	case <-userDisc:
	case <-time.After(20 * time.Second):
		t.Fatal("the user's disconnect handler was not called")
	}

	srvMu.Lock()
	srv, err = jetstream.NewServer(dir, jetstream.WithListen(addr))
	srvMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r := rec.await(t, "nats reconnected")
	if r.level != slog.LevelInfo || r.attrs["url"] != "nats://"+addr {
		t.Errorf("reconnect record %+v, want INFO with url nats://%s", r, addr)
	}
	select {
	case <-userRecon:
	case <-time.After(20 * time.Second):
		t.Fatal("the user's reconnect handler was not called")
	}
	// The queue works again.
	if _, err := q.Submit(testCtx(t), jobqueue.JobRequest{Type: "later"}); err != nil {
		t.Fatalf("Submit after the reconnect: %v", err)
	}
}

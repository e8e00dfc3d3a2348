package wsbridge

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

// recorder is a slog.Handler that keeps every record, for tests.
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

// find returns the attributes of the first record with message msg whose
// attributes include every attribute of match (compared as text).
func (h *recorder) find(msg string, match ...slog.Attr) (slog.Level, map[string]slog.Value, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
next:
	for _, r := range h.recs {
		if r.Message != msg {
			continue
		}
		attrs := make(map[string]slog.Value)
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.Resolve()
			return true
		})
		for _, m := range match {
			if v, ok := attrs[m.Key]; !ok || v.String() != m.Value.String() {
				continue next
			}
		}
		return r.Level, attrs, true
	}
	return 0, nil, false
}

// waitRecord waits for a record as find describes it.
func (h *recorder) waitRecord(t *testing.T, msg string, match ...slog.Attr) (slog.Level, map[string]slog.Value) {
	t.Helper()
	var level slog.Level
	var attrs map[string]slog.Value
	waitFor(t, "record "+msg, func() bool {
		var ok bool
		level, attrs, ok = h.find(msg, match...)
		return ok
	})
	return level, attrs
}

// TestServerLogsClose checks the structured records of Config.Logger: a
// connection opened, then closed with the client's close code and reason,
// or with the server's when it closed first.
func TestServerLogsClose(t *testing.T) {
	rec := &recorder{}
	e := newEnv(t, Config{MaxMessageSize: 1024, Logger: slog.New(rec)}, jobqueue.Config{})

	r := dialRaw(t, e.url, nil)
	r.sendText(`{"command":"ping","id":1}`)
	r.until("pong")
	_, opened := rec.waitRecord(t, "wsbridge: connection opened")
	conn := opened["conn"]
	if conn.Kind() != slog.KindUint64 || !strings.HasPrefix(opened["remote"].String(), "127.0.0.1:") {
		t.Fatalf("opened: %v", opened)
	}
	r.write(frameBytes(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"), true))
	if got := r.closeCode(); got != ws.StatusNormalClosure {
		t.Fatalf("close code %d", got)
	}
	level, attrs := rec.waitRecord(t, "wsbridge: connection closed", slog.Any("conn", conn))
	if level != slog.LevelInfo || attrs["code"].Int64() != 1000 || attrs["reason"].String() != "bye" ||
		attrs["by"].String() != "client" || attrs["remote"].String() != opened["remote"].String() {
		t.Errorf("closed by the client: %v %v", level, attrs)
	}

	// A message too big: the server closes with 1009 and logs a warning.
	r2 := dialRaw(t, e.url, nil)
	r2.write(frameBytes(ws.OpText, true, make([]byte, 1025), true))
	if got := r2.closeCode(); got != ws.StatusMessageTooBig {
		t.Fatalf("close code %d", got)
	}
	level, attrs = rec.waitRecord(t, "wsbridge: connection closed", slog.Int("code", 1009))
	if level != slog.LevelWarn || attrs["by"].String() != "server" || attrs["err"].Any() == nil {
		t.Errorf("closed by the server: %v %v", level, attrs)
	}

	// Malformed commands are logged at Debug.
	r3 := dialRaw(t, e.url, nil)
	r3.sendText(`not json`)
	r3.until("error")
	if level, attrs := rec.waitRecord(t, "wsbridge: command refused"); level != slog.LevelDebug || attrs["error_code"].String() != CodeBadJSON {
		t.Errorf("command refused: %v %v", level, attrs)
	}

	// A refused upgrade.
	if _, err := Dial(testCtx(t), e.url, WithReconnect(0, 0),
		WithHeader(map[string][]string{"Origin": {"http://elsewhere.example"}})); err == nil {
		t.Fatal("a foreign origin was accepted")
	}
	if level, attrs := rec.waitRecord(t, "wsbridge: handshake refused"); level != slog.LevelWarn || attrs["status"].Int64() != 403 {
		t.Errorf("handshake refused: %v %v", level, attrs)
	}
}

// TestClientLogs checks WithLogger: dropped events, a lost connection,
// then the reconnection.
func TestClientLogs(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	p := newProxy(t, strings.TrimPrefix(e.hs.URL, "http://"))
	rec := &recorder{}
	c := dialClient(t, p.url(), WithReconnect(10*time.Millisecond, 50*time.Millisecond),
		WithLogger(slog.New(rec)), WithEventBuffer(0))
	ctx := testCtx(t)
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "noop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	if level, attrs := rec.waitRecord(t, "wsbridge: events dropped: Events is full"); level != slog.LevelWarn || attrs["dropped"].Uint64() != 1 {
		t.Errorf("events dropped: %v %v", level, attrs)
	}
	p.cut()
	if level, attrs := rec.waitRecord(t, "wsbridge: connection lost"); level != slog.LevelWarn || attrs["url"].String() != p.url() || attrs["err"].Any() == nil {
		t.Errorf("connection lost: %v %v", level, attrs)
	}
	if level, attrs := rec.waitRecord(t, "wsbridge: reconnected"); level != slog.LevelInfo || attrs["attempts"].Int64() < 1 {
		t.Errorf("reconnected: %v %v", level, attrs)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

package monitor_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/wsbridge"
)

// A real bridge on a loopback server: a client submits a job and a job of
// an unknown type, a connection from a foreign origin is refused; the
// collector reports the open connection, the refusal, the error message and
// the bridge's message counters, and the connection's end.
func TestNewWSBridgeCollector(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	jobqueue.HandleFunc(q, "echo", func(ctx context.Context, s string) (string, error) { return s, nil })
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	bridge := wsbridge.New(q, wsbridge.Config{})
	hs := httptest.NewServer(bridge)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := bridge.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		hs.Close()
		if err := q.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	ctx := t.Context()

	if c, err := wsbridge.Dial(ctx, url, wsbridge.WithReconnect(0, 0),
		wsbridge.WithHeader(http.Header{"Origin": {"http://elsewhere.example"}})); err == nil {
		c.Close()
		t.Fatal("a foreign origin was accepted")
	}
	c, err := wsbridge.Dial(ctx, url, wsbridge.WithReconnect(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "echo", Payload: []byte(`"hi"`)})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := c.Wait(ctx, id); err != nil || string(ev.Result) != `"hi"` {
		t.Fatalf("job: %+v, %v", ev, err)
	}
	if _, err := c.Submit(ctx, jobqueue.JobRequest{Type: "nope"}); err == nil {
		t.Fatal("a job of an unknown type was accepted")
	}

	col := monitor.NewWSBridgeCollector("api", bridge.Stats)
	lint(t, col)
	st := bridge.Stats()
	if st.MessagesIn < 2 || st.MessagesOut < 3 {
		t.Errorf("messages in %d, out %d; want at least 2 and 3", st.MessagesIn, st.MessagesOut)
	}
	want := `
# HELP corework_wsbridge_connections WebSocket connections open now.
# TYPE corework_wsbridge_connections gauge
corework_wsbridge_connections{bridge="api"} 1
# HELP corework_wsbridge_connections_accepted_total WebSocket upgrades completed.
# TYPE corework_wsbridge_connections_accepted_total counter
corework_wsbridge_connections_accepted_total{bridge="api"} 1
# HELP corework_wsbridge_connections_rejected_total WebSocket upgrades refused: origin, authorization, bad handshake, shutdown.
# TYPE corework_wsbridge_connections_rejected_total counter
corework_wsbridge_connections_rejected_total{bridge="api"} 1
# HELP corework_wsbridge_errors_total Error messages sent to clients.
# TYPE corework_wsbridge_errors_total counter
corework_wsbridge_errors_total{bridge="api"} 1
# HELP corework_wsbridge_messages_in_total Data messages received from clients.
# TYPE corework_wsbridge_messages_in_total counter
corework_wsbridge_messages_in_total{bridge="api"} ` + strconv.FormatUint(st.MessagesIn, 10) + `
# HELP corework_wsbridge_messages_out_total Messages queued to clients.
# TYPE corework_wsbridge_messages_out_total counter
corework_wsbridge_messages_out_total{bridge="api"} ` + strconv.FormatUint(st.MessagesOut, 10) + `
# HELP corework_wsbridge_protocol_error_closes_total Connections closed for a protocol error, a binary or invalid UTF-8 message or an oversized one (1002, 1003, 1007, 1009).
# TYPE corework_wsbridge_protocol_error_closes_total counter
corework_wsbridge_protocol_error_closes_total{bridge="api"} 0
# HELP corework_wsbridge_slow_consumer_closes_total Connections closed because the client did not read fast enough (4008).
# TYPE corework_wsbridge_slow_consumer_closes_total counter
corework_wsbridge_slow_consumer_closes_total{bridge="api"} 0
# HELP corework_wsbridge_timeouts_total Connections dropped for a missing pong or a write timeout.
# TYPE corework_wsbridge_timeouts_total counter
corework_wsbridge_timeouts_total{bridge="api"} 0
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"corework_wsbridge_connections", "corework_wsbridge_connections_accepted_total",
		"corework_wsbridge_connections_rejected_total", "corework_wsbridge_errors_total",
		"corework_wsbridge_messages_in_total", "corework_wsbridge_messages_out_total",
		"corework_wsbridge_protocol_error_closes_total", "corework_wsbridge_slow_consumer_closes_total",
		"corework_wsbridge_timeouts_total"); err != nil {
		t.Error(err)
	}

	// The client leaves: the gauge goes back to zero.
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for bridge.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections %d after the client closed", bridge.Stats().Connections)
		}
		time.Sleep(10 * time.Millisecond)
	}
	const gone = `
# HELP corework_wsbridge_connections WebSocket connections open now.
# TYPE corework_wsbridge_connections gauge
corework_wsbridge_connections{bridge="api"} 0
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(gone), "corework_wsbridge_connections"); err != nil {
		t.Error(err)
	}
}

func TestNewWSBridgeCollectorNil(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "monitor: ") {
			t.Errorf("recovered %v, want a monitor: panic", r)
		}
	}()
	monitor.NewWSBridgeCollector("x", nil)
}

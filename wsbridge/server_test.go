package wsbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// answerPings reads frames for d, answering pings, and returns how many
// pings came. Frames are tiny, so a read deadline never splits one.
func (r *raw) answerPings(d time.Duration) int {
	r.t.Helper()
	pings := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		r.nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		h, err := ws.ReadHeader(r.br)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			r.t.Fatalf("read: %v", err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r.br, p); err != nil {
			r.t.Fatalf("read: %v", err)
		}
		switch h.OpCode {
		case ws.OpPing:
			pings++
			r.write(frameBytes(ws.OpPong, true, p, true))
		case ws.OpClose:
			r.t.Fatalf("closed: %v", p)
		}
	}
	return pings
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// waitFor polls cond every 5 ms for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSubmitResultAndEvents(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	r := dialRaw(t, e.url, nil)
	// The guide's command plus a request id and a priority.
	r.sendText(`{"command":"submit_job","task_type":"fibonacci","data":{"n":20},"id":"j1","priority":"high"}`)
	ack := r.until("ack")
	if ack["id"] != "j1" || ack["command"] != "submit_job" || ack["job_id"] == "" {
		t.Fatalf("ack = %v", ack)
	}
	res := r.until("succeeded")
	if res["job_id"] != ack["job_id"] || res["task_type"] != "fibonacci" || res["state"] != "succeeded" || res["priority"] != 6.0 {
		t.Fatalf("final event = %v", res)
	}
	if got := res["result"].(map[string]any)["result"]; got != 6765.0 {
		t.Fatalf("result = %v, want 6765", got)
	}
}

func TestRequestIDsAreEchoed(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	r := dialRaw(t, e.url, nil)
	r.sendText(`{"command":"ping","id":42}`)
	if m := r.until("pong"); m["id"] != 42.0 || m["time"] == nil {
		t.Fatalf("pong = %v", m)
	}
	r.sendText(`{"command":"nope","id":"x-1"}`)
	if m := r.until("error"); m["id"] != "x-1" || m["code"] != CodeUnknownCommand {
		t.Fatalf("error = %v", m)
	}
}

func TestBadCommandsKeepTheConnection(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	r := dialRaw(t, e.url, nil)
	cases := []struct{ in, code string }{
		{`{"command":`, CodeBadJSON},
		{`"submit_job"`, CodeBadJSON},
		{`{"command":"launch"}`, CodeUnknownCommand},
		{`{"command":"submit_job"}`, CodeBadRequest},
		{`{"command":"submit_job","task_type":"fibonacci","priority":12}`, CodeBadRequest},
		{`{"command":"submit_job","task_type":"nobody"}`, CodeNoHandler},
		{`{"command":"submit_job","task_type":"fibonacci","data":{"n":"x"},"max_attempts":1}`, ""}, // accepted; fails in the handler
		{`{"command":"job_status","job_id":"unknown"}`, CodeNotFound},
		{`{"command":"cancel_job","job_id":"unknown"}`, CodeNotFound},
		{`{"command":"subscribe","job_id":"unknown"}`, CodeNotFound},
	}
	for _, c := range cases {
		r.sendText(c.in)
		if c.code == "" {
			r.until("ack")
			r.until("failed")
			continue
		}
		m := r.until("error")
		if m["code"] != c.code || m["message"] == "" {
			t.Errorf("%s: got %v, want code %s", c.in, m, c.code)
		}
	}
	r.sendText(`{"command":"ping"}`)
	r.until("pong")
	if st := e.s.Stats(); st.Errors != uint64(len(cases)-1) || st.Connections != 1 {
		t.Errorf("stats after bad commands: %+v", st)
	}
}

func TestStatusCancelList(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{Workers: 1})
	r := dialRaw(t, e.url, nil)
	r.sendText(`{"command":"submit_job","task_type":"block"}`)
	id := r.until("ack")["job_id"].(string)
	if m := r.until("progress"); m["progress"] != 10.0 || m["message"] != "blocked" {
		t.Fatalf("progress = %v", m)
	}
	r.send(map[string]any{"command": "job_status", "job_id": id, "id": 1})
	if m := r.until("status"); m["id"] != 1.0 || m["job"].(map[string]any)["state"] != "running" {
		t.Fatalf("status = %v", m)
	}
	r.send(map[string]any{"command": "list_jobs", "state": "running"})
	if m := r.until("jobs"); len(m["jobs"].([]any)) != 1 {
		t.Fatalf("jobs = %v", m)
	}
	r.send(map[string]any{"command": "cancel_job", "job_id": id})
	// The canceled event may come before the ack or after it.
	got := r.untilAll("ack", "canceled")
	if m := got["ack"]; m["command"] != "cancel_job" || m["job_id"] != id {
		t.Fatalf("cancel ack = %v", m)
	}
	if m := got["canceled"]; m["job_id"] != id {
		t.Fatalf("canceled = %v", m)
	}
	r.send(map[string]any{"command": "cancel_job", "job_id": id})
	if m := r.until("error"); m["code"] != CodeFinished {
		t.Fatalf("second cancel = %v", m)
	}
	r.send(map[string]any{"command": "list_jobs", "state": "succeeded"})
	if m := r.until("jobs"); len(m["jobs"].([]any)) != 0 {
		t.Fatalf("no job succeeded, got %v", m)
	}
}

func TestSubscribeAllAndUnsubscribe(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	watcher := dialRaw(t, e.url, nil)
	watcher.sendText(`{"command":"subscribe","id":"all"}`)
	if m := watcher.until("ack"); m["id"] != "all" {
		t.Fatalf("ack = %v", m)
	}
	id, err := e.q.Submit(context.Background(), watcher.job("noop", ""))
	if err != nil {
		t.Fatal(err)
	}
	// Another principal's job is not shown.
	if _, err := e.q.Submit(context.Background(), jobqueue.JobRequest{Type: "noop", Owner: "someone-else"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for !seen["succeeded"] {
		m := watcher.msg()
		if m["job_id"] != id {
			t.Fatalf("event of another principal's job: %v", m)
		}
		seen[m["type"].(string)] = true
	}
	if !seen["queued"] || !seen["started"] {
		t.Errorf("a client watching every job saw %v", seen)
	}
	watcher.sendText(`{"command":"unsubscribe"}`)
	watcher.until("ack")
	if _, err := e.q.Submit(context.Background(), watcher.job("noop", "")); err != nil {
		t.Fatal(err)
	}
	watcher.sendText(`{"command":"ping"}`)
	for {
		m := watcher.msg()
		if m["type"] == "pong" {
			break
		}
		if m["job_id"] != id {
			t.Fatalf("event after unsubscribe: %v", m)
		}
	}
}

// TestSubscribeAfterTheEnd is the reconnection case: a job submitted on one
// connection ends while no one watches; a new connection that subscribes to
// it gets its state and its result.
func TestSubscribeAfterTheEnd(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	first := dialRaw(t, e.url, nil)
	first.sendText(`{"command":"submit_job","task_type":"fibonacci","data":{"n":15}}`)
	id := first.until("ack")["job_id"].(string)
	first.nc.Close()
	if _, err := e.q.Wait(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	// Another principal does not find it.
	other := dialRaw(t, e.url, nil)
	other.send(map[string]any{"command": "subscribe", "job_id": id, "id": "re"})
	if m := other.until("error"); m["code"] != CodeNotFound {
		t.Fatalf("another principal's subscribe = %v", m)
	}
	// The same principal, resumed with the credential of its welcome, does.
	second := dialRaw(t, e.url+"/?resume="+first.welcome["resume"].(string), nil)
	second.send(map[string]any{"command": "subscribe", "job_id": id, "id": "re"})
	if m := second.until("ack"); m["id"] != "re" || m["job_id"] != id {
		t.Fatalf("ack = %v", m)
	}
	if m := second.until("status"); m["job"].(map[string]any)["state"] != "succeeded" {
		t.Fatalf("status = %v", m)
	}
	m := second.until("succeeded")
	if m["result"].(map[string]any)["result"] != 610.0 {
		t.Fatalf("final = %v", m)
	}
	// Exactly one final event: the next message is the pong.
	second.sendText(`{"command":"ping"}`)
	if m := second.msg(); m["type"] != "pong" {
		t.Fatalf("after the final event: %v", m)
	}
}

func TestStatsMessages(t *testing.T) {
	var calls atomic.Int64
	cfg := Config{
		StatsInterval: 20 * time.Millisecond,
		SystemStats: func(ctx context.Context) (any, error) {
			calls.Add(1)
			return map[string]any{"cores": []float64{0.25, 0.75}}, nil
		},
	}
	e := newEnv(t, cfg, jobqueue.Config{Workers: 3})
	r := dialRaw(t, e.url, nil)
	r.sendText(`{"command":"stats","id":"s"}`)
	m := r.until("stats")
	if m["id"] != "s" || m["queue"].(map[string]any)["workers"] != 3.0 || m["bridge"].(map[string]any)["connections"] != 1.0 {
		t.Fatalf("stats = %v", m)
	}
	if calls.Load() != 0 {
		t.Fatal("SystemStats called while nobody watches")
	}
	r.sendText(`{"command":"stats","watch":true}`)
	r.until("stats")
	for {
		m = r.until("stats")
		if m["id"] == nil && m["system"] != nil {
			break
		}
	}
	if cores := m["system"].(map[string]any)["cores"].([]any); len(cores) != 2 || cores[1] != 0.75 {
		t.Fatalf("system = %v", m["system"])
	}
	r.sendText(`{"command":"stats","watch":false}`)
	r.until("stats")
	n := calls.Load()
	time.Sleep(100 * time.Millisecond)
	if got := calls.Load(); got > n+1 {
		t.Fatalf("SystemStats called %d more times after watch off", got-n)
	}
}

func TestMaxWatches(t *testing.T) {
	e := newEnv(t, Config{Quota: Quota{MaxWatches: 2}}, jobqueue.Config{Workers: 1})
	r := dialRaw(t, e.url, nil)
	for range 2 {
		r.sendText(`{"command":"submit_job","task_type":"block"}`)
		r.until("ack")
	}
	r.sendText(`{"command":"submit_job","task_type":"block","id":3}`)
	if m := r.until("error"); m["code"] != CodeQuota || m["id"] != 3.0 {
		t.Fatalf("third submit = %v", m)
	}
	if n := e.q.Stats().Submitted; n != 2 {
		t.Fatalf("%d jobs submitted, want 2", n)
	}
	// The watches are the principal's, across its connections.
	r2 := dialRaw(t, e.url, http.Header{resumeHeader: {r.welcome["resume"].(string)}})
	if r2.principal != r.principal {
		t.Fatalf("resumed as %q, want %q", r2.principal, r.principal)
	}
	r2.sendText(`{"command":"submit_job","task_type":"block","id":4}`)
	if m := r2.until("error"); m["code"] != CodeQuota || m["id"] != 4.0 {
		t.Fatalf("submit on a second connection = %v", m)
	}
	// Shutdown of the queue cancels the blocked jobs.
}

func TestCloseCodes(t *testing.T) {
	e := newEnv(t, Config{MaxMessageSize: 1024}, jobqueue.Config{})
	euro := "€"
	tests := []struct {
		name string
		send [][]byte
		want ws.StatusCode
	}{
		{"too big", [][]byte{frameBytes(ws.OpText, true, make([]byte, 1025), true)}, ws.StatusMessageTooBig},
		{"too big across fragments", [][]byte{
			frameBytes(ws.OpText, false, make([]byte, 600), true),
			frameBytes(ws.OpContinuation, true, make([]byte, 600), true),
		}, ws.StatusMessageTooBig},
		{"invalid UTF-8", [][]byte{frameBytes(ws.OpText, true, []byte("{\"command\":\"\xc3\x28\"}"), true)}, ws.StatusInvalidFramePayloadData},
		{"invalid UTF-8 across fragments", [][]byte{
			frameBytes(ws.OpText, false, []byte(euro[:2]), true),
			frameBytes(ws.OpContinuation, true, []byte("x"), true),
		}, ws.StatusInvalidFramePayloadData},
		{"binary", [][]byte{frameBytes(ws.OpBinary, true, []byte{1, 2}, true)}, ws.StatusUnsupportedData},
		{"unmasked", [][]byte{frameBytes(ws.OpText, true, []byte(`{}`), false)}, ws.StatusProtocolError},
		{"bad close code", [][]byte{frameBytes(ws.OpClose, true, []byte{0x03, 0xe4}, true)}, ws.StatusProtocolError}, // 996
		{"client close", [][]byte{frameBytes(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"), true)}, ws.StatusNormalClosure},
		{"client close 4000", [][]byte{frameBytes(ws.OpClose, true, ws.NewCloseFrameBody(4000, ""), true)}, 4000},
		{"empty close", [][]byte{frameBytes(ws.OpClose, true, nil, true)}, ws.StatusNormalClosure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := dialRaw(t, e.url, nil)
			for _, b := range tt.send {
				r.write(b)
			}
			if got := r.closeCode(); got != tt.want {
				t.Fatalf("close code %d, want %d", got, tt.want)
			}
			// The server then closes the TCP connection.
			// (A reset when the server left part of the client's data
			// unread, as after 1009.)
			r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := r.br.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("after the close frame: %v, want EOF", err)
			}
		})
	}
	waitFor(t, "connections to end", func() bool { return e.s.Stats().Connections == 0 })
	if st := e.s.Stats(); st.ProtocolErrors != 7 {
		t.Errorf("ProtocolErrors = %d, want 7", st.ProtocolErrors)
	}
}

func TestControlFramesBetweenFragments(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	r := dialRaw(t, e.url, nil)
	msg := []byte(`{"command":"ping","id":"frag"}`)
	r.write(frameBytes(ws.OpText, false, msg[:5], true))
	r.write(frameBytes(ws.OpPing, true, []byte("p1"), true))
	r.write(frameBytes(ws.OpContinuation, false, msg[5:12], true))
	r.write(frameBytes(ws.OpPong, true, nil, true))
	r.write(frameBytes(ws.OpPing, true, []byte("p2"), true))
	r.write(frameBytes(ws.OpContinuation, true, msg[12:], true))
	var pongs []string
	for {
		f := r.frame()
		if f.Header.OpCode == ws.OpPong {
			pongs = append(pongs, string(f.Payload))
			continue
		}
		if f.Header.OpCode != ws.OpText {
			t.Fatalf("unexpected frame %v", f.Header)
		}
		var m map[string]any
		if err := json.Unmarshal(f.Payload, &m); err != nil || m["type"] != "pong" || m["id"] != "frag" {
			t.Fatalf("reply %s (%v)", f.Payload, err)
		}
		break
	}
	if strings.Join(pongs, ",") != "p1,p2" {
		t.Fatalf("pongs %q, want both pings answered in order before the reply", pongs)
	}
}

func TestOriginAndAuth(t *testing.T) {
	e := newEnv(t, Config{
		AllowedOrigins: []string{"https://app.example", "*.corework.test"},
		Authenticate:   TokenAuth(map[string]Principal{"s3cret": {Name: "alice"}}),
	}, jobqueue.Config{})
	dial := func(h http.Header, query string) (int, error) {
		d := ws.Dialer{Timeout: 5 * time.Second, Header: ws.HandshakeHeaderHTTP(h)}
		var status int
		d.OnStatusError = func(code int, _ []byte, _ io.Reader) { status = code }
		nc, _, _, err := d.Dial(context.Background(), e.url+query)
		if err == nil {
			nc.Close()
			return 101, nil
		}
		return status, err
	}
	bearer := http.Header{"Authorization": {"Bearer s3cret"}}
	withOrigin := func(h http.Header, o string) http.Header {
		h = h.Clone()
		h.Set("Origin", o)
		return h
	}
	tests := []struct {
		name  string
		h     http.Header
		query string
		want  int
	}{
		{"token in header, no origin", bearer, "", 101},
		{"token in query", http.Header{}, "/?token=s3cret", 101},
		{"no token", http.Header{}, "", 401},
		{"wrong token", http.Header{"Authorization": {"Bearer nope"}}, "", 401},
		{"allowed full origin", withOrigin(bearer, "https://app.example"), "", 101},
		{"allowed pattern", withOrigin(bearer, "http://eu.corework.test"), "", 101},
		{"scheme matters for full origins", withOrigin(bearer, "http://app.example"), "", 403},
		{"other origin", withOrigin(bearer, "https://evil.example"), "", 403},
		{"malformed origin", withOrigin(bearer, "::"), "", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dial(tt.h, tt.query)
			if got != tt.want {
				t.Fatalf("status %d (%v), want %d", got, err, tt.want)
			}
		})
	}
	if st := e.s.Stats(); st.Rejected != 5 {
		t.Errorf("Rejected = %d, want 5", st.Rejected)
	}
}

func TestSameHostOriginByDefault(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	host := strings.TrimPrefix(e.hs.URL, "http://")
	for origin, ok := range map[string]bool{"http://" + host: true, "http://other.example": false} {
		d := ws.Dialer{Timeout: 5 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {origin}})}
		nc, _, _, err := d.Dial(context.Background(), e.url)
		if (err == nil) != ok {
			t.Errorf("origin %s: err %v, want allowed %v", origin, err, ok)
		}
		if nc != nil {
			nc.Close()
		}
	}
}

func TestPlainHTTP(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	resp, err := http.Get(e.hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("plain GET: %s %v", resp.Status, resp.Header)
	}

	e2 := newEnv(t, Config{Fallback: Dashboard()}, jobqueue.Config{})
	resp, err = http.Get(e2.hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "<title>corework jobs</title>") {
		t.Fatalf("dashboard: %s %.80s", resp.Status, body)
	}
}

func TestPingTimeout(t *testing.T) {
	var errs sync.Map
	e := newEnv(t, Config{
		// A pong timeout far above the client's answer time, even on a
		// loaded machine whose goroutines wait tens of milliseconds for a
		// CPU (30 ms dropped the answering client there).
		PingInterval: 40 * time.Millisecond,
		PongTimeout:  400 * time.Millisecond,
		OnError:      func(err error) { errs.Store(err.Error(), true) },
	}, jobqueue.Config{})

	// A client that never reads never answers.
	dialRaw(t, e.url, nil)
	// A client that answers pings stays connected, past the silent one's
	// end at 440 ms.
	alive := dialRaw(t, e.url, nil)
	if pings := alive.answerPings(700 * time.Millisecond); pings < 5 {
		t.Fatalf("%d pings in 700 ms at a 40 ms interval", pings)
	}
	waitFor(t, "the silent client to be dropped", func() bool { return e.s.Stats().Timeouts == 1 })
	if n := e.s.Stats().Connections; n != 1 {
		t.Fatalf("%d connections, want the answering one only", n)
	}
	alive.sendText(`{"command":"ping"}`)
	alive.until("pong")
	found := false
	errs.Range(func(k, _ any) bool {
		found = found || strings.Contains(k.(string), "silent")
		return true
	})
	if !found {
		t.Error("OnError was not told about the silent client")
	}
}

// TestSlowConsumer proves the send-queue rule: a client that stops reading
// while a flood of events is sent to it is closed with 4008, and a client
// that reads keeps its round trips fast meanwhile.
func TestSlowConsumer(t *testing.T) {
	var slowErr atomic.Value
	e := newEnv(t, Config{
		SendQueueBytes: 64 << 10,
		WriteTimeout:   5 * time.Second,
		OnError: func(err error) {
			if errors.Is(err, ErrSlowConsumer) {
				slowErr.Store(err)
			}
		},
	}, jobqueue.Config{Capacity: 256})
	slow := dialRaw(t, e.url, nil)
	slow.sendText(`{"command":"subscribe"}`)
	slow.until("ack")
	good := dialRaw(t, e.url, nil)

	// Flood: big results for every job, fanned out to the slow watcher.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := e.q.Submit(ctx, slow.job("big", `{"Size":32768}`)); err != nil {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// The reading client's round trips through the bridge stay fast. (Its
	// jobs would wait behind the flood in the queue, which is not the
	// bridge's doing, so it pings.)
	var worst time.Duration
	for e.s.Stats().SlowConsumers == 0 {
		start := time.Now()
		good.sendText(`{"command":"ping"}`)
		good.until("pong")
		worst = max(worst, time.Since(start))
		if worst > 3*time.Second {
			t.Fatalf("a reading client waited %v while another did not read", worst)
		}
	}
	cancel()
	wg.Wait()
	// The flood may have left the queue at its capacity (256 active jobs):
	// a submit then gets queue_full. Nothing submits any more, so once a
	// place frees it stays free.
	waitFor(t, "room in the queue", func() bool { st := e.q.Stats(); return st.Pending+st.Running < 256 })
	good.sendText(`{"command":"submit_job","task_type":"noop","priority":"critical"}`)
	good.until("succeeded")
	if slowErr.Load() == nil {
		t.Error("OnError was not told about the slow consumer")
	}
	t.Logf("slowest ping of the reading client during the flood: %v", worst)

	// The slow client now reads: after what was in flight it finds the
	// close frame.
	if code := slow.closeCode(); code != CloseSlowConsumer {
		t.Fatalf("slow client closed with %d, want %d", code, CloseSlowConsumer)
	}
	waitFor(t, "the slow connection to end", func() bool { return e.s.Stats().Connections == 1 })
	good.sendText(`{"command":"ping"}`)
	good.until("pong")
}

// TestSlowConsumerNeverReads: a client that never reads again is
// disconnected: its close frame cannot be written, and the write times out.
func TestSlowConsumerNeverReads(t *testing.T) {
	e := newEnv(t, Config{SendQueueBytes: 16 << 10, WriteTimeout: 200 * time.Millisecond}, jobqueue.Config{Capacity: 256})
	slow := dialRaw(t, e.url, nil)
	slow.sendText(`{"command":"subscribe"}`)
	slow.until("ack")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := e.q.Submit(ctx, slow.job("big", `{"Size":32768}`)); err != nil {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	waitFor(t, "the slow consumer rule", func() bool { return e.s.Stats().SlowConsumers == 1 })
	cancel()
	wg.Wait()
	waitFor(t, "the connection to be dropped", func() bool { return e.s.Stats().Connections == 0 })
}

func TestShutdown(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	s := New(q, Config{})
	e := &env{q: q, s: s}
	hs := newHTTPTest(t, s)
	e.url = hs
	clients := make([]*raw, 3)
	for i := range clients {
		clients[i] = dialRaw(t, e.url, nil)
	}
	waitFor(t, "connections", func() bool { return s.Stats().Connections == 3 })
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := c.frame()
			code, _ := ws.ParseCloseFrameData(f.Payload)
			if f.Header.OpCode != ws.OpClose || code != ws.StatusGoingAway {
				t.Errorf("got %v code %d, want close 1001", f.Header.OpCode, code)
			}
			_ = wsutil.WriteClientMessage(c.nc, ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, ""))
		}()
	}
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	// After Shutdown, upgrades are refused with 503.
	d := ws.Dialer{Timeout: 5 * time.Second}
	var status int
	d.OnStatusError = func(code int, _ []byte, _ io.Reader) { status = code }
	if _, _, _, err := d.Dial(context.Background(), e.url); err == nil || status != http.StatusServiceUnavailable {
		t.Fatalf("dial after Shutdown: %v, status %d", err, status)
	}
}

func TestShutdownDeadline(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	s := New(q, Config{CloseTimeout: time.Minute})
	url := newHTTPTest(t, s)
	dialRaw(t, url, nil) // never answers the close frame
	waitFor(t, "the connection", func() bool { return s.Stats().Connections == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %v after its deadline", d)
	}
	if n := s.Stats().Connections; n != 0 {
		t.Fatalf("%d connections left", n)
	}
	// Concurrent and repeated calls return once everything has stopped.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(context.Background()); err != nil {
				t.Errorf("repeated Shutdown: %v", err)
			}
		}()
	}
	wg.Wait()
}

// newHTTPTest serves h on a loopback httptest server closed by cleanup and
// returns its ws:// URL.
func newHTTPTest(t testing.TB, h http.Handler) string {
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http")
}

func TestNewPanicsOnNilQueue(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "wsbridge: ") {
			t.Fatalf("recover() = %v", r)
		}
	}()
	New(nil, Config{})
}

// TestPingFloodWithoutReading: pongs count against the send queue, so a
// client that pings without reading is closed like any slow consumer.
func TestPingFloodWithoutReading(t *testing.T) {
	e := newEnv(t, Config{SendQueueBytes: 8 * (125 + frameOverhead), WriteTimeout: 200 * time.Millisecond}, jobqueue.Config{})
	r := dialRaw(t, e.url, nil)
	ping := frameBytes(ws.OpPing, true, make([]byte, 125), true)
	for end := time.Now().Add(10 * time.Second); e.s.Stats().SlowConsumers == 0; {
		if time.Now().After(end) {
			t.Fatal("10 s of pings without reading did not close the connection")
		}
		r.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := r.nc.Write(ping); err != nil {
			break // the server has closed the connection
		}
	}
	waitFor(t, "the pinging client to be dropped", func() bool { return e.s.Stats().Connections == 0 })
	if e.s.Stats().SlowConsumers != 1 {
		t.Fatalf("stats %+v", e.s.Stats())
	}
}

// TestWriteTimeout: with a queue too large to overflow, a client that stops
// reading is dropped when a write to it times out.
func TestWriteTimeout(t *testing.T) {
	e := newEnv(t, Config{SendQueueBytes: 1 << 30, Quota: Quota{MaxQueuedBytes: -1}, WriteTimeout: 100 * time.Millisecond},
		jobqueue.Config{Capacity: 256})
	r := dialRaw(t, e.url, nil)
	if err := r.nc.(interface{ SetReadBuffer(int) error }).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	r.sendText(`{"command":"subscribe"}`)
	r.until("ack")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := e.q.Submit(ctx, r.job("big", `{"Size":32768}`)); err != nil {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	waitFor(t, "the write to time out", func() bool { return e.s.Stats().Timeouts == 1 })
	cancel()
	wg.Wait()
	waitFor(t, "the connection to be dropped", func() bool { return e.s.Stats().Connections == 0 })
	if n := e.s.Stats().SlowConsumers; n != 0 {
		t.Fatalf("%d slow consumers: the queue was not meant to overflow", n)
	}
}

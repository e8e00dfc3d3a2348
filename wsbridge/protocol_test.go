package wsbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

func TestDecodeCommand(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want command
		code string // expected error code; empty for success
	}{
		{
			name: "guide snippet",
			in:   `{"command":"submit_job","task_type":"calcular_fibonacci","data":{"n":35}}`,
			want: command{name: cmdSubmit, job: jobqueue.JobRequest{Type: "calcular_fibonacci", Payload: json.RawMessage(`{"n":35}`)}},
		},
		{
			name: "every submit field",
			in:   `{"command":"submit_job","id":"r1","task_type":"t","data":[1],"priority":"HIGH","timeout":1.5,"max_attempts":2,"unique_key":"k","metadata":{"a":"b"},"run_at":"2030-01-02T03:04:05Z"}`,
			want: command{name: cmdSubmit, id: json.RawMessage(`"r1"`), job: jobqueue.JobRequest{
				Type: "t", Payload: json.RawMessage(`[1]`), Priority: jobqueue.High, Timeout: 1500 * time.Millisecond,
				MaxAttempts: 2, UniqueKey: "k", Metadata: map[string]string{"a": "b"},
				RunAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
			}},
		},
		{
			name: "numeric id, priority and duration string",
			in:   `{"id":7,"command":"submit_job","task_type":"t","priority":4,"timeout":"2m"}`,
			want: command{name: cmdSubmit, id: json.RawMessage(`7`), job: jobqueue.JobRequest{Type: "t", Priority: 4, Timeout: 2 * time.Minute}},
		},
		{
			name: "null data is no payload",
			in:   `{"command":"submit_job","task_type":"t","data":null}`,
			want: command{name: cmdSubmit, job: jobqueue.JobRequest{Type: "t"}},
		},
		{name: "status", in: `{"command":"job_status","job_id":"x"}`, want: command{name: cmdStatus, jobID: "x"}},
		{name: "cancel", in: `{"command":"cancel_job","job_id":"x"}`, want: command{name: cmdCancel, jobID: "x"}},
		{name: "subscribe all", in: `{"command":"subscribe"}`, want: command{name: cmdSubscribe}},
		{name: "subscribe one", in: `{"command":"subscribe","job_id":"x"}`, want: command{name: cmdSubscribe, jobID: "x"}},
		{name: "unsubscribe", in: `{"command":"unsubscribe","job_id":"x"}`, want: command{name: cmdUnsubscribe, jobID: "x"}},
		{
			name: "list",
			in:   `{"command":"list_jobs","state":"running","task_type":"t","limit":5}`,
			want: command{name: cmdList, list: jobqueue.ListFilter{Type: "t", State: jobqueue.StateRunning, Limit: 5}},
		},
		{
			name: "list page",
			in:   `{"command":"list_jobs","cursor":"0abc","owner":"bob"}`,
			want: command{name: cmdList, list: jobqueue.ListFilter{Cursor: "0abc", Owner: "bob"}},
		},
		{
			name: "submit with a job id",
			in:   `{"command":"submit_job","task_type":"t","job_id":"mine-1"}`,
			want: command{name: cmdSubmit, job: jobqueue.JobRequest{ID: "mine-1", Type: "t"}},
		},
		{name: "stats", in: `{"command":"stats","watch":true}`, want: command{name: cmdStats, watch: ptr(true)}},
		{name: "ping", in: ` {"command":"ping","id":"p"}`, want: command{name: cmdPing, id: json.RawMessage(`"p"`)}},
		{name: "not JSON", in: `{"command":`, code: CodeBadJSON},
		{name: "not an object", in: `["submit_job"]`, code: CodeBadJSON},
		{name: "empty", in: ``, code: CodeBadJSON},
		{name: "unknown command", in: `{"command":"rm -rf"}`, code: CodeUnknownCommand},
		{name: "no command", in: `{"id":1}`, code: CodeUnknownCommand},
		{name: "command not a string", in: `{"command":5}`, code: CodeBadRequest},
		{name: "no task type", in: `{"command":"submit_job","data":{}}`, code: CodeBadRequest},
		{name: "priority too high", in: `{"command":"submit_job","task_type":"t","priority":10}`, code: CodeBadRequest},
		{name: "priority fraction", in: `{"command":"submit_job","task_type":"t","priority":1.5}`, code: CodeBadRequest},
		{name: "priority name", in: `{"command":"submit_job","task_type":"t","priority":"urgent"}`, code: CodeBadRequest},
		{name: "negative timeout", in: `{"command":"submit_job","task_type":"t","timeout":-1}`, code: CodeBadRequest},
		{name: "huge timeout", in: `{"command":"submit_job","task_type":"t","timeout":1e300}`, code: CodeBadRequest},
		{name: "bad duration", in: `{"command":"submit_job","task_type":"t","timeout":"soon"}`, code: CodeBadRequest},
		{name: "negative attempts", in: `{"command":"submit_job","task_type":"t","max_attempts":-1}`, code: CodeBadRequest},
		{name: "status without job", in: `{"command":"job_status"}`, code: CodeBadRequest},
		{name: "bad state", in: `{"command":"list_jobs","state":"sleeping"}`, code: CodeBadRequest},
		{name: "bad limit", in: `{"command":"list_jobs","limit":100000}`, code: CodeBadRequest},
		{name: "object id", in: `{"command":"ping","id":{"a":1}}`, code: CodeBadRequest},
		{name: "long id", in: `{"command":"ping","id":"` + strings.Repeat("x", 200) + `"}`, code: CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeCommand([]byte(tt.in))
			if tt.code != "" {
				var ce *cmdError
				if !errors.As(err, &ce) || ce.code != tt.code {
					t.Fatalf("decodeCommand(%s) = %+v, %v; want error code %s", tt.in, got, err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeCommand(%s): %v", tt.in, err)
			}
			if got.spec != commands[tt.want.name] {
				t.Fatalf("decodeCommand(%s): spec of %q, want %q's", tt.in, got.name, tt.want.name)
			}
			got.spec = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("decodeCommand(%s)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestDecodeCommandErrorKeepsID(t *testing.T) {
	for _, in := range []string{
		`{"id":"abc","command":"nope"}`,
		`{"id":"abc","command":"submit_job","priority":true,"task_type":"t"}`,
		`{"id":"abc","command":"submit_job"}`,
	} {
		_, err := decodeCommand([]byte(in))
		var ce *cmdError
		if !errors.As(err, &ce) || string(ce.id) != `"abc"` {
			t.Errorf("decodeCommand(%s): error %v does not carry the id", in, err)
		}
	}
}

// FuzzDecodeCommand checks that no client message makes the decoder panic,
// that every refusal is a *cmdError with a known code, and that accepted
// submits carry valid values.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"command":"submit_job","task_type":"calcular_fibonacci","data":{"n":35}}`,
		`{"command":"submit_job","id":1,"task_type":"t","priority":"high","timeout":"1s","data":[1,2]}`,
		`{"command":"list_jobs","state":"failed","limit":3}`,
		`{"command":"stats","watch":false}`,
		`{"command":"subscribe","job_id":"0anc"}`,
		`{"command":"ping","id":"\u00e9"}`,
		`{"command":"submit_job","task_type":"t","run_at":"2030-01-01T00:00:00Z","metadata":{"k":"v"}}`,
		`{"command":"submit_job","task_type":"t","job_id":"mine-1","unique_key":"u"}`,
		`{"command":"list_jobs","cursor":"0abc","owner":"bob","limit":1000}`,
		`{"command":"cancel_job","job_id":"0abc","id":"c"}`,
		`[]`, `{`, `null`, `{"command":null}`,
	} {
		f.Add([]byte(s))
	}
	codes := map[string]bool{CodeBadJSON: true, CodeUnknownCommand: true, CodeBadRequest: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := decodeCommand(data)
		if err != nil {
			var ce *cmdError
			if !errors.As(err, &ce) || !codes[ce.code] {
				t.Fatalf("error %v is not a cmdError with a protocol code", err)
			}
			if ce.id != nil && !validID(ce.id) {
				t.Fatalf("error carries an invalid id %q", ce.id)
			}
			return
		}
		if cmd.id != nil && !validID(cmd.id) {
			t.Fatalf("accepted an invalid id %q", cmd.id)
		}
		if cmd.name == cmdSubmit {
			j := cmd.job
			if j.Type == "" || !j.Priority.Valid() || j.Timeout < 0 || j.Timeout > maxTimeout || j.MaxAttempts < 0 {
				t.Fatalf("accepted an invalid job request %+v", j)
			}
			if len(j.Payload) > 0 && !json.Valid(j.Payload) {
				t.Fatalf("accepted a payload that is not JSON: %q", j.Payload)
			}
		}
	})
}

// TestEncodeEventIsJobqueues: the bridge sends events in jobqueue's one
// JSON encoding of Event, with "type" first (the client reads it without
// decoding), and an event that does not encode becomes an error message.
func TestEncodeEventIsJobqueues(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC)
	events := []jobqueue.Event{
		{Kind: jobqueue.EventQueued, JobID: "0anc1", Type: "fibonacci", Owner: "alice", Priority: 3, State: jobqueue.StatePending, Time: now},
		{Kind: jobqueue.EventProgress, JobID: "0anc1", Type: "fibonacci", State: jobqueue.StateRunning, Attempt: 1, Progress: 33.333, Message: "a third", Time: now},
		{Kind: jobqueue.EventFailed, JobID: "0anc1", Type: "ünï \"quoted\" <tag>", State: jobqueue.StateFailed, Error: "line\nbreak", Time: now},
	}
	for _, ev := range events {
		got := encodeEvent(&ev)
		want, err := json.Marshal(ev)
		if err != nil || string(got) != string(want) {
			t.Errorf("encodeEvent = %s, json.Marshal = %s (%v)", got, want, err)
		}
		if msgType(got) != ev.Kind.String() {
			t.Errorf("encodeEvent(%+v) = %s: type is not first", ev, got)
		}
	}
	bad := jobqueue.Event{Kind: jobqueue.EventSucceeded, JobID: "x", Result: json.RawMessage(`{bad`), Time: now}
	if got := encodeEvent(&bad); msgType(got) != msgError || !strings.Contains(string(got), CodeInternal) {
		t.Errorf("encodeEvent of a bad result = %s", got)
	}
}

// frameBytes encodes one frame, masked as a client sends it.
func frameBytes(op ws.OpCode, fin bool, p []byte, mask bool) []byte {
	var buf bytes.Buffer
	f := ws.NewFrame(op, fin, append([]byte(nil), p...))
	if mask {
		f = ws.MaskFrameInPlace(f)
	}
	_ = ws.WriteFrame(&buf, f)
	return buf.Bytes()
}

// recordingOwner collects the control frames a msgReader hands over.
type recordingOwner struct{ controls []ws.OpCode }

func (o *recordingOwner) frameRead() {}
func (o *recordingOwner) control(h ws.Header, p []byte) error {
	o.controls = append(o.controls, h.OpCode)
	return nil
}

func TestMsgReader(t *testing.T) {
	text := func(s string, fin bool) []byte { return frameBytes(ws.OpText, fin, []byte(s), true) }
	cont := func(s string, fin bool) []byte { return frameBytes(ws.OpContinuation, fin, []byte(s), true) }
	ping := frameBytes(ws.OpPing, true, []byte("hi"), true)
	euro := "€" // three bytes, split across fragments below
	tests := []struct {
		name     string
		stream   [][]byte
		want     string
		controls int
		code     ws.StatusCode // expected close code; 0 for success
	}{
		{name: "one frame", stream: [][]byte{text("hello", true)}, want: "hello"},
		{name: "fragments", stream: [][]byte{text("hel", false), cont("lo", true)}, want: "hello"},
		{name: "ping between fragments", stream: [][]byte{text("a", false), ping, cont("b", false), ping, cont("c", true)}, want: "abc", controls: 2},
		{name: "UTF-8 split across fragments", stream: [][]byte{text(euro[:1], false), cont(euro[1:], true)}, want: euro},
		{name: "exactly the limit", stream: [][]byte{text(strings.Repeat("x", 16), true)}, want: strings.Repeat("x", 16)},
		{name: "too big", stream: [][]byte{text(strings.Repeat("x", 17), true)}, code: ws.StatusMessageTooBig},
		{name: "too big across fragments", stream: [][]byte{text(strings.Repeat("x", 10), false), cont(strings.Repeat("x", 7), true)}, code: ws.StatusMessageTooBig},
		{name: "invalid UTF-8", stream: [][]byte{text("\xff\xfe", true)}, code: ws.StatusInvalidFramePayloadData},
		{name: "truncated UTF-8", stream: [][]byte{text(euro[:2], true)}, code: ws.StatusInvalidFramePayloadData},
		{name: "binary", stream: [][]byte{frameBytes(ws.OpBinary, true, []byte{1}, true)}, code: ws.StatusUnsupportedData},
		{name: "unmasked", stream: [][]byte{frameBytes(ws.OpText, true, []byte("x"), false)}, code: ws.StatusProtocolError},
		{name: "continuation first", stream: [][]byte{cont("x", true)}, code: ws.StatusProtocolError},
		{name: "text inside fragments", stream: [][]byte{text("a", false), text("b", true)}, code: ws.StatusProtocolError},
		{name: "fragmented ping", stream: [][]byte{frameBytes(ws.OpPing, false, nil, true)}, code: ws.StatusProtocolError},
		{name: "reserved opcode", stream: [][]byte{frameBytes(ws.OpCode(3), true, nil, true)}, code: ws.StatusProtocolError},
		{name: "rsv bits", stream: [][]byte{func() []byte { b := text("x", true); b[0] |= 0x40; return b }()}, code: ws.StatusProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &recordingOwner{}
			r := msgReader{r: bytes.NewReader(bytes.Join(tt.stream, nil)), state: ws.StateServerSide, max: 16, owner: o}
			op, bp, err := r.next()
			if tt.code != 0 {
				var ce *closeErr
				if !errors.As(err, &ce) || ce.code != tt.code {
					t.Fatalf("next() = %v, %v; want close %d", op, err, tt.code)
				}
				if bp != nil {
					t.Fatal("buffer returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("next(): %v", err)
			}
			if string(*bp) != tt.want || op != ws.OpText || len(o.controls) != tt.controls {
				t.Fatalf("next() = %v %q with %d control frames; want %q with %d", op, *bp, len(o.controls), tt.want, tt.controls)
			}
			putBuf(bp)
		})
	}
}

// FuzzReadMessage feeds arbitrary bytes to the server's frame reader: it
// must not panic, must respect the message size limit, and must only return
// valid UTF-8 text.
func FuzzReadMessage(f *testing.F) {
	f.Add(frameBytes(ws.OpText, true, []byte(`{"command":"ping"}`), true))
	f.Add(append(frameBytes(ws.OpText, false, []byte("ab"), true), frameBytes(ws.OpContinuation, true, []byte("c"), true)...))
	f.Add(append(frameBytes(ws.OpText, false, []byte("ab"), true), frameBytes(ws.OpPing, true, []byte("p"), true)...))
	f.Add(frameBytes(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""), true))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	const limit = 64
	f.Fuzz(func(t *testing.T, data []byte) {
		r := msgReader{r: bytes.NewReader(data), state: ws.StateServerSide, max: limit, owner: &recordingOwner{}}
		for {
			op, bp, err := r.next()
			if err != nil {
				var ce *closeErr
				if !errors.As(err, &ce) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(*bp) > limit {
				t.Fatalf("message of %d bytes above the %d limit", len(*bp), limit)
			}
			if op != ws.OpText || !utf8.Valid(*bp) {
				t.Fatalf("returned opcode %v with valid UTF-8 %v", op, utf8.Valid(*bp))
			}
			putBuf(bp)
		}
	})
}

// FuzzClientMessage feeds arbitrary server messages to a Client's decoder:
// it must not panic.
func FuzzClientMessage(f *testing.F) {
	f.Add([]byte(`{"type":"succeeded","job_id":"x","task_type":"t","priority":0,"state":"succeeded","result":{"n":1},"time":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"type":"ack","id":"c1","command":"submit_job","job_id":"x"}`))
	f.Add([]byte(`{"type":"error","job_id":"x","code":"not_found","message":"gone"}`))
	f.Add([]byte(`{"type":"error","code":"events_lost","message":"resync"}`))
	f.Add([]byte(`{"type":"jobs","id":"c2","jobs":[{"id":"x","type":"t","state":"running"}]}`))
	f.Add([]byte(`{"type":"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &Client{
			pending: map[string]*call{`"c1"`: {ch: make(chan inMsg, 1), submit: true}, `"c2"`: {ch: make(chan inMsg, 1), jobID: "x"}},
			watched: map[string]struct{}{"x": {}},
			finals:  map[string]jobqueue.Event{},
			waiters: map[string][]chan waitResult{"x": {make(chan waitResult, 1)}},
			events:  make(chan jobqueue.Event, 4),
		}
		c.handleRaw(data)
	})
}

func TestDecodeEvent(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC)
	for _, ev := range []jobqueue.Event{
		{Kind: jobqueue.EventQueued, JobID: "0anc1", Type: "fibonacci", Owner: "anon-X", Priority: 3, State: jobqueue.StatePending, Time: now},
		{Kind: jobqueue.EventProgress, JobID: "0anc1", Type: "t", State: jobqueue.StateRunning, Attempt: 1, Progress: 33.25, Message: "a third", Time: now},
		{Kind: jobqueue.EventSucceeded, JobID: "0anc1", Type: "t", Priority: 9, State: jobqueue.StateSucceeded, Attempt: 2, Result: json.RawMessage(`{"n":[1,"}",{"a":null}]}`), Time: now},
		{Kind: jobqueue.EventRetrying, JobID: "0anc1", Type: "t", State: jobqueue.StateRetrying, Error: "boom", NextRunAt: now.Add(time.Second), Time: now},
		{Kind: jobqueue.EventFailed, JobID: "0anc1", Type: "ünï \"q\"", State: jobqueue.StateFailed, Error: "line\nbreak", Time: now}, // fallback path
	} {
		var got jobqueue.Event
		if err := decodeEvent(encodeEvent(&ev), &got); err != nil {
			t.Fatalf("decodeEvent(encodeEvent(%+v)): %v", ev, err)
		}
		if !got.Time.Equal(ev.Time) || !got.NextRunAt.Equal(ev.NextRunAt) {
			t.Fatalf("times: got %v %v, want %v %v", got.Time, got.NextRunAt, ev.Time, ev.NextRunAt)
		}
		got.Time, got.NextRunAt, ev.Time, ev.NextRunAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, ev) {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, ev)
		}
	}
}

func TestAckRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id           json.RawMessage
		command, job string
	}{
		{json.RawMessage(`"c1"`), cmdSubmit, "0anc"},
		{json.RawMessage(`12`), cmdSubscribe, ""},
		{nil, cmdCancel, "x"},
		{json.RawMessage(`"\u00e9t\u00e9"`), cmdPing, ""},
		{nil, cmdSubmit, "ünï"}, // the encoding/json path
	} {
		b := encodeAck(tc.id, tc.command, tc.job)
		var want ackMsg
		if err := json.Unmarshal(b, &want); err != nil || want.Type != msgAck || want.Command != tc.command || want.JobID != tc.job {
			t.Fatalf("encodeAck = %s (%v)", b, err)
		}
		c := &Client{pending: map[string]*call{}, watched: map[string]struct{}{}, finals: map[string]jobqueue.Event{}, waiters: map[string][]chan waitResult{}}
		ch := make(chan inMsg, 1)
		if len(tc.id) > 0 {
			c.pending[string(tc.id)] = &call{ch: ch}
		}
		c.handleRaw(b)
		if len(tc.id) > 0 {
			m := <-ch
			if m.Type != msgAck || m.Command != tc.command || m.JobID != tc.job || string(m.ID) != string(tc.id) {
				t.Fatalf("decoded %+v from %s", m, b)
			}
		}
	}
}

// FuzzDecodeAck checks the ack fast path against encoding/json.
func FuzzDecodeAck(f *testing.F) {
	f.Add([]byte(`{"type":"ack","id":"c1","command":"submit_job","job_id":"x"}`))
	f.Add([]byte(`{"type":"ack","id":7,"command":"subscribe"}`))
	f.Add([]byte(`{"type":"ack","id":"c1" ,"command":"submit_job" }`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast inMsg
		if !fastAck(data, &fast) {
			return
		}
		var m inMsg
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", data, err)
		}
		if fast.Type != m.Type || fast.Command != m.Command || fast.JobID != m.JobID || string(fast.ID) != string(m.ID) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", data, fast, m)
		}
	})
}

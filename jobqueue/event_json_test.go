package jobqueue

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)

// jsonEvents are events that the fast encoder handles.
var jsonEvents = []Event{
	{},
	{Kind: EventQueued, JobID: "0abc", Type: "resize", Priority: Normal, State: StatePending, Time: t0},
	{Kind: EventQueued, JobID: "0abc", Type: "resize", Owner: "alice", Priority: Normal, State: StateScheduled,
		NextRunAt: t0.Add(time.Hour), Time: t0},
	{Kind: EventProgress, JobID: "j", Type: "t", Priority: 9, State: StateRunning, Attempt: 2, Progress: 33.25,
		Message: "a third", Time: t0.In(time.FixedZone("", -7*3600))},
	{Kind: EventRetrying, JobID: "j", Type: "t", State: StateRetrying, Attempt: 1, Error: "boom",
		NextRunAt: t0, Time: t0},
	{Kind: EventSucceeded, JobID: "j", Type: "t", State: StateSucceeded, Attempt: 1,
		Result: json.RawMessage(`{"n":[1,2,{"s":"x y"}],"f":1.5e300}`), Time: t0},
	{Kind: EventProgress, State: StateRunning, Progress: 1e-7, Time: t0},
	{Kind: EventProgress, State: StateRunning, Progress: 1e21, Time: t0},
	{Kind: EventProgress, State: StateRunning, Progress: -0.5, Priority: -3, Attempt: -1, Time: t0},
}

// TestEventJSONFastMatchesSlow: the hand-written encoder writes exactly
// what encoding/json writes for the same fields.
func TestEventJSONFastMatchesSlow(t *testing.T) {
	for _, ev := range jsonEvents {
		slow, err := json.Marshal((*eventJSON)(&ev))
		if err != nil {
			t.Fatal(err)
		}
		fast, ok := ev.appendFast([]byte("prefix"))
		if !ok || string(fast) != "prefix"+string(slow) {
			t.Errorf("appendFast = %s, %v\n  encoding/json: %s", fast, ok, slow)
		}
		m, err := json.Marshal(ev)
		if err != nil || !bytes.Equal(m, slow) {
			t.Errorf("json.Marshal(Event) = %s, %v; want %s", m, err, slow)
		}
		var back Event
		if err := json.Unmarshal(m, &back); err != nil || !sameEvent(ev, back) {
			t.Errorf("round trip of %s = %+v, %v; want %+v", m, back, err, ev)
		}
		var fastBack, slowBack Event
		if !fastBack.parseFast(m) {
			t.Errorf("parseFast refused %s", m)
		}
		if err := slowBack.unmarshalSlow(m); err != nil || !reflect.DeepEqual(fastBack, slowBack) {
			t.Errorf("parseFast(%s) = %+v\n unmarshalSlow = %+v, %v", m, fastBack, slowBack, err)
		}
	}
}

func TestEventJSONShape(t *testing.T) {
	ev := Event{Kind: EventProgress, JobID: "01", Type: "fib", Owner: "alice", Priority: High, State: StateRunning,
		Attempt: 1, Progress: 50, Message: "half", Time: t0}
	b, err := json.Marshal(ev)
	want := `{"type":"progress","job_id":"01","task_type":"fib","owner":"alice","priority":6,"state":"running",` +
		`"attempt":1,"progress":50,"message":"half","time":"2025-03-04T05:06:07.00000089Z"}`
	if err != nil || string(b) != want {
		t.Fatalf("Marshal = %s, %v\nwant %s", b, err, want)
	}
}

func TestEventJSONSlowPath(t *testing.T) {
	for _, ev := range []Event{
		{Kind: EventFailed, JobID: "j", Type: `ty"pe`, Error: "line 1\nline 2 <tag> & é \u2028", Time: t0},
		{Kind: EventSucceeded, Owner: "ünïcode", Result: json.RawMessage(" [1, 2,\n3] "), Time: t0},
		{Kind: EventSucceeded, Result: json.RawMessage(`"<b>"`), Time: t0},
		{Kind: EventQueued, Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.FixedZone("", 5*3600+1800))},
	} {
		b, err := json.Marshal(ev)
		if err != nil || !json.Valid(b) {
			t.Fatalf("Marshal(%+v) = %s, %v", ev, b, err)
		}
		var back Event
		if err := json.Unmarshal(b, &back); err != nil || !sameEvent(ev, back) {
			t.Fatalf("round trip of %s = %+v, %v", b, back, err)
		}
	}
	for _, bad := range []Event{
		{Kind: 42},
		{State: 42},
		{Progress: math.NaN()},
		{Progress: math.Inf(-1)},
		{Result: json.RawMessage(`{"open":`)},
		{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{NextRunAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.FixedZone("", 25*3600))},
	} {
		b, err := json.Marshal(bad)
		if err == nil {
			t.Errorf("Marshal(%+v) = %s, want an error", bad, b)
		}
		prefix := []byte("keep")
		if out, err := bad.AppendJSON(prefix); err == nil || string(out) != "keep" {
			t.Errorf("AppendJSON(%+v) = %s, %v; want the prefix back and an error", bad, out, err)
		}
	}
}

func TestEventUnmarshalForms(t *testing.T) {
	for in, want := range map[string]Event{
		// The earlier form: the kind under "event", the job type under "type".
		`{"event":"progress","job_id":"a","type":"resize","priority":2,"state":"running","progress":50,"time":"2025-03-04T05:06:07.00000089Z"}`: {Kind: EventProgress, JobID: "a", Type: "resize", Priority: 2, State: StateRunning, Progress: 50, Time: t0},
		`{"type":"succeeded","result":null}`:                                 {Kind: EventSucceeded},
		` { "type" : "queued" , "task_type" : "t" , "result" : [ 1 , 2 ] } `: {Kind: EventQueued, Type: "t", Result: json.RawMessage(`[ 1 , 2 ]`)},
		`{"type":"queued","job_id":"caf\u00e9","extra":{"ignored":true}}`:    {Kind: EventQueued, JobID: "café"},
		`{}`: {},
	} {
		var got Event
		if err := json.Unmarshal([]byte(in), &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Unmarshal(%s) = %+v, %v\nwant %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{`{"type":"exploded"}`, `{"event":"exploded"}`, `{"state":"nope"}`, `{"priority":1.5}`,
		`{"time":"yesterday"}`, `[]`, `{"type":"queued"} {}`, `{"progress":1e400}`} {
		var got Event
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("Unmarshal(%s) = %+v, want an error", bad, got)
		}
	}
}

// sameEvent reports whether a and b are the same event: equal fields,
// equal instants with the same zone offset, and results that are the same
// JSON value.
func sameEvent(a, b Event) bool {
	if !sameTime(a.Time, b.Time) || !sameTime(a.NextRunAt, b.NextRunAt) || !sameJSON(a.Result, b.Result) {
		return false
	}
	a.Time, b.Time, a.NextRunAt, b.NextRunAt, a.Result, b.Result = time.Time{}, time.Time{}, time.Time{}, time.Time{}, nil, nil
	return reflect.DeepEqual(a, b)
}

func sameTime(a, b time.Time) bool {
	_, oa := a.Zone()
	_, ob := b.Zone()
	return a.Equal(b) && oa == ob
}

func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	decode := func(r json.RawMessage) any {
		d := json.NewDecoder(bytes.NewReader(r))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			return err.Error()
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}

// FuzzEventJSON decodes arbitrary JSON as an Event, as a client of the
// WebSocket bridge does: no panic, and whatever decodes encodes again and
// decodes to the same Event.
func FuzzEventJSON(f *testing.F) {
	for _, ev := range jsonEvents {
		b, _ := json.Marshal(ev)
		f.Add(b)
	}
	for _, s := range []string{`{"event":"progress","job_id":"a","state":"running","progress":50}`,
		`{"type":"nope"}`, `{"state":"unknown"}`, `{"result":[1, 2],"time":"2025-01-01T00:00:00+01:00"}`, `{}`,
		`{"type":"failed","error":"a\nb \u2028 <i>","owner":"\u00e9","result":" \"\u003c\" "}`,
		`{"event":"queued","type":"t","task_type":"ignored"}`, `{"progress":1e-9,"next_run_at":"9999-12-31T23:59:59.999999999-23:59"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev Event
		if json.Unmarshal(data, &ev) != nil {
			return
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("decoded event %+v does not encode: %v", ev, err)
		}
		var back Event
		if err := json.Unmarshal(b, &back); err != nil || !sameEvent(ev, back) {
			t.Fatalf("round trip of %q through %s:\n got %+v, %v\nwant %+v", data, b, back, err, ev)
		}
	})
}

// FuzzEventJSONFastDecode: whatever the hand-written parser accepts,
// encoding/json decodes to the same Event; and whatever the hand-written
// encoder writes, encoding/json writes the same.
func FuzzEventJSONFastDecode(f *testing.F) {
	for _, ev := range jsonEvents {
		b, _ := json.Marshal(ev)
		f.Add(b)
	}
	for _, s := range []string{`{"type":"queued","result":null}`, `{"priority":01}`, `{"attempt":-0}`, `{"progress":1E5}`,
		`{"result":"a\"b"}`, `{"result":[1,]}`, `{"type":"queued",}`, `{"job_id":"a" "x":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast Event
		if !fast.parseFast(data) {
			return
		}
		var slow Event
		if err := slow.unmarshalSlow(data); err != nil {
			t.Fatalf("parseFast accepted %q, encoding/json refuses it: %v", data, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\nparseFast     %+v\nunmarshalSlow %+v", data, fast, slow)
		}
		if b, ok := fast.appendFast(nil); ok {
			want, err := json.Marshal((*eventJSON)(&fast))
			if err != nil || !bytes.Equal(b, want) {
				t.Fatalf("appendFast(%+v) = %s\nencoding/json: %s, %v", fast, b, want, err)
			}
		}
	})
}

// BenchmarkEventJSON compares the hand-written encoder and parser with
// encoding/json on a typical progress event: the figure that justifies
// them.
func BenchmarkEventJSON(b *testing.B) {
	ev := Event{Kind: EventProgress, JobID: "0ars16b1c0000x4y8m2q7z9k3v5w1r6tk5jyr0s", Type: "thumbnail", Owner: "user-42",
		Priority: Normal, State: StateRunning, Attempt: 1, Progress: 62.5, Message: "resized 5 of 8", Time: t0}
	data, _ := json.Marshal(ev)
	b.Run("encode/fast", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf, _ = ev.AppendJSON(buf[:0])
		}
	})
	b.Run("encode/encoding-json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal((*eventJSON)(&ev))
		}
	})
	b.Run("decode/fast", func(b *testing.B) {
		for b.Loop() {
			var e Event
			e.UnmarshalJSON(data)
		}
	})
	b.Run("decode/encoding-json", func(b *testing.B) {
		for b.Loop() {
			var e Event
			e.unmarshalSlow(data)
		}
	})
	if !strings.Contains(string(data), `"task_type":"thumbnail"`) {
		b.Fatal(string(data))
	}
}

package jetstream

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// fullRecord has every field set, so encoders that forget one are caught.
func fullRecord() *record {
	t0 := time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)
	return &record{
		JobInfo: jobqueue.JobInfo{
			Job: jobqueue.Job{
				ID: "0abc", Type: "t\"y\npe\u2028", Owner: "al<ice>\u00e9", Payload: json.RawMessage(` {"a": [1, 2]} `), Priority: 7,
				MaxAttempts: 3, Timeout: time.Second, RunAt: t0, UniqueKey: "k\x01ey",
				Metadata: map[string]string{"m": "v"}, SubmittedAt: t0.Add(time.Minute),
			},
			State: jobqueue.StateRetrying, Attempts: 2, Progress: 12.5, ProgressMessage: "half\tway",
			LastError: "bad \xff utf8", Result: json.RawMessage(`{"ok":true}`),
			StartedAt: t0.Add(2 * time.Minute), RetriedAt: t0.Add(3 * time.Minute),
			FinishedAt: t0.Add(4 * time.Minute), NextRunAt: t0.Add(5 * time.Minute), Worker: "w1",
		},
		Seq: 9, Delivery: 4, Cancel: true, Counted: true,
	}
}

// allSet fails if a field of v (recursively through embedded structs) has
// its zero value: a field added to jobqueue's types must be added to the
// encoders here too.
func allSet(t *testing.T, v reflect.Value, path string) {
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		if f.Anonymous && fv.Kind() == reflect.Struct {
			allSet(t, fv, path+f.Name+".")
			continue
		}
		if fv.IsZero() {
			t.Errorf("test value leaves %s%s zero: cover the field in codec.go and here", path, f.Name)
		}
	}
}

func asMap(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("invalid JSON %s: %v", data, err)
	}
	return m
}

func TestRecordEncodingMatchesJSON(t *testing.T) {
	r := fullRecord()
	allSet(t, reflect.ValueOf(*r), "")
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range [][]byte{nil, []byte(` {"id":"0abc"} `)} {
		r2 := *r
		if raw != nil {
			// A job object as received replaces the job's fields.
			r2.raw = jobJSON(&r2.Job, want)
		}
		got := r2.encode()
		if !reflect.DeepEqual(asMap(t, got), asMap(t, want)) {
			t.Errorf("encode:\n got %s\nwant %s", got, want)
		}
		back, err := decodeRecord(got)
		if err != nil {
			t.Fatal(err)
		}
		back.raw = nil
		r3 := *r
		r3.raw = nil
		r3.LastError = "bad \ufffd utf8"
		if !reflect.DeepEqual(asMap(t, back.encode()), asMap(t, r3.encode())) {
			t.Errorf("round trip changed the record:\n got %+v\nwant %+v", back, r3)
		}
	}
	zero := record{JobInfo: jobqueue.JobInfo{Job: jobqueue.Job{ID: "z", Type: "t", MaxAttempts: 1}, State: jobqueue.StatePending}}
	want, _ = json.Marshal(&zero)
	if got := zero.encode(); !reflect.DeepEqual(asMap(t, got), asMap(t, want)) {
		t.Errorf("encode(zero):\n got %s\nwant %s", got, want)
	}
}

// TestEventEncodingMatchesJSON checks that the events sent to other
// processes use jobqueue's encoding and decode back to what was sent.
func TestEventEncodingMatchesJSON(t *testing.T) {
	t0 := time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)
	ev := jobqueue.Event{Kind: jobqueue.EventRetrying, JobID: "0abc", Type: "ty\"pe", Owner: "bob\n", Priority: 3, State: jobqueue.StateRetrying,
		Attempt: 2, Progress: 33.25, Message: "m\n", Error: "e\\", Result: json.RawMessage(`[1]`), NextRunAt: t0, Time: t0.Add(time.Second)}
	allSet(t, reflect.ValueOf(ev), "")
	want, err := json.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := appendEvent([]byte("x"), &ev)
	if err != nil || string(got) != "x"+string(want) {
		t.Fatalf("appendEvent = %s, %v; want x%s", got, err, want)
	}
	back, err := decodeEvent(got[1:])
	if err != nil || !reflect.DeepEqual(back, ev) {
		t.Errorf("decodeEvent = %+v, %v; want %+v", back, err, ev)
	}
	min := jobqueue.Event{Kind: jobqueue.EventQueued, JobID: "x", Type: "t", State: jobqueue.StatePending, Time: t0}
	want, _ = json.Marshal(&min)
	if got, err := appendEvent(nil, &min); err != nil || string(got) != string(want) {
		t.Errorf("appendEvent(min) = %s, %v; want %s", got, err, want)
	}
	// A handler's result that is not JSON travels as a string, as the
	// record keeps it.
	bad := min
	bad.Kind, bad.State, bad.Result = jobqueue.EventSucceeded, jobqueue.StateSucceeded, json.RawMessage(`{oops`)
	got, err = appendEvent(nil, &bad)
	if err != nil {
		t.Fatalf("appendEvent(invalid result) = %v", err)
	}
	if back, err := decodeEvent(got); err != nil || string(back.Result) != `"{oops"` {
		t.Errorf("event with an invalid result decodes as %+v, %v", back, err)
	}
	nan := min
	nan.Progress = math.NaN()
	if got, err := appendEvent([]byte("keep"), &nan); err == nil || string(got) != "keep" {
		t.Errorf("appendEvent(NaN progress) = %q, %v; want the buffer unchanged and an error", got, err)
	}
}

func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		in  string
		seq uint64
		dup bool
		err bool
	}{
		{`{"stream":"S","seq":42}`, 42, false, false},
		{`{"stream":"S","seq":7,"duplicate":true}`, 7, true, false},
		{`{"stream":"S","seq":7,"duplicate": true}`, 7, true, false},
		{`{"stream":"S", "domain":"d", "seq": 5}`, 5, false, false},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"S","seq":0}`, 0, false, true},
		{`not json`, 0, false, true},
		{`{"seq":1}`, 0, false, true},
	} {
		seq, dup, err := parsePubAck([]byte(tc.in))
		if seq != tc.seq || dup != tc.dup || (err != nil) != tc.err {
			t.Errorf("parsePubAck(%s) = %d %v %v", tc.in, seq, dup, err)
		}
	}
	_, _, err := parsePubAck([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}`))
	if !isWrongSeq(err) {
		t.Errorf("wrong-sequence error not recognized: %v", err)
	}
}

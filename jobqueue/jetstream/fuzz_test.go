package jetstream

import (
	"bytes"
	"testing"
)

// The backend decodes what it reads from the server: job messages, state
// records, other processes' events and publish acknowledgements. Another
// process, an operator or a damaged store may have written any of them, so
// none may panic, and what decodes must survive re-encoding.

func FuzzDecodeJob(f *testing.F) {
	f.Add([]byte(`{"id":"0abc","type":"t","payload":{"x":1},"priority":3,"max_attempts":2,"submitted_at":"2025-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"id":"a.b","type":"t","max_attempts":1}`))
	f.Add([]byte(`{"id":"x","type":"t","max_attempts":1,"payload":"\u0000"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := decodeJob(data)
		if err != nil {
			return
		}
		r := record{raw: jobJSON(j, data)}
		r.Job = *j
		r.State = 1
		back, err := decodeRecord(r.encode())
		if err != nil {
			t.Fatalf("record of a decoded job does not decode: %v\n%s", err, r.encode())
		}
		if back.ID != j.ID || back.Type != j.Type || back.Priority != j.Priority || back.MaxAttempts != j.MaxAttempts {
			t.Fatalf("round trip changed the job: %+v -> %+v", j, back.Job)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(fullRecord().encode())
	f.Add([]byte(`{"id":"z","type":"t","max_attempts":1,"state":"running","attempts":1,"delivery":2}`))
	f.Add([]byte(`{"id":"z","type":"t","max_attempts":1,"state":"bogus"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil {
			return
		}
		enc := r.encode()
		r2, err := decodeRecord(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v\n%s", err, enc)
		}
		if enc2 := r2.encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, enc2)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"event":"progress","job_id":"a","type":"t","priority":2,"state":"running","progress":50,"message":"half","time":"2025-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"type":"succeeded","job_id":"a","task_type":"t","owner":"alice","priority":2,"state":"succeeded","attempt":1,"result":{"x":[1]},"time":"2025-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"event":"nope","job_id":"a"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := decodeEvent(data)
		if err != nil {
			return
		}
		enc, err := appendEvent(nil, &ev)
		if err != nil {
			return // a progress or time that JSON cannot hold
		}
		back, err := decodeEvent(enc)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, enc)
		}
		if back.Kind != ev.Kind || back.JobID != ev.JobID || back.State != ev.State || back.Attempt != ev.Attempt {
			t.Fatalf("round trip changed the event: %+v -> %+v", ev, back)
		}
	})
}

func FuzzParsePubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"S","seq":42}`))
	f.Add([]byte(`{"stream":"S","seq":7,"duplicate": true}`))
	f.Add([]byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		seq, dup, err := parsePubAck(data)
		if err != nil && (seq != 0 || dup) {
			t.Fatalf("error with a sequence: %d %v %v", seq, dup, err)
		}
	})
}

package jetstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The hot path stores four messages per job. These helpers encode records
// by appending, and read the server's publish acknowledgement without
// reflection; profiles showed encoding/json there costing about a tenth of
// the CPU of a job. Events use jobqueue's own encoding (Event.AppendJSON),
// the one the WebSocket bridge sends. Everything else uses encoding/json,
// and the tests check that both agree on every field.

// publish stores data on subj with headers h (may be nil) and returns the
// stored sequence and whether the server dropped it as a duplicate
// (Nats-Msg-Id). Errors from the server are *jetstream.APIError.
func (s *store) publish(ctx context.Context, subj string, data []byte, h nats.Header) (uint64, bool, error) {
	resp, err := s.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subj, Data: data, Header: h})
	if err != nil {
		if err == nats.ErrNoResponders {
			return 0, false, jetstream.ErrNoStreamResponse
		}
		return 0, false, err
	}
	return parsePubAck(resp.Data)
}

// parsePubAck reads {"stream":"S","seq":N[,"duplicate":true]} or an error
// response.
func parsePubAck(data []byte) (uint64, bool, error) {
	if bytes.HasPrefix(data, []byte(`{"stream":`)) && !bytes.Contains(data, []byte(`"error"`)) {
		if i := bytes.Index(data, []byte(`"seq":`)); i > 0 {
			rest := data[i+6:]
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			if seq, err := strconv.ParseUint(string(rest[:n]), 10, 64); err == nil && n > 0 {
				dup := false
				if j := bytes.Index(data, []byte(`"duplicate":`)); j > 0 {
					dup = bytes.HasPrefix(bytes.TrimLeft(data[j+12:], " "), []byte("true"))
				}
				return seq, dup, nil
			}
		}
	}
	var r struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Seq       uint64              `json:"seq"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return 0, false, jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return 0, false, fmt.Errorf("nats: %w", r.Error)
	}
	if r.Stream == "" {
		return 0, false, jetstream.ErrInvalidJSAck
	}
	return r.Seq, r.Duplicate, nil
}

// jobJSON returns the JSON object of j, reusing raw (its encoding as
// received) when it is one.
func jobJSON(j *jobqueue.Job, raw []byte) []byte {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 2 && raw[0] == '{' && raw[len(raw)-1] == '}' {
		return raw
	}
	data, err := json.Marshal(j)
	if err != nil {
		// Only a payload that is not JSON fails, and Enqueue and the
		// decoders refuse those; keep its bytes as a string regardless.
		c := *j
		c.Payload, _ = json.Marshal(string(j.Payload))
		data, _ = json.Marshal(&c)
	}
	return data
}

// encode returns the record as JSON: the job's fields, then the snapshot's
// and the bookkeeping's, in one object.
func (r *record) encode() []byte {
	if r.raw == nil {
		r.raw = jobJSON(&r.Job, nil)
	}
	b := make([]byte, 0, len(r.raw)+256+len(r.Result)+len(r.LastError))
	b = append(b, r.raw[:len(r.raw)-1]...)
	b = append(b, `,"state":"`...)
	b = append(b, r.State.String()...)
	b = append(b, `","attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	b = append(b, `,"progress":`...)
	b = appendFloat(b, r.Progress)
	b = appendStringField(b, "progress_message", r.ProgressMessage)
	b = appendStringField(b, "last_error", r.LastError)
	b = appendRawField(b, "result", r.Result)
	b = appendTimeField(b, "started_at", r.StartedAt)
	b = appendTimeField(b, "retried_at", r.RetriedAt)
	b = appendTimeField(b, "finished_at", r.FinishedAt)
	b = appendTimeField(b, "next_run_at", r.NextRunAt)
	b = appendStringField(b, "worker", r.Worker)
	if r.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
	}
	if r.Delivery != 0 {
		b = append(b, `,"delivery":`...)
		b = strconv.AppendUint(b, r.Delivery, 10)
	}
	if r.Cancel {
		b = append(b, `,"cancel_requested":true`...)
	}
	if r.Counted {
		b = append(b, `,"bytes_counted":true`...)
	}
	return append(b, '}')
}

// appendEvent appends ev encoded by jobqueue's (*Event).AppendJSON, the one
// encoding of events, and returns the extended slice. A result that is not
// valid JSON (a handler's malformed bytes) is sent as a JSON string, as
// the record keeps it; an event that still does not encode (a progress
// that is not a number, a time outside years 0-9999) returns b unchanged
// and the error.
func appendEvent(b []byte, ev *jobqueue.Event) ([]byte, error) {
	out, err := ev.AppendJSON(b)
	if err != nil && len(ev.Result) > 0 && !json.Valid(ev.Result) {
		c := *ev
		c.Result, _ = json.Marshal(string(ev.Result))
		out, err = c.AppendJSON(b)
	}
	return out, err
}

func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

func appendStringField(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, s)
}

// appendRawField appends a JSON value; bytes that are not JSON (a handler
// returning a malformed result) are kept as a JSON string.
func appendRawField(b []byte, name string, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	if !json.Valid(raw) {
		return appendString(b, string(raw))
	}
	return append(b, bytes.TrimSpace(raw)...)
}

func appendTimeField(b []byte, name string, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendTime(b, t)
}

func appendTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		t = time.Time{} // outside what JSON times can hold
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, as encoding/json does (without
// its HTML escaping): invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

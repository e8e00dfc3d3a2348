package jobqueue

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Events are most of what a server sends its clients, so Event has a
// hand-written JSON codec: the common case (strings that need no escaping,
// a compact result) is appended and parsed by hand, about a third of the
// cost of encoding/json (BenchmarkEventJSON), and everything else goes
// through encoding/json on eventJSON, which has Event's fields and tags
// but not its methods. The fast paths produce exactly what the slow ones
// do (TestEventJSONFastMatchesSlow, FuzzEventJSONFastDecode).

// eventJSON is Event without its JSON methods: the slow path's encoding.
type eventJSON Event

// MarshalJSON encodes e as one JSON object, in the shape the WebSocket
// protocol uses for events:
//
//	{"type":"progress","job_id":"...","task_type":"resize","owner":"alice",
//	 "priority":3,"state":"running","attempt":1,"progress":50,
//	 "message":"half","time":"2025-01-02T03:04:05.5Z"}
//
// "type" is the event kind and "task_type" the job's type; "owner",
// "attempt", "progress", "message", "error", "result" and "next_run_at"
// are left out when zero. It fails, as encoding/json would, for a kind or
// state out of range, a Progress that is NaN or infinite, a Result that is
// not valid JSON, or a time outside the years 0-9999.
func (e Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 128+len(e.JobID)+len(e.Type)+len(e.Owner)+len(e.Message)+len(e.Error)+len(e.Result)))
}

// AppendJSON appends the encoding of MarshalJSON to b and returns the
// extended slice; on error it returns b unchanged. It allocates nothing
// when b has room and e needs no escaping.
func (e *Event) AppendJSON(b []byte) ([]byte, error) {
	if out, ok := e.appendFast(b); ok {
		return out, nil
	}
	return e.appendSlow(b)
}

// appendFast appends e by hand and reports true, or returns false (and b
// with garbage after len(b)) if e needs the slow path.
func (e *Event) appendFast(b []byte) ([]byte, bool) {
	if int(e.Kind) >= len(eventNames) || int(e.State) >= len(stateNames) ||
		!plainString(e.JobID) || !plainString(e.Type) || !plainString(e.Owner) ||
		!plainString(e.Message) || !plainString(e.Error) ||
		math.IsNaN(e.Progress) || math.IsInf(e.Progress, 0) || !compactJSON(e.Result) {
		return b, false
	}
	b = append(b, `{"type":"`...)
	b = append(b, eventNames[e.Kind]...)
	b = append(b, `","job_id":"`...)
	b = append(b, e.JobID...)
	b = append(b, `","task_type":"`...)
	b = append(b, e.Type...)
	if e.Owner != "" {
		b = append(b, `","owner":"`...)
		b = append(b, e.Owner...)
	}
	b = append(b, `","priority":`...)
	b = strconv.AppendInt(b, int64(e.Priority), 10)
	b = append(b, `,"state":"`...)
	b = append(b, stateNames[e.State]...)
	b = append(b, '"')
	if e.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(e.Attempt), 10)
	}
	if e.Progress != 0 {
		b = append(b, `,"progress":`...)
		b = appendFloat(b, e.Progress)
	}
	if e.Message != "" {
		b = append(b, `,"message":"`...)
		b = append(b, e.Message...)
		b = append(b, '"')
	}
	if e.Error != "" {
		b = append(b, `,"error":"`...)
		b = append(b, e.Error...)
		b = append(b, '"')
	}
	if len(e.Result) > 0 {
		b = append(b, `,"result":`...)
		b = append(b, e.Result...)
	}
	ok := true
	if !e.NextRunAt.IsZero() {
		b = append(b, `,"next_run_at":`...)
		b, ok = appendTime(b, e.NextRunAt)
	}
	b = append(b, `,"time":`...)
	b, ok2 := appendTime(b, e.Time)
	return append(b, '}'), ok && ok2
}

func (e *Event) appendSlow(b []byte) ([]byte, error) {
	// Marshal a copy: handing e itself to encoding/json would make every
	// Event that reaches AppendJSON escape to the heap, fast path included.
	c := eventJSON(*e)
	data, err := json.Marshal(&c)
	if err != nil {
		return b, err
	}
	return append(b, data...), nil
}

// plainString reports whether s is encoded by encoding/json as itself
// between quotes: printable ASCII without quotes, backslashes or the
// characters it escapes for HTML.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// compactJSON reports whether raw is empty, or valid JSON that
// encoding/json would copy unchanged: no white space to remove and nothing
// it escapes for HTML (<, >, &, U+2028, U+2029).
func compactJSON(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return true
	}
	in := false // inside a string
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '<' || c == '>' || c == '&' || c == 0xe2:
			return false
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return json.Valid(raw)
}

// appendFloat formats f as encoding/json does.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// Shorten e-09 to e-9.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendTime appends t quoted in RFC 3339 with nanoseconds, as
// time.Time.MarshalJSON does, and reports false where MarshalJSON fails (a
// year outside 0-9999 or a zone offset of a day or more).
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	if len(b)-n0 < len("2006-01-02T15:04:05Z") || b[n0+4] != '-' {
		return b, false
	}
	if b[len(b)-1] != 'Z' {
		// The offset is ±hh:mm; more than two hour digits, or 24 and up,
		// is not RFC 3339.
		h := b[len(b)-6:]
		if h[0] != '+' && h[0] != '-' || (h[1]-'0')*10+(h[2]-'0') >= 24 {
			return b, false
		}
	}
	return append(b, '"'), true
}

// UnmarshalJSON decodes an event encoded by MarshalJSON. Fields may come
// in any order and absent ones are zero; a "result" of null is no result.
// It also accepts the form earlier versions produced, recognized by its
// "event" key: the kind under "event" and the job's type under "type". It
// fails for an unknown kind or state, and for anything encoding/json
// refuses. The common case, as MarshalJSON writes it, is parsed by hand;
// the rest goes through encoding/json.
func (e *Event) UnmarshalJSON(data []byte) error {
	var ev Event
	if ev.parseFast(data) {
		*e = ev
		return nil
	}
	return e.unmarshalSlow(data)
}

// eventIn is the slow path's decoding, of both forms.
type eventIn struct {
	Type      string          `json:"type"`
	JobID     string          `json:"job_id"`
	TaskType  string          `json:"task_type"`
	Owner     string          `json:"owner"`
	Priority  Priority        `json:"priority"`
	State     State           `json:"state"`
	Attempt   int             `json:"attempt"`
	Progress  float64         `json:"progress"`
	Message   string          `json:"message"`
	Error     string          `json:"error"`
	Result    json.RawMessage `json:"result"`
	NextRunAt time.Time       `json:"next_run_at"`
	Time      time.Time       `json:"time"`
	Event     *EventKind      `json:"event"` // the earlier form's kind
}

func (e *Event) unmarshalSlow(data []byte) error {
	var m eventIn
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	ev := Event{
		JobID: m.JobID, Type: m.TaskType, Owner: m.Owner, Priority: m.Priority, State: m.State,
		Attempt: m.Attempt, Progress: m.Progress, Message: m.Message, Error: m.Error,
		Result: m.Result, NextRunAt: m.NextRunAt, Time: m.Time,
	}
	if m.Event != nil {
		ev.Kind, ev.Type = *m.Event, m.Type
	} else if err := ev.Kind.UnmarshalText([]byte(m.Type)); err != nil {
		return err
	}
	if string(ev.Result) == "null" {
		ev.Result = nil
	}
	*e = ev
	return nil
}

// Bits of the keys parseFast has seen.
const (
	keyType = 1 << iota
	keyJobID
	keyTaskType
	keyOwner
	keyPriority
	keyState
	keyAttempt
	keyProgress
	keyMessage
	keyError
	keyResult
	keyNextRunAt
	keyTime
)

// parseFast parses data into the zero Event e and reports whether it
// could. It gives up (leaving the rest to encoding/json) on an escape or a
// non-ASCII byte in a string, an unknown or repeated key, a null, or
// anything unexpected.
func (e *Event) parseFast(data []byte) bool {
	p := parser{b: data}
	if !p.byte('{') {
		return false
	}
	if p.byte('}') {
		p.space()
		return p.i == len(p.b)
	}
	var seen uint16
	for {
		key, ok := p.plainString()
		if !ok || !p.byte(':') {
			return false
		}
		var bit uint16
		switch string(key) {
		case "type":
			bit = keyType
			s, ok := p.plainString()
			if !ok || e.Kind.UnmarshalText(s) != nil {
				return false
			}
		case "state":
			bit = keyState
			s, ok := p.plainString()
			if !ok || e.State.UnmarshalText(s) != nil {
				return false
			}
		case "job_id", "task_type", "owner", "message", "error":
			s, ok := p.plainString()
			if !ok {
				return false
			}
			switch string(key) {
			case "job_id":
				bit, e.JobID = keyJobID, string(s)
			case "task_type":
				bit, e.Type = keyTaskType, string(s)
			case "owner":
				bit, e.Owner = keyOwner, string(s)
			case "message":
				bit, e.Message = keyMessage, string(s)
			default:
				bit, e.Error = keyError, string(s)
			}
		case "priority", "attempt":
			tok := p.number()
			n, err := strconv.Atoi(string(tok))
			if err != nil || !json.Valid(tok) {
				return false
			}
			if string(key) == "priority" {
				bit, e.Priority = keyPriority, Priority(n)
			} else {
				bit, e.Attempt = keyAttempt, n
			}
		case "progress":
			bit = keyProgress
			tok := p.number()
			f, err := strconv.ParseFloat(string(tok), 64)
			if err != nil || !json.Valid(tok) {
				return false
			}
			e.Progress = f
		case "time", "next_run_at":
			s, ok := p.plainString()
			var t time.Time
			if !ok || t.UnmarshalText(s) != nil {
				return false
			}
			if string(key) == "time" {
				bit, e.Time = keyTime, t
			} else {
				bit, e.NextRunAt = keyNextRunAt, t
			}
		case "result":
			bit = keyResult
			v, ok := p.value()
			if !ok || !json.Valid(v) {
				return false
			}
			if string(v) != "null" {
				e.Result = bytes.Clone(v)
			}
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if p.byte('}') {
			p.space()
			return p.i == len(p.b)
		}
		if !p.byte(',') {
			return false
		}
	}
}

// parser walks a JSON text for parseFast.
type parser struct {
	b []byte
	i int
}

func (p *parser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

// byte consumes c after optional white space.
func (p *parser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// plainString reads a string of printable ASCII without escapes and
// returns its bytes (a subslice of the input).
func (p *parser) plainString() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// number returns the bytes of a number token; the caller validates them.
func (p *parser) number() []byte {
	p.space()
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if (c < '0' || c > '9') && c != '-' && c != '+' && c != '.' && c != 'e' && c != 'E' {
			break
		}
		p.i++
	}
	return p.b[start:p.i]
}

// value skips one JSON value and returns its bytes without surrounding
// white space; the caller validates them.
func (p *parser) value() ([]byte, bool) {
	p.space()
	start := p.i
	depth := 0
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '"':
			p.i++
			for p.i < len(p.b) && p.b[p.i] != '"' {
				if p.b[p.i] == '\\' {
					p.i++
				}
				p.i++
			}
			if p.i >= len(p.b) {
				return nil, false
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return p.trimmed(start)
			}
			depth--
		case ',':
			if depth == 0 {
				return p.trimmed(start)
			}
		}
		p.i++
	}
	return nil, false
}

// trimmed returns the bytes from start to the current position without
// trailing white space, and whether there are any.
func (p *parser) trimmed(start int) ([]byte, bool) {
	v := bytes.TrimRight(p.b[start:p.i], " \t\r\n")
	return v, len(v) > 0
}

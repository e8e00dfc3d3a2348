package wsbridge

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/corework/corework/jobqueue"
)

// decodeEvent decodes an event message into ev. Events are most of what a
// Client reads, so the shape the server writes (a flat object whose strings
// need no unescaping) is parsed by hand, which measured about four times
// cheaper than json.Unmarshal; anything else goes to json.Unmarshal.
func decodeEvent(b []byte, ev *jobqueue.Event) error {
	if fastEvent(b, ev) {
		return nil
	}
	*ev = jobqueue.Event{}
	var m eventMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*ev = jobqueue.Event{
		Kind: m.Type, JobID: m.JobID, Type: m.TaskType, Priority: m.Priority, State: m.State,
		Attempt: m.Attempt, Progress: m.Progress, Message: m.Message, Error: m.Error,
		Result: m.Result, NextRunAt: m.NextRunAt, Time: m.Time,
	}
	return nil
}

// fastEvent parses the common case and reports whether it could. It gives up
// on any escape in a string, an unknown or repeated key, or anything
// unexpected, leaving the rest to encoding/json.
func fastEvent(b []byte, ev *jobqueue.Event) bool {
	p := parser{b: b}
	if !p.byte('{') {
		return false
	}
	var seen uint16
	for {
		key, ok := p.plainString()
		if !ok || !p.byte(':') {
			return false
		}
		bit, known := eventKeys[string(key)]
		if !known || seen&bit != 0 {
			return false
		}
		seen |= bit
		switch string(key) {
		case "type":
			s, ok := p.plainString()
			if !ok || ev.Kind.UnmarshalText(s) != nil {
				return false
			}
		case "state":
			s, ok := p.plainString()
			if !ok || ev.State.UnmarshalText(s) != nil {
				return false
			}
		case "job_id", "task_type", "message", "error":
			s, ok := p.plainString()
			if !ok {
				return false
			}
			switch string(key) {
			case "job_id":
				ev.JobID = string(s)
			case "task_type":
				ev.Type = string(s)
			case "message":
				ev.Message = string(s)
			default:
				ev.Error = string(s)
			}
		case "priority", "attempt":
			tok := p.number()
			n, err := strconv.Atoi(string(tok))
			if err != nil || !json.Valid(tok) {
				return false
			}
			if string(key) == "priority" {
				ev.Priority = jobqueue.Priority(n)
			} else {
				ev.Attempt = n
			}
		case "progress":
			tok := p.number()
			f, err := strconv.ParseFloat(string(tok), 64)
			if err != nil || !json.Valid(tok) {
				return false
			}
			ev.Progress = f
		case "time", "next_run_at":
			s, ok := p.plainString()
			if !ok {
				return false
			}
			var t time.Time
			if t.UnmarshalText(s) != nil {
				return false
			}
			if string(key) == "time" {
				ev.Time = t
			} else {
				ev.NextRunAt = t
			}
		case "result":
			v, ok := p.value()
			if !ok || !json.Valid(v) {
				return false
			}
			if string(v) != "null" {
				ev.Result = append(json.RawMessage(nil), v...)
			}
		}
		p.space()
		if p.byte('}') {
			p.space()
			return p.i == len(p.b) && seen&(eventKeys["type"]|eventKeys["job_id"]) != 0
		}
		if !p.byte(',') {
			return false
		}
	}
}

// eventKeys are the keys of an event message, each with its bit.
var eventKeys = map[string]uint16{
	"type": 1 << 0, "job_id": 1 << 1, "task_type": 1 << 2, "priority": 1 << 3, "state": 1 << 4,
	"attempt": 1 << 5, "progress": 1 << 6, "message": 1 << 7, "error": 1 << 8, "result": 1 << 9,
	"next_run_at": 1 << 10, "time": 1 << 11,
}

// parser walks a JSON text.
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

// number returns the token of a number (validated by its parser).
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

// value skips one JSON value and returns its bytes; the caller validates
// them.
func (p *parser) value() ([]byte, bool) {
	p.space()
	start := p.i
	depth := 0
	for p.i < len(p.b) {
		switch c := p.b[p.i]; c {
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

// fastAck parses an ack message as the server writes it into m and reports
// whether it could; anything else goes to json.Unmarshal.
func fastAck(b []byte, m *inMsg) bool {
	p := parser{b: b}
	if !p.byte('{') {
		return false
	}
	var seen uint8
	for {
		key, ok := p.plainString()
		if !ok || !p.byte(':') {
			return false
		}
		var bit uint8
		switch string(key) {
		case "type":
			bit = 1
			s, ok := p.plainString()
			if !ok || string(s) != msgAck {
				return false
			}
			m.Type = msgAck
		case "id":
			bit = 2
			v, ok := p.value()
			if !ok || !validID(v) || !json.Valid(v) {
				return false
			}
			m.ID = append(json.RawMessage(nil), v...)
		case "command":
			bit = 4
			s, ok := p.plainString()
			if !ok {
				return false
			}
			m.Command = string(s)
		case "job_id":
			bit = 8
			s, ok := p.plainString()
			if !ok {
				return false
			}
			m.JobID = string(s)
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		p.space()
		if p.byte('}') {
			p.space()
			return p.i == len(p.b) && seen&1 != 0
		}
		if !p.byte(',') {
			return false
		}
	}
}

package wsbridge

import (
	"bytes"
	"encoding/json"

	"github.com/corework/corework/jobqueue"
)

// decodeEvent decodes an event message into ev with jobqueue.Event's own
// decoding (Event.UnmarshalJSON, the one JSON form of events, parsed by
// hand in the common case).
func decodeEvent(b []byte, ev *jobqueue.Event) error { return ev.UnmarshalJSON(b) }

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

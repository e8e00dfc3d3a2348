package wsbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/corework/corework/jobqueue"
)

// Client commands.
const (
	cmdSubmit      = "submit_job"
	cmdStatus      = "job_status"
	cmdCancel      = "cancel_job"
	cmdSubscribe   = "subscribe"
	cmdUnsubscribe = "unsubscribe"
	cmdList        = "list_jobs"
	cmdStats       = "stats"
	cmdPing        = "ping"
)

// Server message types.
const (
	msgWelcome = "welcome"
	msgAck     = "ack"
	msgError   = "error"
	msgStatus  = "status"
	msgJobs    = "jobs"
	msgStats   = "stats"
	msgPong    = "pong"
)

// maxRequestID bounds the encoded request id a client may have echoed.
const maxRequestID = 128

// maxTimeout bounds a submitted timeout.
const maxTimeout = 365 * 24 * time.Hour

// request is a client command as it travels on the wire. Clients build it
// to send; the server decodes it with decodeCommand.
type request struct {
	Command     string            `json:"command"`
	ID          json.RawMessage   `json:"id,omitempty"`
	TaskType    string            `json:"task_type,omitempty"`
	Data        json.RawMessage   `json:"data,omitempty"`
	Priority    json.RawMessage   `json:"priority,omitempty"`
	Timeout     json.RawMessage   `json:"timeout,omitempty"`
	MaxAttempts int               `json:"max_attempts,omitempty"`
	UniqueKey   string            `json:"unique_key,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	RunAt       *time.Time        `json:"run_at,omitempty"`
	JobID       string            `json:"job_id,omitempty"`
	State       string            `json:"state,omitempty"`
	Limit       int               `json:"limit,omitempty"`
	Cursor      string            `json:"cursor,omitempty"`
	Owner       string            `json:"owner,omitempty"`
	Watch       *bool             `json:"watch,omitempty"`
}

// command is a decoded, validated client command.
type command struct {
	name  string
	spec  *commandSpec    // how to run it
	id    json.RawMessage // echoed in the reply; nil when the client sent none
	job   jobqueue.JobRequest
	jobID string
	list  jobqueue.ListFilter
	watch *bool
}

// cmdError is a command the server refuses with an `error` message; the
// connection stays open.
type cmdError struct {
	id      json.RawMessage
	command string
	code    string
	message string
}

func (e *cmdError) Error() string { return e.code + ": " + e.message }

// decodeCommand decodes one client message: the fields every command
// shares here, the command's own with its entry of the commands table.
// Any error is a *cmdError that carries the request id when it could be
// read.
func decodeCommand(data []byte) (command, error) {
	var cmd command
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return cmd, &cmdError{code: CodeBadJSON, message: "a message must be a JSON object"}
	}
	var r request
	if err := json.Unmarshal(data, &r); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return cmd, &cmdError{code: CodeBadJSON, message: "invalid JSON: " + err.Error()}
		}
		// The JSON is valid but a field has the wrong type: read the id
		// and the command alone so that the error can carry them.
		var head struct {
			ID      json.RawMessage `json:"id"`
			Command any             `json:"command"`
		}
		_ = json.Unmarshal(data, &head)
		e := &cmdError{code: CodeBadRequest, message: err.Error()}
		if validID(head.ID) {
			e.id = head.ID
		}
		if s, ok := head.Command.(string); ok && len(s) <= 64 {
			e.command = s
		}
		return cmd, e
	}
	fail := func(code, format string, args ...any) (command, error) {
		return command{}, &cmdError{id: cmd.id, command: cmd.name, code: code, message: fmt.Sprintf(format, args...)}
	}
	if validID(r.ID) {
		cmd.id = r.ID
	} else if len(r.ID) > 0 && string(r.ID) != "null" {
		return fail(CodeBadRequest, "id must be a string or a number of at most %d bytes", maxRequestID)
	}
	switch {
	case r.Command == "":
		return fail(CodeUnknownCommand, "missing command")
	case len(r.Command) > 64:
		return fail(CodeUnknownCommand, "unknown command")
	}
	cmd.name = r.Command
	cmd.spec = commands[r.Command]
	if cmd.spec == nil {
		return fail(CodeUnknownCommand, "unknown command %q", r.Command)
	}
	if d := cmd.spec.decode; d != nil {
		var err error
		if cmd, err = d(&r, cmd); err != nil {
			return fail(CodeBadRequest, "%v", err)
		}
	}
	return cmd, nil
}

// validID reports whether raw is a JSON string or number short enough to
// echo.
func validID(raw json.RawMessage) bool {
	if len(raw) == 0 || len(raw) > maxRequestID {
		return false
	}
	switch c := raw[0]; {
	case c == '"':
		return true
	case c == '-' || (c >= '0' && c <= '9'):
		return true
	}
	return false
}

// priorityNames maps the names a client may send to levels.
var priorityNames = map[string]jobqueue.Priority{
	"low":      jobqueue.Low,
	"normal":   jobqueue.Normal,
	"high":     jobqueue.High,
	"critical": jobqueue.Critical,
}

// parsePriority reads an integer level (0-9) or a level name.
func parsePriority(raw json.RawMessage) (jobqueue.Priority, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return jobqueue.Low, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		if p, ok := priorityNames[strings.ToLower(s)]; ok {
			return p, nil
		}
		return 0, fmt.Errorf("unknown priority %q (low, normal, high, critical or 0-9)", s)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || f < float64(jobqueue.MinPriority) || f > float64(jobqueue.MaxPriority) {
		return 0, fmt.Errorf("priority must be an integer from %d to %d or a name", jobqueue.MinPriority, jobqueue.MaxPriority)
	}
	return jobqueue.Priority(f), nil
}

// parseTimeout reads seconds as a number or a Go duration string.
func parseTimeout(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var d time.Duration
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("timeout: %v", err)
		}
		d = v
	} else {
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > maxTimeout.Seconds() {
			return 0, fmt.Errorf("timeout must be seconds from 0 to %.0f or a duration string", maxTimeout.Seconds())
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 || d > maxTimeout {
		return 0, fmt.Errorf("timeout must be from 0 to %v", maxTimeout)
	}
	return d, nil
}

// encodeAck encodes an ack message. One goes out per command, so the
// common case is appended by hand (request ids are valid JSON already:
// they come from json.Unmarshal).
func encodeAck(id json.RawMessage, command, jobID string) []byte {
	if !plainString(command) || !plainString(jobID) {
		return encode(ackMsg{Type: msgAck, ID: id, Command: command, JobID: jobID})
	}
	b := make([]byte, 0, 48+len(id)+len(command)+len(jobID))
	b = append(b, `{"type":"ack"`...)
	if len(id) > 0 {
		b = append(b, `,"id":`...)
		b = append(b, id...)
	}
	b = append(b, `,"command":"`...)
	b = append(b, command...)
	b = append(b, '"')
	if jobID != "" {
		b = append(b, `,"job_id":"`...)
		b = append(b, jobID...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// Server messages. Each has "type" first.

type welcomeMsg struct {
	Type      string    `json:"type"`
	Principal string    `json:"principal"`
	Operator  bool      `json:"operator,omitempty"`
	Resume    string    `json:"resume,omitempty"`
	Quota     quotaWire `json:"quota"`
}

// quotaWire is a resolved Quota as a client sees it: absent (zero) means
// no limit; max_delay is in seconds.
type quotaWire struct {
	MaxActive      int     `json:"max_active,omitempty"`
	MaxDelayed     int     `json:"max_delayed,omitempty"`
	MaxDelay       float64 `json:"max_delay,omitempty"`
	MaxBytes       int64   `json:"max_bytes,omitempty"`
	MaxInFlight    int     `json:"max_in_flight,omitempty"`
	MaxQueuedBytes int64   `json:"max_queued_bytes,omitempty"`
	MaxWatches     int     `json:"max_watches,omitempty"`
}

func wireQuota(q Quota) quotaWire {
	return quotaWire{
		MaxActive: q.MaxActive, MaxDelayed: q.MaxDelayed, MaxDelay: q.MaxDelay.Seconds(), MaxBytes: q.MaxBytes,
		MaxInFlight: q.MaxInFlight, MaxQueuedBytes: q.MaxQueuedBytes, MaxWatches: q.MaxWatches,
	}
}

type ackMsg struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Command string          `json:"command"`
	JobID   string          `json:"job_id,omitempty"`
}

type errorMsg struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Command string          `json:"command,omitempty"`
	JobID   string          `json:"job_id,omitempty"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
}

type statusMsg struct {
	Type string            `json:"type"`
	ID   json.RawMessage   `json:"id,omitempty"`
	Job  *jobqueue.JobInfo `json:"job"`
}

type pongMsg struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id,omitempty"`
	Time time.Time       `json:"time"`
}

type statsMsg struct {
	Type   string          `json:"type"`
	ID     json.RawMessage `json:"id,omitempty"`
	Bridge Stats           `json:"bridge"`
	Queue  jobqueue.Stats  `json:"queue"`
	System json.RawMessage `json:"system,omitempty"`
}

// encode marshals a server message. The types above always encode.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a result or system value that is not valid JSON can get
		// here; report it rather than send nothing.
		b, _ = json.Marshal(errorMsg{Type: msgError, Code: CodeInternal, Message: err.Error()})
	}
	return b
}

// encodeEvent encodes ev as an event message with jobqueue.Event's own
// encoding (Event.AppendJSON: "type" is the event kind, "task_type" the
// job's type), which appends the common case by hand. An event that does
// not encode (a result that is not JSON) becomes an `error` message with
// CodeInternal.
func encodeEvent(ev *jobqueue.Event) []byte {
	b, err := ev.AppendJSON(make([]byte, 0, 256+len(ev.Owner)+len(ev.Result)+len(ev.Message)+len(ev.Error)))
	if err != nil {
		return encode(errorMsg{Type: msgError, JobID: ev.JobID, Code: CodeInternal, Message: err.Error()})
	}
	return b
}

// plainString reports whether s needs no escaping in JSON: printable ASCII
// without quotes, backslashes or the characters encoding/json escapes for
// HTML.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// finalEvent builds the final event of a finished job from its snapshot,
// for a client that subscribes after the job ended.
func finalEvent(info *jobqueue.JobInfo) jobqueue.Event {
	ev := jobqueue.Event{
		JobID:    info.ID,
		Type:     info.Type,
		Owner:    info.Owner,
		Priority: info.Priority,
		State:    info.State,
		Attempt:  info.Attempts,
		Time:     info.FinishedAt,
	}
	switch info.State {
	case jobqueue.StateSucceeded:
		ev.Kind = jobqueue.EventSucceeded
		ev.Result = info.Result
	case jobqueue.StateFailed:
		ev.Kind = jobqueue.EventFailed
		ev.Error = info.LastError
	case jobqueue.StateCanceled:
		ev.Kind = jobqueue.EventCanceled
		ev.Error = info.LastError
	}
	return ev
}

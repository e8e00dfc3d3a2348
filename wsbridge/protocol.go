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
	msgAck    = "ack"
	msgError  = "error"
	msgStatus = "status"
	msgJobs   = "jobs"
	msgStats  = "stats"
	msgPong   = "pong"
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
	Watch       *bool             `json:"watch,omitempty"`
}

// command is a decoded, validated client command.
type command struct {
	name  string
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

// decodeCommand decodes one client message. Any error is a *cmdError that
// carries the request id when it could be read.
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
	if len(r.Command) > 64 {
		return fail(CodeUnknownCommand, "unknown command")
	}
	cmd.name = r.Command
	switch r.Command {
	case cmdSubmit:
		if r.TaskType == "" {
			return fail(CodeBadRequest, "submit_job needs a task_type")
		}
		p, err := parsePriority(r.Priority)
		if err != nil {
			return fail(CodeBadRequest, "%v", err)
		}
		d, err := parseTimeout(r.Timeout)
		if err != nil {
			return fail(CodeBadRequest, "%v", err)
		}
		if r.MaxAttempts < 0 {
			return fail(CodeBadRequest, "max_attempts must not be negative")
		}
		cmd.job = jobqueue.JobRequest{
			Type:        r.TaskType,
			Payload:     r.Data,
			Priority:    p,
			MaxAttempts: r.MaxAttempts,
			Timeout:     d,
			UniqueKey:   r.UniqueKey,
			Metadata:    r.Metadata,
		}
		if string(cmd.job.Payload) == "null" {
			cmd.job.Payload = nil
		}
		if r.RunAt != nil {
			cmd.job.RunAt = *r.RunAt
		}
	case cmdStatus, cmdCancel:
		if r.JobID == "" {
			return fail(CodeBadRequest, "%s needs a job_id", r.Command)
		}
		cmd.jobID = r.JobID
	case cmdSubscribe, cmdUnsubscribe:
		cmd.jobID = r.JobID // empty: every job
	case cmdList:
		if r.State != "" {
			if err := cmd.list.State.UnmarshalText([]byte(r.State)); err != nil {
				return fail(CodeBadRequest, "unknown state %q", r.State)
			}
		}
		if r.Limit < 0 || r.Limit > 1000 {
			return fail(CodeBadRequest, "limit must be from 0 to 1000")
		}
		cmd.list.Type = r.TaskType
		cmd.list.Limit = r.Limit
	case cmdStats:
		cmd.watch = r.Watch
	case cmdPing:
	case "":
		return fail(CodeUnknownCommand, "missing command")
	default:
		return fail(CodeUnknownCommand, "unknown command %q", r.Command)
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

type jobsMsg struct {
	Type string             `json:"type"`
	ID   json.RawMessage    `json:"id,omitempty"`
	Jobs []jobqueue.JobInfo `json:"jobs"`
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

// eventMsg is a job event as sent to clients: its "type" is the event
// kind (queued, started, progress, retrying, succeeded, failed, canceled)
// and "task_type" the job's type.
type eventMsg struct {
	Type      jobqueue.EventKind `json:"type"`
	JobID     string             `json:"job_id"`
	TaskType  string             `json:"task_type"`
	Priority  jobqueue.Priority  `json:"priority"`
	State     jobqueue.State     `json:"state"`
	Attempt   int                `json:"attempt,omitempty"`
	Progress  float64            `json:"progress,omitempty"`
	Message   string             `json:"message,omitempty"`
	Error     string             `json:"error,omitempty"`
	Result    json.RawMessage    `json:"result,omitempty"`
	NextRunAt time.Time          `json:"next_run_at,omitzero"`
	Time      time.Time          `json:"time"`
}

// encodeEvent encodes ev as an event message. Events are most of the
// traffic, so the common case is appended by hand (measured: about a third
// of the cost of json.Marshal); strings that need escaping and results that
// are not valid JSON take the encoding/json path.
func encodeEvent(ev *jobqueue.Event) []byte {
	b := make([]byte, 0, 192+len(ev.Result)+len(ev.Message)+len(ev.Error))
	kind, err1 := ev.Kind.MarshalText()
	state, err2 := ev.State.MarshalText()
	if err1 != nil || err2 != nil || !plainString(ev.JobID) || !plainString(ev.Type) ||
		!plainString(ev.Message) || !plainString(ev.Error) || math.IsNaN(ev.Progress) || math.IsInf(ev.Progress, 0) ||
		(len(ev.Result) > 0 && !json.Valid(ev.Result)) {
		return encode(eventMsg{
			Type: ev.Kind, JobID: ev.JobID, TaskType: ev.Type, Priority: ev.Priority, State: ev.State,
			Attempt: ev.Attempt, Progress: ev.Progress, Message: ev.Message, Error: ev.Error,
			Result: ev.Result, NextRunAt: ev.NextRunAt, Time: ev.Time,
		})
	}
	b = append(b, `{"type":"`...)
	b = append(b, kind...)
	b = append(b, `","job_id":"`...)
	b = append(b, ev.JobID...)
	b = append(b, `","task_type":"`...)
	b = append(b, ev.Type...)
	b = append(b, `","priority":`...)
	b = strconv.AppendInt(b, int64(ev.Priority), 10)
	b = append(b, `,"state":"`...)
	b = append(b, state...)
	b = append(b, '"')
	if ev.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(ev.Attempt), 10)
	}
	if ev.Progress != 0 {
		b = append(b, `,"progress":`...)
		b = strconv.AppendFloat(b, ev.Progress, 'f', -1, 64)
	}
	if ev.Message != "" {
		b = append(b, `,"message":"`...)
		b = append(b, ev.Message...)
		b = append(b, '"')
	}
	if ev.Error != "" {
		b = append(b, `,"error":"`...)
		b = append(b, ev.Error...)
		b = append(b, '"')
	}
	if len(ev.Result) > 0 {
		b = append(b, `,"result":`...)
		b = append(b, ev.Result...)
	}
	if !ev.NextRunAt.IsZero() {
		b = append(b, `,"next_run_at":"`...)
		b = ev.NextRunAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"time":"`...)
	b = ev.Time.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
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

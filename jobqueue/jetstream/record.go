package jetstream

import (
	"encoding/json"
	"fmt"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go"
)

// record is what the state bucket, the DONE stream and the dead-letter
// stream hold for a job: its snapshot plus the bookkeeping of its current
// delivery. It is JSON with the JobInfo fields inline.
type record struct {
	jobqueue.JobInfo
	// Seq is the sequence of the job's message in the jobs stream.
	Seq uint64 `json:"seq,omitempty"`
	// Delivery is the delivery count of the message that leased the job;
	// a lease whose delivery is older has been superseded.
	Delivery uint64 `json:"delivery,omitempty"`
	// Cancel records a Cancel of the running job, for the worker settling it.
	Cancel bool `json:"cancel_requested,omitempty"`
	// Counted says the job's payload is counted in the byte budget (see
	// ledger.go), so that whoever finishes the job takes it off; its
	// message says so with countedHeader.
	Counted bool `json:"bytes_counted,omitempty"`

	raw []byte // the Job's JSON object, once known (see encode)
}

// decodeRecord decodes a record read from the server. It checks what the
// backend relies on, so a foreign or damaged value is an error, not a panic
// later.
func decodeRecord(data []byte) (*record, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if err := checkJob(&r.Job); err != nil {
		return nil, err
	}
	if r.State == jobqueue.StateUnknown {
		return nil, fmt.Errorf("%w: record of %s without state", ErrBadMessage, r.ID)
	}
	return &r, nil
}

// decodeJob decodes the body of a job message.
func decodeJob(data []byte) (*jobqueue.Job, error) {
	var j jobqueue.Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if err := checkJob(&j); err != nil {
		return nil, err
	}
	return &j, nil
}

func checkJob(j *jobqueue.Job) error {
	switch {
	case !validID(j.ID):
		return fmt.Errorf("%w: job id %q", ErrBadMessage, j.ID)
	case j.Type == "":
		return fmt.Errorf("%w: job %s without type", ErrBadMessage, j.ID)
	case !j.Priority.Valid():
		return fmt.Errorf("%w: job %s priority %d", ErrBadMessage, j.ID, j.Priority)
	case j.MaxAttempts < 1:
		return fmt.Errorf("%w: job %s MaxAttempts %d", ErrBadMessage, j.ID, j.MaxAttempts)
	case j.Timeout < 0:
		return fmt.Errorf("%w: job %s timeout %v", ErrBadMessage, j.ID, j.Timeout)
	}
	if len(j.Payload) > 0 && !json.Valid(j.Payload) {
		return fmt.Errorf("%w: job %s payload is not JSON", ErrBadMessage, j.ID)
	}
	return nil
}

// decodeEvent decodes an event sent by another process.
func decodeEvent(data []byte) (jobqueue.Event, error) {
	var ev jobqueue.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("%w: event: %v", ErrBadMessage, err)
	}
	if ev.Kind == 0 || !validID(ev.JobID) || !ev.Priority.Valid() {
		return ev, fmt.Errorf("%w: event %q for %q", ErrBadMessage, ev.Kind, ev.JobID)
	}
	return ev, nil
}

// countedHeader marks the message of a job whose payload bytes are counted
// in the byte budget.
const countedHeader = "Corework-Counted"

// fromJob is the record of a job not yet leased; hdr are its message's
// headers (nil if unknown).
func fromJob(j *jobqueue.Job, st jobqueue.State, seq uint64, hdr nats.Header) *record {
	r := &record{JobInfo: jobqueue.JobInfo{Job: *j, State: st}, Seq: seq, Counted: hdr.Get(countedHeader) != ""}
	if st == jobqueue.StateScheduled {
		r.NextRunAt = j.RunAt
	}
	return r
}

func (r *record) event(k jobqueue.EventKind) *jobqueue.Event {
	ev := &jobqueue.Event{Kind: k, JobID: r.ID, Type: r.Type, Owner: r.Owner, Priority: r.Priority, State: r.State,
		Attempt: r.Attempts}
	switch k {
	case jobqueue.EventQueued:
		ev.Time = r.SubmittedAt
		ev.NextRunAt = r.NextRunAt
		ev.Attempt = 0
	case jobqueue.EventStarted:
		ev.Time = r.StartedAt
	case jobqueue.EventProgress:
		ev.Progress, ev.Message = r.Progress, r.ProgressMessage
	case jobqueue.EventRetrying:
		ev.Time, ev.NextRunAt, ev.Error = r.RetriedAt, r.NextRunAt, r.LastError
	default:
		ev.Time, ev.Error, ev.Result = r.FinishedAt, r.LastError, r.Result
		if k == jobqueue.EventSucceeded {
			ev.Error = ""
		}
	}
	return ev
}

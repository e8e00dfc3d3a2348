package jobqueue

import (
	"encoding/json"
	"fmt"
	"time"
)

// EventKind says what happened to a job. It encodes to JSON as its name.
type EventKind uint8

// Event kinds, in the order a job goes through them. Succeeded, Failed and
// Canceled are final: a job has exactly one final event.
const (
	EventQueued    EventKind = iota + 1 // stored, pending or scheduled
	EventStarted                        // an attempt began
	EventProgress                       // the handler called Progress
	EventRetrying                       // an attempt failed; another follows after a delay
	EventSucceeded                      // final: the handler returned a result
	EventFailed                         // final: no attempt left, or a permanent error
	EventCanceled                       // final: canceled by Cancel
)

var eventNames = [...]string{"", "queued", "started", "progress", "retrying", "succeeded", "failed", "canceled"}

// String returns the kind's name, as used in JSON.
func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", k)
}

// Final reports whether k is EventSucceeded, EventFailed or EventCanceled.
func (k EventKind) Final() bool { return k >= EventSucceeded && k <= EventCanceled }

// MarshalText encodes the kind as its name (the zero kind as "").
func (k EventKind) MarshalText() ([]byte, error) {
	if int(k) >= len(eventNames) {
		return nil, fmt.Errorf("jobqueue: invalid event kind %d", k)
	}
	return []byte(eventNames[k]), nil
}

// UnmarshalText decodes a kind name as produced by MarshalText.
func (k *EventKind) UnmarshalText(b []byte) error {
	for i, n := range eventNames {
		if string(b) == n {
			*k = EventKind(i)
			return nil
		}
	}
	return fmt.Errorf("jobqueue: unknown event kind %q", b)
}

// Event is one change of a job, as delivered to subscribers. Its JSON form
// (see MarshalJSON) is the one the WebSocket bridge sends: the kind under
// "type" and the job's type under "task_type".
type Event struct {
	Kind      EventKind       `json:"type"`                 // what happened
	JobID     string          `json:"job_id"`               // the job's ID
	Type      string          `json:"task_type"`            // the job's type
	Owner     string          `json:"owner,omitempty"`      // the job's owner (Job.Owner); empty for none
	Priority  Priority        `json:"priority"`             // the job's priority
	State     State           `json:"state"`                // the job's state after the event
	Attempt   int             `json:"attempt,omitempty"`    // attempt number for started and later events
	Progress  float64         `json:"progress,omitempty"`   // percent, for progress events
	Message   string          `json:"message,omitempty"`    // progress message
	Error     string          `json:"error,omitempty"`      // for retrying, failed and canceled events
	Result    json.RawMessage `json:"result,omitempty"`     // for succeeded events
	NextRunAt time.Time       `json:"next_run_at,omitzero"` // for queued (scheduled) and retrying events
	Time      time.Time       `json:"time"`                 // when it happened
}

// EventFilter selects the events of a Subscription. The zero value selects
// every event of every job.
type EventFilter struct {
	JobID string      `json:"job_id,omitempty"` // one job; empty: every job
	Type  string      `json:"type,omitempty"`   // one job type; empty: every type
	Owner string      `json:"owner,omitempty"`  // one owner's jobs; empty: every owner
	Kinds []EventKind `json:"kinds,omitempty"`  // these kinds; empty: every kind
	// Buffer is the subscription's channel capacity. Zero means
	// Config.SubscriberBuffer.
	Buffer int `json:"buffer,omitempty"`
}

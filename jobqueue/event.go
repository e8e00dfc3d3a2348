package jobqueue

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
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

// Event is one change of a job, as delivered to subscribers. It encodes to
// JSON ready to send to a browser.
type Event struct {
	Kind      EventKind       `json:"event"`                // what happened
	JobID     string          `json:"job_id"`               // the job's ID
	Type      string          `json:"type"`                 // the job's type
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
	Kinds []EventKind `json:"kinds,omitempty"`  // these kinds; empty: every kind
	// Buffer is the subscription's channel capacity. Zero means
	// Config.SubscriberBuffer.
	Buffer int `json:"buffer,omitempty"`
}

// Subscription delivers events to one reader through the channel returned
// by Events. Delivery never blocks a worker: when the channel is full,
// non-final events are dropped (and counted by Dropped), while final
// events wait in an overflow list of at most the channel's capacity, fed
// into the channel by a goroutine the subscription owns. If that overflow
// fills too, the subscription ends with ErrSlowSubscriber rather than drop a
// final event silently, so a reader either sees every final event or learns
// that it must resynchronize (with Queue.List). Memory is bounded by twice
// the buffer. Events of one job arrive in order.
type Subscription struct {
	q     *Queue
	jobID string
	typ   string
	kinds uint16 // bit per EventKind; zero: all

	ch       chan Event
	mu       sync.Mutex
	overflow []Event
	pumping  bool
	closed   bool
	err      error
	done     chan struct{}
	pumpDone chan struct{}
	dropped  atomic.Uint64
}

func newSubscription(q *Queue, f EventFilter, buffer int) *Subscription {
	if f.Buffer > 0 {
		buffer = f.Buffer
	}
	s := &Subscription{q: q, jobID: f.JobID, typ: f.Type, ch: make(chan Event, buffer), done: make(chan struct{})}
	for _, k := range f.Kinds {
		s.kinds |= 1 << k
	}
	return s
}

// Events returns the channel of events. It is closed when the subscription
// ends: by Close, by Queue.Shutdown, or by ErrSlowSubscriber (see Err).
func (s *Subscription) Events() <-chan Event { return s.ch }

// Dropped returns the number of non-final events dropped because the reader
// was behind.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Err returns why the subscription ended: nil while it runs or after Close,
// ErrClosed after Queue.Shutdown, ErrSlowSubscriber if final events could no
// longer be held.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription and closes its channel; events still in the
// channel remain readable. It waits for the subscription's goroutine and is
// idempotent.
func (s *Subscription) Close() error {
	s.mu.Lock()
	s.closeLocked(nil)
	pump := s.pumpDone
	s.mu.Unlock()
	if pump != nil {
		<-pump
	}
	s.q.removeSub(s)
	return nil
}

func (s *Subscription) match(ev *Event) bool {
	return (s.jobID == "" || s.jobID == ev.JobID) &&
		(s.typ == "" || s.typ == ev.Type) &&
		(s.kinds == 0 || s.kinds&(1<<ev.Kind) != 0)
}

// closeLocked marks the subscription closed. The channel is closed here, or
// by the pump goroutine when it is running (it is the only other sender).
func (s *Subscription) closeLocked(err error) {
	if s.closed {
		return
	}
	s.closed = true
	s.err = err
	s.overflow = nil
	close(s.done)
	if !s.pumping {
		close(s.ch)
	}
}

// deliver hands ev to the reader without blocking.
func (s *Subscription) deliver(ev *Event) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if len(s.overflow) == 0 {
		select {
		case s.ch <- *ev:
			s.mu.Unlock()
			return
		default:
		}
	}
	if !ev.Kind.Final() {
		s.dropped.Add(1)
		s.mu.Unlock()
		return
	}
	if len(s.overflow) >= cap(s.ch) {
		s.closeLocked(ErrSlowSubscriber)
		s.mu.Unlock()
		s.q.removeSub(s)
		return
	}
	s.overflow = append(s.overflow, *ev)
	if !s.pumping {
		s.pumping = true
		s.pumpDone = make(chan struct{})
		go s.pump(s.pumpDone)
	}
	s.mu.Unlock()
}

// pump moves overflowed final events into the channel as the reader makes
// room, and exits when the overflow is empty or the subscription closes.
func (s *Subscription) pump(exited chan struct{}) {
	defer close(exited)
	for {
		s.mu.Lock()
		if s.closed || len(s.overflow) == 0 {
			s.pumping = false
			if s.closed {
				close(s.ch)
			}
			s.mu.Unlock()
			return
		}
		ev := s.overflow[0]
		s.mu.Unlock()
		select {
		case s.ch <- ev:
			s.mu.Lock()
			if !s.closed {
				s.overflow[0] = Event{}
				s.overflow = s.overflow[1:]
			}
			s.mu.Unlock()
		case <-s.done:
		}
	}
}

// end is called by Shutdown: it waits (until ctx ends) for overflowed final
// events to reach the channel, then closes the subscription with ErrClosed.
func (s *Subscription) end(ctxDone <-chan struct{}) {
	s.mu.Lock()
	pump := s.pumpDone
	pumping := s.pumping
	s.mu.Unlock()
	if pumping {
		select {
		case <-pump:
		case <-ctxDone:
		}
	}
	s.mu.Lock()
	s.closeLocked(ErrClosed)
	pump = s.pumpDone
	s.mu.Unlock()
	if pump != nil {
		<-pump
	}
}

package jobqueue

import (
	"sync"
	"sync/atomic"
)

// Subscribe returns a subscription to the events selected by f. Close it
// when done. After Shutdown it returns a subscription already ended with
// ErrClosed. Publishing costs nothing while no one subscribes; with
// subscribers, each event costs a filter check and a non-blocking channel
// send per subscriber. To follow one job without a gap, subscribe first,
// then Get it: an event may repeat what Get showed, but none is missed.
func (q *Queue) Subscribe(f EventFilter) *Subscription {
	s := newSubscription(q, f, q.cfg.SubscriberBuffer)
	q.subMu.Lock()
	defer q.subMu.Unlock()
	select {
	case <-q.finalDone:
		s.mu.Lock()
		s.closeLocked(ErrClosed)
		s.mu.Unlock()
		return s
	default:
	}
	var n []*Subscription
	if old := q.subs.Load(); old != nil {
		n = append(n, *old...)
	}
	n = append(n, s)
	q.subs.Store(&n)
	return s
}

func (q *Queue) removeSub(s *Subscription) {
	q.subMu.Lock()
	defer q.subMu.Unlock()
	old := q.subs.Load()
	if old == nil {
		return
	}
	n := make([]*Subscription, 0, len(*old))
	for _, x := range *old {
		if x != s {
			n = append(n, x)
		}
	}
	q.subs.Store(&n)
}

// listening reports whether an event needs to be built: someone subscribes,
// or (for final events) someone waits.
func (q *Queue) listening(final bool) bool {
	if s := q.subs.Load(); s != nil && len(*s) > 0 {
		return true
	}
	return final && q.nwaiters.Load() > 0
}

// publish hands ev to the matching subscribers and, if final, to waiters.
func (q *Queue) publish(ev *Event) {
	if s := q.subs.Load(); s != nil {
		for _, sub := range *s {
			if sub.match(ev) {
				sub.deliver(ev)
			}
		}
	}
	if ev.Kind.Final() && q.nwaiters.Load() > 0 {
		q.waitMu.Lock()
		chs := q.waiters[ev.JobID]
		delete(q.waiters, ev.JobID)
		q.waitMu.Unlock()
		for _, ch := range chs {
			ch <- *ev // buffered, one slot per waiter
		}
	}
}

// publishRemote is the Hooks.Publish of shared backends.
func (q *Queue) publishRemote(ev Event) { q.publish(&ev) }

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
	owner string
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
	s := &Subscription{q: q, jobID: f.JobID, typ: f.Type, owner: f.Owner, ch: make(chan Event, buffer), done: make(chan struct{})}
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
		(s.owner == "" || s.owner == ev.Owner) &&
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

package wsbridge

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/corework/corework/jobqueue"
)

// router receives every event of the queue through one subscription and
// hands each to the connections watching its job, or watching all the jobs
// their principal may see (an operator's: all; anyone else's: their
// own). An event is encoded once, whatever the number of its watchers, and
// queued to them without blocking: a watcher whose send queue is full is
// closed as a slow consumer, the others are not delayed. It also ends the
// tally of anonymous jobs (groups.finished) at their final event.
//
// Final events are routed under the write lock and end the watches of
// their job, so that a connection gets exactly one final event per watched
// job even when it also reads the job's final state with Get (see
// deliverFinal).
type router struct {
	s *Server

	mu      sync.RWMutex
	jobs    map[string][]*conn            // watchers of one job
	ops     map[*conn]struct{}            // operators watching every job
	byOwner map[string]map[*conn]struct{} // others watching all their jobs, by principal

	subMu    sync.Mutex
	sub      *jobqueue.Subscription
	stopped  bool
	dropBase atomic.Uint64 // events dropped by earlier subscriptions
}

func (r *router) init(s *Server) {
	r.s = s
	r.jobs = make(map[string][]*conn)
	r.ops = make(map[*conn]struct{})
	r.byOwner = make(map[string]map[*conn]struct{})
	r.sub = s.q.Subscribe(jobqueue.EventFilter{Buffer: s.cfg.EventBuffer})
}

// dropped returns the non-final events the queue dropped for the router.
func (r *router) dropped() uint64 {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	return r.dropBase.Load() + r.sub.Dropped()
}

// stop ends the subscription; run then returns.
func (r *router) stop() {
	r.subMu.Lock()
	r.stopped = true
	sub := r.sub
	r.subMu.Unlock()
	sub.Close()
}

// run routes events until the subscription ends. If it ends because the
// router fell behind (jobqueue.ErrSlowSubscriber), run subscribes again and
// resynchronizes: watched jobs that finished meanwhile get their final event
// from their snapshot, and connections watching every job get an `error`
// message with CodeEventsLost.
func (r *router) run() {
	defer r.s.bg.Done()
	for {
		r.subMu.Lock()
		sub := r.sub
		r.subMu.Unlock()
		for ev := range sub.Events() {
			r.dispatch(&ev)
		}
		if !errors.Is(sub.Err(), jobqueue.ErrSlowSubscriber) {
			return
		}
		r.subMu.Lock()
		if r.stopped {
			r.subMu.Unlock()
			return
		}
		r.dropBase.Add(sub.Dropped())
		r.sub = r.s.q.Subscribe(jobqueue.EventFilter{Buffer: r.s.cfg.EventBuffer})
		r.subMu.Unlock()
		r.s.st.eventsLost.Add(1)
		if r.s.logs(slog.LevelWarn) {
			r.s.log(slog.LevelWarn, "wsbridge: event subscription broke; resynchronizing",
				slog.Any("err", sub.Err()), slog.Uint64("dropped", sub.Dropped()))
		}
		r.resync()
	}
}

// dispatch queues ev to its watchers.
func (r *router) dispatch(ev *jobqueue.Event) {
	final := ev.Kind.Final()
	if strings.HasPrefix(ev.Owner, AnonymousPrefix) {
		switch {
		case final:
			r.s.groups.finished(ev.JobID)
		case ev.Kind == jobqueue.EventStarted:
			r.s.groups.started(ev.JobID)
		}
	}
	if final {
		r.mu.Lock()
		defer r.mu.Unlock()
	} else {
		r.mu.RLock()
		defer r.mu.RUnlock()
	}
	watchers := r.jobs[ev.JobID]
	var msg []byte // encoded once, when a live watcher needs it
	for c := range r.ops {
		msg = r.sendEvent(c, ev, msg)
	}
	if len(r.byOwner) > 0 {
		for c := range r.byOwner[ev.Owner] {
			msg = r.sendEvent(c, ev, msg)
		}
	}
	for _, c := range watchers {
		if !c.watchAll {
			msg = r.sendEvent(c, ev, msg)
		}
	}
	if final && len(watchers) > 0 {
		for _, c := range watchers {
			delete(c.watching, ev.JobID)
			c.g.releaseWatch()
		}
		delete(r.jobs, ev.JobID)
	}
}

// sendEvent queues ev to c unless c is closing, encoding it into msg first
// if it is not yet; it returns msg. A connection being closed (a slow
// consumer waiting for its socket, say) costs no encoding.
func (r *router) sendEvent(c *conn, ev *jobqueue.Event, msg []byte) []byte {
	if c.closing.Load() {
		return msg
	}
	if msg == nil {
		msg = encodeEvent(ev)
	}
	c.send(msg)
	return msg
}

// watch makes c watch job id, with a watch of c's group that the caller
// reserved. It returns false if c watches the job already: the caller then
// returns the reservation.
func (r *router) watch(c *conn, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := c.watching[id]; ok {
		return false
	}
	if c.watching == nil {
		c.watching = make(map[string]struct{})
	}
	c.watching[id] = struct{}{}
	r.jobs[id] = append(r.jobs[id], c)
	return true
}

// unwatch ends c's watch of job id.
func (r *router) unwatch(c *conn, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unwatchLocked(c, id)
}

func (r *router) unwatchLocked(c *conn, id string) {
	if _, ok := c.watching[id]; !ok {
		return
	}
	delete(c.watching, id)
	c.g.releaseWatch()
	ws := r.jobs[id]
	for i, x := range ws {
		if x == c {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(r.jobs, id)
	} else {
		r.jobs[id] = ws
	}
}

// forget ends c's watch of job id and reports whether c was watching it.
func (r *router) forget(c *conn, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := c.watching[id]
	r.unwatchLocked(c, id)
	return ok
}

// setAll turns c's watch of every job it may see on or off.
func (r *router) setAll(c *conn, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setAllLocked(c, on)
}

func (r *router) setAllLocked(c *conn, on bool) {
	c.watchAll = on
	if c.p.Operator {
		if on {
			r.ops[c] = struct{}{}
		} else {
			delete(r.ops, c)
		}
		return
	}
	mine := r.byOwner[c.p.Name]
	if on {
		if mine == nil {
			mine = make(map[*conn]struct{})
			r.byOwner[c.p.Name] = mine
		}
		mine[c] = struct{}{}
	} else if mine != nil {
		delete(mine, c)
		if len(mine) == 0 {
			delete(r.byOwner, c.p.Name)
		}
	}
}

// deliverFinal sends the final event built from info to c if c still
// watches the job, and ends the watch. It closes the gap between a job's
// final event, which the router may route before c starts watching, and
// the watch: callers watch first, then Get the job, then call deliverFinal
// if it is final. Whichever of the router and deliverFinal comes first
// sends the final event; the other finds no watch.
func (r *router) deliverFinal(c *conn, info *jobqueue.JobInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := c.watching[info.ID]; !ok {
		return
	}
	r.unwatchLocked(c, info.ID)
	ev := finalEvent(info)
	c.send(encodeEvent(&ev))
}

// dropConn ends every watch of c.
func (r *router) dropConn(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range c.watching {
		r.unwatchLocked(c, id)
	}
	r.setAllLocked(c, false)
}

// resync is run after a new subscription replaced one that broke: final
// events may have been lost.
func (r *router) resync() {
	r.mu.RLock()
	ids := make([]string, 0, len(r.jobs))
	for id := range r.jobs {
		ids = append(ids, id)
	}
	all := make([]*conn, 0, len(r.ops))
	for c := range r.ops {
		all = append(all, c)
	}
	for _, cs := range r.byOwner {
		for c := range cs {
			all = append(all, c)
		}
	}
	r.mu.RUnlock()
	for _, id := range r.s.groups.talliedIDs() {
		if info, err := r.s.q.Get(r.s.ctx, id); errors.Is(err, jobqueue.ErrNotFound) || (err == nil && info.State.Final()) {
			r.s.groups.finished(id)
		}
	}
	lost := encode(errorMsg{Type: msgError, Code: CodeEventsLost,
		Message: "the server fell behind the queue and lost events; list_jobs to resynchronize"})
	for _, c := range all {
		c.send(lost)
	}
	for _, id := range ids {
		info, err := r.s.q.Get(r.s.ctx, id)
		if err != nil || !info.State.Final() {
			continue
		}
		r.mu.RLock()
		watchers := append([]*conn(nil), r.jobs[id]...)
		r.mu.RUnlock()
		for _, c := range watchers {
			r.deliverFinal(c, &info)
		}
	}
}

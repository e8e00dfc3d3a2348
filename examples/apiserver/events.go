package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
)

// sseWriteTimeout bounds each write to an event stream, so a client that
// stops reading cannot hold its handler forever. An event stream is
// exempt from the http.Server's WriteTimeout and ReadTimeout, which bound
// a whole request: its heartbeat keeps it alive, this deadline cuts off a
// reader that stops reading, and the caps of streamCaps bound how many are
// open.
const sseWriteTimeout = 10 * time.Second

// streamCaps counts the open event streams, per principal and in total.
type streamCaps struct {
	perPrincipal, total int // the caps; positive

	mu      sync.Mutex
	open    map[string]int // by principal name; no zero entries
	n       int            // open streams
	refused int64          // streams refused by a cap
}

// acquire takes a stream for name and returns "", or returns why it
// cannot (a cap is reached), for the message of the 503.
func (c *streamCaps) acquire(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.open[name] >= c.perPrincipal:
		c.refused++
		return fmt.Sprintf("you have %d event streams open, the most allowed; close one or poll", c.open[name])
	case c.n >= c.total:
		c.refused++
		return fmt.Sprintf("the server has %d event streams open, the most allowed; retry later or poll", c.n)
	}
	c.open[name]++
	c.n++
	return ""
}

func (c *streamCaps) release(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[name]--; c.open[name] <= 0 {
		delete(c.open, name)
	}
	c.n--
}

// streamStats is the "streams" object of GET /stats.
type streamStats struct {
	Open    int   `json:"open"`
	Refused int64 `json:"refused"`
}

func (c *streamCaps) stats() streamStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return streamStats{Open: c.n, Refused: c.refused}
}

// jobEvents streams one job's events as server-sent events:
//
//	event: progress
//	data: {"event":"progress","job_id":"...","progress":40,...}
//
// It first replays the job's current state as events (queued, then its
// latest start, progress, retry or end, as far as the job got), then
// follows the live events and ends after the final one. It also ends when
// the client goes away or the server shuts down; a comment line every
// heartbeat keeps an idle stream open through proxies.
//
// Someone else's job is a 404, as in getJob. A principal with
// serverConfig.MaxStreams streams open, or a server with MaxStreamsTotal,
// gets 503 with Retry-After.
func (s *server) jobEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx := r.Context()
	p := principal(r)
	if why := s.streams.acquire(p.Name); why != "" {
		w.Header().Set("Retry-After", streamRetryAfter)
		writeError(w, http.StatusServiceUnavailable, "too_many_streams", why)
		return
	}
	defer s.streams.release(p.Name)
	// Subscribe first, then read the job: an event may repeat what the
	// snapshot showed (the gate drops those), but none is missed.
	sub := s.q.Subscribe(jobqueue.EventFilter{JobID: id, Buffer: 256})
	defer sub.Close()
	info, err := s.q.Get(ctx, id)
	if err == nil && !access.Sees(p, info.Owner) {
		err = jobqueue.ErrNotFound
	}
	if err != nil {
		writeQueueError(w, err)
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	rc := http.NewResponseController(w)
	// Lift the http.Server's ReadTimeout (which would end the request's
	// context) and WriteTimeout (which would fail the writes) for this
	// stream: each write below sets its own deadline. The errors are
	// ignored: a writer without deadlines (httptest) keeps the server's.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	w.WriteHeader(http.StatusOK)
	sse := &sseWriter{w: w, rc: rc}

	for _, ev := range replay(info) {
		sse.event(ev.Kind.String(), ev)
	}
	if err := sse.flush(); err != nil || info.State.Final() {
		return
	}

	g := gate{info: info}
	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				s.streamEnded(ctx, sse, id, sub.Err())
				return
			}
			if g.skip(ev) {
				continue
			}
			sse.event(ev.Kind.String(), ev)
			if err := sse.flush(); err != nil || ev.Kind.Final() {
				return
			}
		case <-heartbeat.C:
			io.WriteString(sse, ": keep-alive\n\n")
			if sse.flush() != nil {
				return
			}
		case <-s.closing:
			sse.event("error", errorBody("closed", "the server is shutting down"))
			sse.flush()
			return
		case <-ctx.Done():
			return
		}
	}
}

// streamEnded writes the end of a stream whose subscription ended before
// the job's final event: the final event if the job has ended meanwhile,
// an error event otherwise.
func (s *server) streamEnded(ctx context.Context, sse *sseWriter, id string, cause error) {
	if info, err := s.q.Get(ctx, id); err == nil && info.State.Final() {
		evs := replay(info)
		sse.event(info.State.String(), evs[len(evs)-1])
	} else {
		sse.event("error", errorBody("stream_ended", fmt.Sprintf("event stream ended: %v; poll /jobs/%s", cause, id)))
	}
	sse.flush()
}

func errorBody(code, msg string) apiError {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	return e
}

// sseWriter writes server-sent events. After a failed write it writes
// nothing more and flush reports the error.
type sseWriter struct {
	w   io.Writer
	rc  *http.ResponseController
	err error
}

func (s *sseWriter) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	s.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	n, err := s.w.Write(b)
	s.err = err
	return n, err
}

// event writes one event named name whose data is v as JSON (one line:
// encoding/json escapes newlines inside strings).
func (s *sseWriter) event(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(errorBody("internal", err.Error()))
		name = "error"
	}
	fmt.Fprintf(s, "event: %s\ndata: %s\n\n", name, b)
}

func (s *sseWriter) flush() error {
	if s.err == nil {
		s.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		s.err = s.rc.Flush()
	}
	return s.err
}

// replay returns the events that lead to info's state, as far as a
// snapshot tells them: queued, then for a job that has started its latest
// start, and its last progress while it runs, its retry while it waits for
// one, or its final event.
func replay(info jobqueue.JobInfo) []jobqueue.Event {
	base := jobqueue.Event{JobID: info.ID, Type: info.Type, Owner: info.Owner, Priority: info.Priority, Attempt: info.Attempts}
	queued := base
	queued.Kind, queued.State, queued.Time, queued.Attempt = jobqueue.EventQueued, jobqueue.StatePending, info.SubmittedAt, 0
	if info.State == jobqueue.StateScheduled {
		queued.State, queued.NextRunAt = jobqueue.StateScheduled, info.NextRunAt
	}
	evs := []jobqueue.Event{queued}
	if info.Attempts > 0 {
		started := base
		started.Kind, started.State, started.Time = jobqueue.EventStarted, jobqueue.StateRunning, info.StartedAt
		evs = append(evs, started)
	}
	switch info.State {
	case jobqueue.StateRunning:
		if info.Progress > 0 || info.ProgressMessage != "" {
			p := base
			p.Kind, p.State, p.Time = jobqueue.EventProgress, jobqueue.StateRunning, info.StartedAt
			p.Progress, p.Message = info.Progress, info.ProgressMessage
			evs = append(evs, p)
		}
	case jobqueue.StateRetrying, jobqueue.StatePending:
		if info.Attempts > 0 {
			rt := base
			rt.Kind, rt.State, rt.Time = jobqueue.EventRetrying, info.State, info.RetriedAt
			rt.Error, rt.NextRunAt = info.LastError, info.NextRunAt
			evs = append(evs, rt)
		}
	case jobqueue.StateSucceeded, jobqueue.StateFailed, jobqueue.StateCanceled:
		end := base
		end.State, end.Time = info.State, info.FinishedAt
		switch info.State {
		case jobqueue.StateSucceeded:
			end.Kind, end.Result = jobqueue.EventSucceeded, info.Result
		case jobqueue.StateFailed:
			end.Kind, end.Error = jobqueue.EventFailed, info.LastError
		default:
			end.Kind, end.Error = jobqueue.EventCanceled, info.LastError
		}
		evs = append(evs, end)
	}
	return evs
}

// gate drops the live events that the replayed snapshot already showed.
// The subscription began before the snapshot was read and a job's events
// arrive in order, so the live stream is the snapshot's past followed by
// its future: the gate stays shut while events belong to the past and
// opens for good at the first one that does not. Progress within one
// attempt is taken to grow, as the handlers here report it.
type gate struct {
	info jobqueue.JobInfo
	open bool
}

func (g *gate) skip(ev jobqueue.Event) bool {
	if g.open {
		return false
	}
	s := &g.info
	past := false
	switch ev.Kind {
	case jobqueue.EventQueued:
		past = true
	case jobqueue.EventStarted:
		past = ev.Attempt <= s.Attempts
	case jobqueue.EventProgress:
		switch {
		case ev.Attempt < s.Attempts, ev.Attempt == s.Attempts && s.State != jobqueue.StateRunning:
			past = true
		case ev.Attempt == s.Attempts && ev.Progress == s.Progress && ev.Message == s.ProgressMessage:
			g.open = true // the snapshot's own progress: what follows is new
			return true
		case ev.Attempt == s.Attempts:
			past = ev.Progress < s.Progress
		}
	case jobqueue.EventRetrying:
		past = ev.Attempt < s.Attempts || ev.Attempt == s.Attempts && s.State != jobqueue.StateRunning
	}
	if !past {
		g.open = true
	}
	return past
}

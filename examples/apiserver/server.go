package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
)

// Defaults of serverConfig.
const (
	defaultMaxBody   = 64 << 10
	defaultHeartbeat = 15 * time.Second
	defaultListLimit = 100
	maxListLimit     = 1000
	cancelWait       = time.Second
)

// serverConfig configures newServer. The zero value of each field is noted.
type serverConfig struct {
	// MaxBody bounds a request body in bytes; a bigger one gets 413.
	// Zero means 64 KiB.
	MaxBody int64
	// Heartbeat is the period of the comment lines that keep an idle
	// event stream open through proxies. Zero means 15 seconds.
	Heartbeat time.Duration
	// WS configures the WebSocket bridge mounted on /ws.
	WS wsbridge.Config
}

// server is the REST API in front of a queue. It is an http.Handler; its
// goroutines (the WebSocket bridge's, and one per event stream while a
// client reads it) stop with shutdown.
type server struct {
	q         *jobqueue.Queue
	ws        *wsbridge.Server
	mux       *http.ServeMux
	maxBody   int64
	heartbeat time.Duration

	closing   chan struct{} // closed by shutdown: event streams end
	closeOnce sync.Once
}

// newServer returns the API for q. It starts the WebSocket bridge's
// goroutines; call shutdown to stop them. It does not own q: shut q down
// after the server.
func newServer(q *jobqueue.Queue, cfg serverConfig) *server {
	s := &server{
		q:         q,
		mux:       http.NewServeMux(),
		maxBody:   cfg.MaxBody,
		heartbeat: cfg.Heartbeat,
		closing:   make(chan struct{}),
	}
	if s.maxBody <= 0 {
		s.maxBody = defaultMaxBody
	}
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}
	s.ws = wsbridge.New(q, cfg.WS)
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("POST /jobs", s.createJob)
	s.mux.HandleFunc("GET /jobs", s.listJobs)
	s.mux.HandleFunc("GET /jobs/{id}", s.getJob)
	s.mux.HandleFunc("DELETE /jobs/{id}", s.cancelJob)
	s.mux.HandleFunc("GET /jobs/{id}/events", s.jobEvents)
	s.mux.HandleFunc("GET /stats", s.stats)
	s.mux.Handle("GET /ws", s.ws)
	return s
}

// ServeHTTP routes r. Requests no route matches get the mux's status (404,
// or 405 with its Allow header) with a JSON error body.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		w = &jsonErrorWriter{ResponseWriter: w}
	}
	s.mux.ServeHTTP(w, r)
}

// shutdown ends the event streams and stops the WebSocket bridge (its
// clients get a going-away close frame). Call it before http.Server's
// Shutdown, which waits for the streams and does not see WebSocket
// connections. It is idempotent.
func (s *server) shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closing) })
	return s.ws.Shutdown(ctx)
}

// jsonErrorWriter turns the mux's plain-text 404 and 405 answers into JSON
// errors and passes every other answer (redirects to a clean path) through.
type jsonErrorWriter struct {
	http.ResponseWriter
	swallow bool
}

func (w *jsonErrorWriter) WriteHeader(code int) {
	switch code {
	case http.StatusNotFound:
		w.swallow = true
		writeError(w.ResponseWriter, code, "not_found", "no such route")
	case http.StatusMethodNotAllowed:
		w.swallow = true
		writeError(w.ResponseWriter, code, "method_not_allowed",
			"method not allowed; allowed: "+w.Header().Get("Allow"))
	default:
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *jsonErrorWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// apiError is the body of every error response:
// {"error":{"code":"...","message":"..."}}.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	b, _ := json.Marshal(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeQueueError maps an error of the queue to its status code.
func writeQueueError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, jobqueue.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no such job")
	case errors.Is(err, jobqueue.ErrFinished):
		writeError(w, http.StatusConflict, "finished", "the job has already finished")
	case errors.Is(err, jobqueue.ErrNoHandler):
		writeError(w, http.StatusUnprocessableEntity, "unknown_type", err.Error())
	case errors.Is(err, jobqueue.ErrInvalidJob):
		writeError(w, http.StatusBadRequest, "invalid_job", err.Error())
	case errors.Is(err, jobqueue.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "queue_full", "the queue is full; retry later")
	case errors.Is(err, jobqueue.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "closed", "the server is shutting down")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "timeout", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"endpoints": []string{
			"POST /jobs", "GET /jobs", "GET /jobs/{id}", "DELETE /jobs/{id}",
			"GET /jobs/{id}/events", "GET /stats", "GET /ws",
		},
		"types": jobTypes,
	})
}

// createRequest is the body of POST /jobs.
type createRequest struct {
	Type        string          `json:"type"`
	Payload     json.RawMessage `json:"payload"`
	Priority    priority        `json:"priority"`
	Timeout     duration        `json:"timeout"`
	MaxAttempts int             `json:"max_attempts"`
	UniqueKey   string          `json:"unique_key"`
}

// priority is a job priority in a request: a level 0-9 or a name (low,
// normal, high, critical).
type priority jobqueue.Priority

func (p *priority) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var name string
	if json.Unmarshal(b, &name) == nil {
		switch strings.ToLower(name) {
		case "low":
			*p = priority(jobqueue.Low)
		case "normal":
			*p = priority(jobqueue.Normal)
		case "high":
			*p = priority(jobqueue.High)
		case "critical":
			*p = priority(jobqueue.Critical)
		default:
			return fmt.Errorf("priority %q: want 0-9, low, normal, high or critical", name)
		}
		return nil
	}
	n, err := strconv.Atoi(string(b))
	if err != nil || !jobqueue.Priority(n).Valid() {
		return fmt.Errorf("priority %s: want 0-9, low, normal, high or critical", b)
	}
	*p = priority(n)
	return nil
}

// duration is a time.Duration written as a string ("30s", "1m30s").
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timeout %s: want a duration string such as \"30s\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("timeout %q: want a positive duration such as \"30s\"", s)
	}
	*d = duration(v)
	return nil
}

// createResponse is the body of a 202 answer to POST /jobs.
type createResponse struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Events string `json:"events"`
}

func (s *server) createJob(w http.ResponseWriter, r *http.Request) {
	if !isJSON(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return
	}
	var req createRequest
	if status, code, msg := decodeJSON(w, r, s.maxBody, &req); status != 0 {
		writeError(w, status, code, msg)
		return
	}
	switch {
	case req.Type == "":
		writeError(w, http.StatusBadRequest, "bad_request", "type is required")
		return
	case req.MaxAttempts < 0:
		writeError(w, http.StatusBadRequest, "bad_request", "max_attempts must not be negative")
		return
	}
	id, err := s.q.Submit(r.Context(), jobqueue.JobRequest{
		Type:        req.Type,
		Payload:     req.Payload,
		Priority:    jobqueue.Priority(req.Priority),
		Timeout:     time.Duration(req.Timeout),
		MaxAttempts: req.MaxAttempts,
		UniqueKey:   req.UniqueKey,
	})
	if err != nil {
		writeQueueError(w, err)
		return
	}
	loc := "/jobs/" + id
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusAccepted, createResponse{ID: id, URL: loc, Events: loc + "/events"})
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// decodeJSON decodes r's body, at most limit bytes, into v: one JSON
// object with known fields only and nothing after it. It returns a zero
// status on success, or the status, code and message of the error.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) (status int, code, msg string) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// One object only: what follows may be whitespace, nothing else.
		var extra json.RawMessage
		if err = dec.Decode(&extra); err == io.EOF {
			return 0, "", ""
		} else if !isTooBig(err) {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body exceeds %d bytes", tooBig.Limit)
	case err == io.EOF:
		return http.StatusBadRequest, "bad_json", "the body is empty"
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, "bad_json", "malformed JSON: " + err.Error()
	case errors.As(err, &typ) && typ.Field == "":
		return http.StatusBadRequest, "bad_request", "the body must be a JSON object"
	case errors.As(err, &typ):
		return http.StatusBadRequest, "bad_request", fmt.Sprintf("%s: a JSON %s is not allowed here", typ.Field, typ.Value)
	default:
		return http.StatusBadRequest, "bad_request", strings.TrimPrefix(err.Error(), "json: ")
	}
}

func isTooBig(err error) bool {
	var tooBig *http.MaxBytesError
	return errors.As(err, &tooBig)
}

func (s *server) getJob(w http.ResponseWriter, r *http.Request) {
	info, err := s.q.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeQueueError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// cancelJob cancels a job. A pending job is canceled at once; a running
// one when its handler returns, which cancelJob waits for up to a second
// so that the answer usually shows the final state.
func (s *server) cancelJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx := r.Context()
	if err := s.q.Cancel(ctx, id); err != nil {
		writeQueueError(w, err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, cancelWait)
	info, err := s.q.Wait(wctx, id)
	cancel()
	if err != nil && !info.State.Final() {
		if info, err = s.q.Get(ctx, id); err != nil {
			writeQueueError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, info)
}

// listResponse is the body of GET /jobs.
type listResponse struct {
	Jobs []jobqueue.JobInfo `json:"jobs"`
}

func (s *server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := jobqueue.ListFilter{Type: q.Get("type"), Limit: defaultListLimit}
	if v := q.Get("state"); v != "" {
		if err := f.State.UnmarshalText([]byte(v)); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("state %q: want pending, scheduled, running, retrying, succeeded, failed or canceled", v))
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit %q: want 1-%d", v, maxListLimit))
			return
		}
		f.Limit = n
	}
	jobs, err := s.q.List(r.Context(), f)
	if err != nil {
		writeQueueError(w, err)
		return
	}
	if jobs == nil {
		jobs = []jobqueue.JobInfo{}
	}
	writeJSON(w, http.StatusOK, listResponse{Jobs: jobs})
}

// statsResponse is the body of GET /stats.
type statsResponse struct {
	Queue     jobqueue.Stats `json:"queue"`
	WebSocket wsbridge.Stats `json:"websocket"`
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, statsResponse{Queue: s.q.Stats(), WebSocket: s.ws.Stats()})
}

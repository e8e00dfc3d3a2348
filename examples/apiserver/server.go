package main

import (
	"bytes"
	"cmp"
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

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
)

// Defaults of serverConfig.
const (
	defaultMaxBody         = 64 << 10
	defaultHeartbeat       = 15 * time.Second
	defaultListLimit       = 100
	maxListLimit           = 1000
	defaultListBytes       = 1 << 20
	defaultMaxActive       = wsbridge.DefaultMaxActive // 1000
	defaultMaxPayloadBytes = wsbridge.DefaultMaxBytes  // 16 MiB
	defaultMaxStreams      = 16
	defaultMaxStreamsTotal = 256
	cancelWait             = time.Second
	// quotaRetryAfter is the Retry-After, in seconds, of a 429 for a
	// quota: a guess, since the server cannot know when the principal's
	// jobs end.
	quotaRetryAfter = "5"
	// streamRetryAfter is the Retry-After, in seconds, of a 503 for the
	// event stream caps.
	streamRetryAfter = "5"
)

// serverConfig configures newServer. The zero value of each field is noted.
type serverConfig struct {
	// MaxBody bounds a request body in bytes; a bigger one gets 413.
	// Zero means 64 KiB.
	MaxBody int64
	// Heartbeat is the period of the comment lines that keep an idle
	// event stream open through proxies. Zero means 15 seconds.
	Heartbeat time.Duration
	// Tokens maps bearer tokens to principals (see access.LoadTokens).
	// With tokens, every request but those of /ws needs one (401
	// otherwise), and so does /ws. Nil means every request is
	// access.Local: run so on loopback only (access.CheckListen).
	Tokens map[string]wsbridge.Principal
	// MaxActive bounds the active jobs (pending, running, retrying) of one
	// principal, over REST and the WebSocket together; a submission over
	// it gets 429. Operators have no job quota, as in the bridge. Zero
	// means 1000; negative means no limit.
	MaxActive int
	// MaxPayloadBytes bounds the payload bytes of one principal's active
	// jobs, as MaxActive. Zero means 16 MiB; negative means no limit.
	MaxPayloadBytes int64
	// MaxStreams bounds the event streams (GET /jobs/{id}/events) one
	// principal has open; one more gets 503 with Retry-After. Zero means
	// 16.
	MaxStreams int
	// MaxStreamsTotal bounds the event streams open on the server, as
	// MaxStreams. Zero means 256.
	MaxStreamsTotal int
	// ListBytes bounds the bytes of a GET /jobs page: a page ends before
	// the job that would take it past ListBytes, with a next_cursor to
	// read on (a page holds at least one job). Zero means 1 MiB.
	ListBytes int
	// WS configures the WebSocket bridge mounted on /ws. newServer sets
	// its Authenticate (the tokens above, or access.Local without) and the
	// MaxActive and MaxBytes of its Quota (from the fields above).
	WS wsbridge.Config
}

// server is the REST API in front of a queue. It is an http.Handler; its
// goroutines (the WebSocket bridge's, and one per event stream while a
// client reads it) stop with shutdown.
type server struct {
	q         *jobqueue.Queue
	ws        *wsbridge.Server
	mux       *http.ServeMux
	guarded   http.Handler // mux behind the guard
	maxBody   int64
	heartbeat time.Duration
	listBytes int
	quota     jobqueue.Quota // of a principal that is not an operator

	streams streamCaps

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
		listBytes: cfg.ListBytes,
		quota: jobqueue.Quota{
			MaxActive: limitOr(cfg.MaxActive, defaultMaxActive),
			MaxBytes:  limitOr(cfg.MaxPayloadBytes, defaultMaxPayloadBytes),
		},
		streams: streamCaps{
			perPrincipal: cfg.MaxStreams,
			total:        cfg.MaxStreamsTotal,
			open:         make(map[string]int),
		},
		closing: make(chan struct{}),
	}
	if s.maxBody <= 0 {
		s.maxBody = defaultMaxBody
	}
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}
	if s.listBytes <= 0 {
		s.listBytes = defaultListBytes
	}
	if s.streams.perPrincipal <= 0 {
		s.streams.perPrincipal = defaultMaxStreams
	}
	if s.streams.total <= 0 {
		s.streams.total = defaultMaxStreamsTotal
	}
	guard := access.NewGuard(cfg.Tokens)
	ws := cfg.WS
	ws.Authenticate = guard.Authenticate
	// The bridge's Quota says "no limit" with a negative field, the
	// queue's with a zero one.
	ws.Quota.MaxActive = cmp.Or(s.quota.MaxActive, -1)
	ws.Quota.MaxBytes = cmp.Or(s.quota.MaxBytes, -1)
	s.ws = wsbridge.New(q, ws)
	s.guarded = guard.Wrap(http.HandlerFunc(s.route))
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

// limitOr resolves a limit of serverConfig into a jobqueue.Quota field:
// zero means def, negative means no limit (zero in a Quota).
func limitOr[T int | int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// ServeHTTP authenticates r and routes it. The WebSocket bridge on /ws
// authenticates its upgrades itself, with the same tokens; every other
// request without a valid token gets 401, whether or not a route matches
// it, so that routes are not probed without one.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "GET /ws" {
		s.ws.ServeHTTP(w, r)
		return
	}
	s.guarded.ServeHTTP(w, r)
}

// route routes an authenticated request. Requests no route matches get the
// mux's status (404, or 405 with its Allow header) with a JSON error body.
func (s *server) route(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		w = &jsonErrorWriter{ResponseWriter: w}
	}
	s.mux.ServeHTTP(w, r)
}

// principal returns the principal the guard put in r's context.
func principal(r *http.Request) wsbridge.Principal {
	p, ok := access.From(r.Context())
	if !ok {
		panic("apiserver: a request reached a handler without a principal")
	}
	return p
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
	case errors.Is(err, jobqueue.ErrQuotaExceeded):
		w.Header().Set("Retry-After", quotaRetryAfter)
		writeError(w, http.StatusTooManyRequests, "quota_exceeded", err.Error())
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
	p := principal(r)
	jr := jobqueue.JobRequest{
		Type:        req.Type,
		Owner:       p.Name,
		Payload:     req.Payload,
		Priority:    jobqueue.Priority(req.Priority),
		Timeout:     time.Duration(req.Timeout),
		MaxAttempts: req.MaxAttempts,
		UniqueKey:   req.UniqueKey,
	}
	if !p.Operator {
		jr.Quota = s.quota
	}
	id, err := s.q.Submit(r.Context(), jr)
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

// getVisible returns the job id if r's principal may see it, and an error
// wrapping jobqueue.ErrNotFound if it may not: someone else's job is
// answered as an unknown one, so that its ID tells nothing.
func (s *server) getVisible(r *http.Request, id string) (jobqueue.JobInfo, error) {
	info, err := s.q.Get(r.Context(), id)
	if err != nil {
		return info, err
	}
	if !access.Sees(principal(r), info.Owner) {
		return jobqueue.JobInfo{}, fmt.Errorf("job %s: %w", id, jobqueue.ErrNotFound)
	}
	return info, nil
}

func (s *server) getJob(w http.ResponseWriter, r *http.Request) {
	info, err := s.getVisible(r, r.PathValue("id"))
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
	if _, err := s.getVisible(r, id); err != nil {
		writeQueueError(w, err)
		return
	}
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

// listResponse is the body of GET /jobs: a page of job summaries (no
// payload, result or metadata; last_error cut to its first line), newest
// first, and the cursor of the next page, empty after the last one.
type listResponse struct {
	Jobs       []jobqueue.JobInfo `json:"jobs"`
	NextCursor string             `json:"next_cursor"`
}

// listChunk is how many summaries listJobs asks the queue for at a time,
// so that a page of 1000 costs the memory of 100 while it is written to a
// client that reads slowly.
const listChunk = 100

// listJobs answers GET /jobs?type=&state=&limit=&cursor=&owner= with a
// page of the summaries of the jobs r's principal sees: its own, or for an
// operator every job (or owner's). The page ends after limit jobs, or
// before the job that would take it past s.listBytes; next_cursor is then
// the ID of its last job, to pass as cursor for the next page.
//
// The page is written as it is read from the queue, a chunk at a time, so
// the memory a request holds does not grow with the page while a slow
// client reads it; the http.Server's WriteTimeout bounds how long it may
// take.
func (s *server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := principal(r)
	f := jobqueue.ListFilter{Type: q.Get("type"), Owner: access.Owner(p), Cursor: q.Get("cursor"), Summary: true}
	if p.Operator {
		f.Owner = q.Get("owner")
	}
	if v := q.Get("state"); v != "" {
		if err := f.State.UnmarshalText([]byte(v)); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("state %q: want pending, scheduled, running, retrying, succeeded, failed or canceled", v))
			return
		}
	}
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit %q: want 1-%d", v, maxListLimit))
			return
		}
		limit = n
	}
	if f.Cursor != "" && !validID(f.Cursor) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("cursor %q: want the next_cursor of the previous page", f.Cursor))
		return
	}
	// The first chunk is read before the answer begins, so that an error
	// still gets its status. One job more than the page needs tells
	// whether a next page exists.
	f.Limit = min(limit, listChunk) + 1
	jobs, err := s.q.List(r.Context(), f)
	if err != nil {
		writeQueueError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	pw := pageWriter{w: w, budget: s.listBytes}
	pw.write([]byte(`{"jobs":[`))
	n := 0     // jobs on the page
	pos := ""  // ID of the last job put on the page (or skipped)
	next := "" // the cursor of the next page, if any
	for {
		more := len(jobs) == f.Limit // jobs remain after this chunk
		if more {
			jobs = jobs[:len(jobs)-1]
		}
		full := false
		for i := range jobs {
			if !pw.job(&jobs[i]) {
				full = true // jobs[i] would pass the budget
				break
			}
			n++
			pos = jobs[i].ID
		}
		if full || more && n == limit {
			next = pos
		}
		if full || !more || n == limit || pw.err != nil {
			break
		}
		f.Cursor = pos
		f.Limit = min(limit-n, listChunk) + 1
		if jobs, err = s.q.List(r.Context(), f); err != nil {
			// Too late for a status: end the page here, and the client
			// reads on from its cursor.
			next = pos
			break
		}
	}
	nb, _ := json.Marshal(next)
	pw.write([]byte(`],"next_cursor":`))
	pw.write(nb)
	pw.write([]byte("}\n"))
}

// pageWriter writes the jobs of a list page within a byte budget. After a
// failed write it writes nothing more.
type pageWriter struct {
	w       io.Writer
	budget  int
	written int
	n       int // jobs written
	err     error
}

// pageTail is room kept in the budget for the end of the page.
const pageTail = len(`],"next_cursor":""}`) + 64 + 2

func (p *pageWriter) write(b []byte) {
	if p.err != nil {
		return
	}
	var n int
	n, p.err = p.w.Write(b)
	p.written += n
}

// job writes info, after a comma unless it is the first, and reports
// whether it fit in the budget; the first job is written whatever its
// size. A job that cannot be encoded (a summary always can) is skipped.
func (p *pageWriter) job(info *jobqueue.JobInfo) bool {
	b, err := json.Marshal(info)
	if err != nil {
		return true
	}
	if p.n > 0 && p.written+1+len(b)+pageTail > p.budget {
		return false
	}
	if p.n > 0 {
		p.write([]byte{','})
	}
	p.write(b)
	p.n++
	return true
}

// validID reports whether id could be a job ID: 1-64 letters, digits,
// '-' or '_' (see jobqueue.JobRequest.ID).
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// statsResponse is the body of GET /stats.
type statsResponse struct {
	Queue     jobqueue.Stats `json:"queue"`
	WebSocket wsbridge.Stats `json:"websocket"`
	Streams   streamStats    `json:"streams"`
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, statsResponse{Queue: s.q.Stats(), WebSocket: s.ws.Stats(), Streams: s.streams.stats()})
}

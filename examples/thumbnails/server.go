package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
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
	defaultMaxUpload  = 32 << 20
	defaultMaxPixels  = 50_000_000
	defaultMaxDecoded = 256 << 20
	defaultMaxDisk    = 1 << 30
	defaultMaxUploads = 10_000
	defaultMaxActive  = 4
	defaultDecodeWait = time.Minute
	defaultSmallImage = 2_000_000
)

// defaultSizes are the thumbnail sizes, in pixels on the longer side.
var defaultSizes = []int{64, 128, 256, 512, 1024}

// serverConfig configures newServer. The zero value of each field is noted.
type serverConfig struct {
	Sizes      []int         // thumbnail sizes, ascending (nil: 64, 128, 256, 512, 1024)
	MaxUpload  int64         // request body limit in bytes (0: 32 MiB)
	MaxPixels  int64         // limit on an image's width x height (0: 50 million)
	MaxDecoded int64         // limit on the bytes an image takes decoded (0: 256 MiB)
	MaxDisk    int64         // bytes of uploads and thumbnails kept on disk (0: 1 GiB)
	MaxUploads int           // uploads whose thumbnails are kept (0: 10,000)
	MaxActive  int           // uploads a principal may have in progress (0: 4)
	DecodeWait time.Duration // how long an upload waits for its decode (0: one minute)
	SmallImage int64         // pixels up to which an image's job is high priority (0: 2 million)
	// Tokens maps bearer tokens to principals (see access.LoadTokens).
	// Empty: no tokens, every request is access.Local.
	Tokens map[string]wsbridge.Principal
}

// upload is an accepted image, as the API shows it.
type upload struct {
	ID         string            `json:"id"`
	Owner      string            `json:"owner"`
	Format     string            `json:"format"`
	Width      int               `json:"width"`
	Height     int               `json:"height"`
	Job        string            `json:"job,omitempty"`
	JobURL     string            `json:"job_url,omitempty"`
	Priority   jobqueue.Priority `json:"priority"`
	State      jobqueue.State    `json:"state,omitempty"`
	Progress   float64           `json:"progress,omitempty"`
	Message    string            `json:"message,omitempty"`
	Thumbnails []thumbnailState  `json:"thumbnails"`
}

// thumbnailState is one size of an upload; Ready, in GET answers, says
// whether it is made.
type thumbnailState struct {
	Size  int    `json:"size"`
	URL   string `json:"url"`
	Ready bool   `json:"ready"`
}

// server is the thumbnail service: uploads in, one job per upload queued
// by image size, results served from the store to their owner. It is an
// http.Handler.
type server struct {
	q       *jobqueue.Queue
	st      *store
	cfg     serverConfig
	handler http.Handler
	mux     *http.ServeMux

	mu        sync.Mutex
	uploads   map[string]uploadMeta // the uploads kept, by ID
	order     []string              // their IDs, oldest first
	receiving map[string]int        // uploads being received, by principal
}

// newServer returns the service for q, whose thumbnails jobs run on st,
// with the uploads st found on disk. It does not own q.
func newServer(q *jobqueue.Queue, st *store, cfg serverConfig) *server {
	if cfg.Sizes == nil {
		cfg.Sizes = defaultSizes
	}
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxUpload, defaultMaxUpload)
	def(&cfg.MaxPixels, defaultMaxPixels)
	def(&cfg.MaxDecoded, defaultMaxDecoded)
	def(&cfg.MaxDisk, defaultMaxDisk)
	def(&cfg.SmallImage, defaultSmallImage)
	if cfg.MaxUploads <= 0 {
		cfg.MaxUploads = defaultMaxUploads
	}
	if cfg.MaxActive <= 0 {
		cfg.MaxActive = defaultMaxActive
	}
	if cfg.DecodeWait <= 0 {
		cfg.DecodeWait = defaultDecodeWait
	}
	s := &server{q: q, st: st, cfg: cfg, mux: http.NewServeMux(),
		uploads: map[string]uploadMeta{}, receiving: map[string]int{}}
	for _, m := range st.loaded {
		s.uploads[m.ID] = m
		s.order = append(s.order, m.ID)
	}
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("POST /upload", s.upload)
	s.mux.HandleFunc("GET /uploads/{id}", s.getUpload)
	s.mux.HandleFunc("GET /thumbnails/{id}/{size}", s.thumbnail)
	s.mux.HandleFunc("GET /jobs/{id}", s.getJob)
	s.handler = access.NewGuard(cfg.Tokens).Wrap(http.HandlerFunc(s.route))
	return s
}

// ServeHTTP authenticates r (401 without a valid token when the server
// has tokens) and routes it.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// route routes r; the mux's own 404 and 405 answers become JSON.
func (s *server) route(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		w = &jsonErrorWriter{ResponseWriter: w}
	}
	s.mux.ServeHTTP(w, r)
}

// principal returns the principal the guard found for r.
func principal(r *http.Request) wsbridge.Principal {
	if p, ok := access.From(r.Context()); ok {
		return p
	}
	return access.Local
}

// jsonErrorWriter turns the mux's plain-text 404 and 405 answers into JSON
// errors and passes every other answer through.
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
		writeError(w.ResponseWriter, code, "method_not_allowed", "method not allowed; allowed: "+w.Header().Get("Allow"))
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

// apiError is the body of every error answer.
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

func writeQueueError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, jobqueue.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no such job")
	case errors.Is(err, jobqueue.ErrQuotaExceeded):
		writeQuotaError(w, err.Error())
	case errors.Is(err, jobqueue.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "queue_full", "the queue is full; retry later")
	case errors.Is(err, jobqueue.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "closed", "the server is shutting down")
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// quotaRetry is the Retry-After of a 429: about the time a job takes.
const quotaRetry = "2"

func writeQuotaError(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", quotaRetry)
	writeError(w, http.StatusTooManyRequests, "quota_exceeded", msg)
}

var indexHTML = template.Must(template.New("index").Parse(`<!doctype html>
<meta charset="utf-8">
<title>thumbnails</title>
<h1>thumbnails</h1>
<form method="post" action="/upload{{if .}}?token={{.}}{{end}}" enctype="multipart/form-data">
<input type="file" name="image" accept="image/png,image/jpeg,image/gif" required>
<button>Upload</button>
</form>
<p>The answer names the upload's job and one URL per size; fetch <code>/thumbnails/{id}/{size}</code> when it is ready.</p>
`))

// index serves the upload form; a page opened with ?token= (which the
// guard has checked) posts with the same token.
func (s *server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	indexHTML.Execute(w, r.URL.Query().Get("token"))
}

// upload accepts a multipart/form-data request whose field "image" is a
// PNG, JPEG or GIF image. In order: the principal must be under its
// quota (429) and the disk budget must have room for one more upload
// (507, once the oldest finished uploads are removed); the file is
// streamed to disk (413 over MaxUpload); inspect checks its header and
// structure (415, 413 over MaxPixels or MaxDecoded, 422 for data the
// image cannot need); one job is queued that decodes it, and the request
// waits until that job reports "decoded" (202 with the upload) or fails
// (422). Memory does not grow with the upload, and the original file is
// gone by the time the request is answered, whatever the answer.
func (s *server) upload(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "multipart/form-data" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be multipart/form-data with a file field named image")
		return
	}
	if !s.enter(r.Context(), p) {
		writeQuotaError(w, fmt.Sprintf("%s has %d uploads in progress; the limit is %d", p.Name, s.cfg.MaxActive, s.cfg.MaxActive))
		return
	}
	entered := true
	exit := func() {
		if entered {
			s.exit(p)
			entered = false
		}
	}
	defer exit()
	if !s.makeRoom(s.cfg.MaxUpload) {
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusInsufficientStorage, "insufficient_storage",
			fmt.Sprintf("the disk budget of %d bytes is taken by uploads in progress; retry later", s.cfg.MaxDisk))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxUpload)
	tmp, status, code, msg := s.receive(r)
	s.st.add(-s.cfg.MaxUpload) // the file's own bytes are counted now
	if status != 0 {
		writeError(w, status, code, msg)
		return
	}
	defer s.st.removeFile(tmp) // after a successful rename, a no-op
	info, err := s.inspectFile(tmp)
	var ref *refusal
	switch {
	case errors.As(err, &ref):
		writeError(w, ref.status, ref.code, ref.msg)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}

	meta := uploadMeta{ID: rand.Text(), Owner: p.Name, Format: info.Format, Width: info.Width, Height: info.Height,
		Job: s.q.NewID(), Created: time.Now()}
	original := s.st.originalPath(meta.ID)
	if err := os.Rename(tmp, original); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	defer s.st.removeFile(original) // the job's already; here for the jobs that never ran
	sub := s.q.Subscribe(jobqueue.EventFilter{JobID: meta.Job})
	defer sub.Close()
	payload, _ := json.Marshal(thumbnailsIn{Upload: meta.ID, Sizes: s.cfg.Sizes})
	prio := priorityFor(int64(info.Width)*int64(info.Height), s.cfg.SmallImage)
	_, err = s.q.Submit(r.Context(), jobqueue.JobRequest{
		ID:          meta.Job,
		Type:        thumbnailsType,
		Owner:       p.Name,
		Quota:       jobqueue.Quota{MaxActive: s.cfg.MaxActive},
		Payload:     payload,
		Priority:    prio,
		MaxAttempts: 1, // the original is gone once decoded: nothing to retry with
		Metadata:    map[string]string{"upload": meta.ID},
	})
	exit() // from now on the job counts in the quota
	if err != nil {
		writeQueueError(w, err)
		return
	}

	switch outcome, detail := s.awaitDecoded(r.Context(), sub, meta.Job); outcome {
	case decoded:
		if err := s.st.writeMeta(meta); err != nil {
			s.abandon(meta.ID, meta.Job)
			writeError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		s.remember(meta)
		w.Header().Set("Location", "/uploads/"+meta.ID)
		writeJSON(w, http.StatusAccepted, s.view(meta, prio, nil))
	case failed:
		s.st.removeUpload(meta.ID)
		writeError(w, http.StatusUnprocessableEntity, "bad_image", detail)
	default:
		s.abandon(meta.ID, meta.Job)
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, "busy", detail)
	}
}

// inspectFile inspects the upload at path.
func (s *server) inspectFile(path string) (imageInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return imageInfo{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return imageInfo{}, err
	}
	return inspect(f, fi.Size(), limits{maxPixels: s.cfg.MaxPixels, maxDecoded: s.cfg.MaxDecoded})
}

// Outcomes of awaitDecoded.
const (
	decoded = iota
	failed
	unfinished // timed out, canceled, shut down, or the client left
)

// awaitDecoded waits for job to report that it decoded its upload (or to
// succeed, in case that report was dropped), to fail, or for ctx, the
// DecodeWait or the subscription to end. It returns the outcome and a
// message for the client.
func (s *server) awaitDecoded(ctx context.Context, sub *jobqueue.Subscription, job string) (int, string) {
	timer := time.NewTimer(s.cfg.DecodeWait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return unfinished, "the server is shutting down"
			}
			switch ev.Kind {
			case jobqueue.EventProgress:
				if strings.HasPrefix(ev.Message, decodedMessage) {
					return decoded, ""
				}
			case jobqueue.EventSucceeded:
				return decoded, ""
			case jobqueue.EventFailed:
				return failed, "the image does not decode: " + ev.Error
			case jobqueue.EventCanceled:
				return unfinished, "the upload's job was canceled"
			}
		case <-timer.C:
			return unfinished, fmt.Sprintf("the image was not decoded within %v: the server is busy; retry later", s.cfg.DecodeWait)
		case <-ctx.Done():
			return unfinished, "the request ended"
		}
	}
}

// abandon cancels the job of an upload that will not be answered 202,
// waits a while for it to end, and removes whatever it made.
func (s *server) abandon(id, job string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.q.Cancel(ctx, job)
	s.st.removeFile(s.st.originalPath(id))
	s.q.Wait(ctx, job)
	s.st.removeUpload(id)
}

// enter counts one more upload being received for p, unless p's uploads
// in progress (jobs active and uploads being received) are at MaxActive.
// Submit checks the jobs again, atomically, with the same Quota.
func (s *server) enter(ctx context.Context, p wsbridge.Principal) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.receiving[p.Name]
	if u, err := s.q.Usage(ctx, p.Name); err == nil {
		n += u.Active
	}
	if n >= s.cfg.MaxActive {
		return false
	}
	s.receiving[p.Name]++
	return true
}

func (s *server) exit(p wsbridge.Principal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.receiving[p.Name]--; s.receiving[p.Name] <= 0 {
		delete(s.receiving, p.Name)
	}
}

// makeRoom reserves need bytes of the disk budget, removing the
// thumbnails of the oldest uploads whose jobs have ended as long as the
// budget is short. It returns false, reserving nothing, if the budget
// stays short (the bytes are uploads and thumbnails in progress).
func (s *server) makeRoom(need int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.st.usage()+need > s.cfg.MaxDisk {
		if !s.evictLocked() {
			return false
		}
	}
	s.st.add(need)
	return true
}

// evictLocked removes the oldest upload whose job has ended, and reports
// whether there was one. s.mu is held.
func (s *server) evictLocked() bool {
	for i, id := range s.order {
		m := s.uploads[id]
		info, err := s.q.Get(context.Background(), m.Job)
		if err == nil && !info.State.Final() {
			continue // still making thumbnails
		}
		if s.st.removeUpload(id) != nil {
			continue
		}
		delete(s.uploads, id)
		s.order = slices.Delete(s.order, i, i+1)
		return true
	}
	return false
}

// remember keeps m for GET /uploads and GET /thumbnails, removing the
// oldest finished uploads beyond MaxUploads.
func (s *server) remember(m uploadMeta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uploads[m.ID] = m
	s.order = append(s.order, m.ID)
	for len(s.order) > s.cfg.MaxUploads && s.evictLocked() {
	}
}

// lookup returns the upload id if p may see it.
func (s *server) lookup(p wsbridge.Principal, id string) (uploadMeta, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.uploads[id]
	if !ok || !access.Sees(p, m.Owner) {
		return uploadMeta{}, false
	}
	return m, true
}

// view is the API's form of m; with info (the job's state), each size
// says whether it is ready.
func (s *server) view(m uploadMeta, prio jobqueue.Priority, info *jobqueue.JobInfo) upload {
	up := upload{ID: m.ID, Owner: m.Owner, Format: m.Format, Width: m.Width, Height: m.Height, Priority: prio}
	if m.Job != "" {
		up.Job, up.JobURL = m.Job, "/jobs/"+m.Job
	}
	if info != nil {
		up.State, up.Progress, up.Message = info.State, info.Progress, info.ProgressMessage
		up.Priority = info.Priority
	}
	for _, size := range s.cfg.Sizes {
		t := thumbnailState{Size: size, URL: fmt.Sprintf("/thumbnails/%s/%d", m.ID, size)}
		if info != nil {
			_, err := os.Stat(s.st.thumbnailPath(m.ID, size))
			t.Ready = err == nil
		}
		up.Thumbnails = append(up.Thumbnails, t)
	}
	return up
}

// receive copies the "image" part of r's multipart body into a temporary
// file among the originals, counted in the store's usage, and returns its
// path, or the status, code and message of the error.
func (s *server) receive(r *http.Request) (path string, status int, code, msg string) {
	fail := func(err error) (string, int, string, string) {
		if path != "" {
			s.st.removeFile(path)
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the upload exceeds %d bytes", tooBig.Limit)
		}
		return "", http.StatusBadRequest, "bad_request", "reading the upload: " + err.Error()
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return fail(err)
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(err)
		}
		if part.FormName() != "image" || path != "" {
			_, err = io.Copy(io.Discard, part)
		} else {
			path, err = s.save(part)
		}
		part.Close()
		if err != nil {
			return fail(err)
		}
	}
	if path == "" {
		return "", http.StatusBadRequest, "missing_image", "the form has no file field named image"
	}
	return path, 0, "", ""
}

// save copies rd into a new temporary file among the originals and counts
// its bytes.
func (s *server) save(rd io.Reader) (string, error) {
	f, err := os.CreateTemp(s.st.originalsDir(), ".upload-*")
	if err != nil {
		return "", err
	}
	n, err := io.Copy(f, rd)
	s.st.add(n)
	if err = errors.Join(err, f.Close()); err != nil {
		s.st.removeFile(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// getUpload shows an upload with its job's state and progress and which
// sizes are ready. Another principal's upload is 404.
func (s *server) getUpload(w http.ResponseWriter, r *http.Request) {
	m, ok := s.lookup(principal(r), r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such upload")
		return
	}
	info, err := s.q.Get(r.Context(), m.Job)
	if err != nil { // retention dropped the job, or a restart
		info = jobqueue.JobInfo{}
	}
	writeJSON(w, http.StatusOK, s.view(m, 0, &info))
}

// thumbnail serves one thumbnail as PNG once it exists. Before that it
// answers 202 with the job's state and progress (a Retry-After header
// says when to ask again), or 500 if the job failed; an unknown upload or
// size, or another principal's upload, is 404.
func (s *server) thumbnail(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.Atoi(r.PathValue("size"))
	m, ok := s.lookup(principal(r), r.PathValue("id"))
	if !ok || err != nil || !slices.Contains(s.cfg.Sizes, size) {
		writeError(w, http.StatusNotFound, "not_found", "no such upload or size")
		return
	}
	if f, err := os.Open(s.st.thumbnailPath(m.ID, size)); err == nil {
		defer f.Close()
		var mod time.Time
		if fi, err := f.Stat(); err == nil {
			mod = fi.ModTime()
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "private, max-age=86400")
		http.ServeContent(w, r, "", mod, f)
		return
	}
	info, err := s.q.Get(r.Context(), m.Job)
	switch {
	case err != nil:
		writeError(w, http.StatusNotFound, "not_found", "the thumbnail is gone")
	case info.State == jobqueue.StateFailed, info.State == jobqueue.StateCanceled:
		writeError(w, http.StatusInternalServerError, "thumbnail_failed", fmt.Sprintf("the job %s: %s", info.State, info.LastError))
	case info.State == jobqueue.StateSucceeded:
		writeError(w, http.StatusNotFound, "not_found", "the thumbnail was made but its file is gone")
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, info)
	}
}

// getJob shows a job; another principal's job is 404.
func (s *server) getJob(w http.ResponseWriter, r *http.Request) {
	info, err := s.q.Get(r.Context(), r.PathValue("id"))
	if err == nil && !access.Sees(principal(r), info.Owner) {
		err = jobqueue.ErrNotFound
	}
	if err != nil {
		writeQueueError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

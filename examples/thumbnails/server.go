package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/corework/corework/jobqueue"
)

// Defaults of serverConfig.
const (
	defaultMaxUpload  = 32 << 20
	defaultMaxPixels  = 50_000_000
	defaultMaxUploads = 10_000
)

// defaultSizes are the thumbnail sizes, in pixels on the longer side.
var defaultSizes = []int{64, 128, 256, 512, 1024}

// serverConfig configures newServer. The zero value of each field is noted.
type serverConfig struct {
	Sizes      []int // thumbnail sizes, ascending (nil: 64, 128, 256, 512, 1024)
	MaxUpload  int64 // request body limit in bytes (0: 32 MiB)
	MaxPixels  int   // limit on an image's width x height (0: 50 million)
	MaxUploads int   // uploads remembered for GET /uploads (0: 10,000)
}

// upload is an accepted image and its thumbnail jobs.
type upload struct {
	ID         string           `json:"id"`
	Format     string           `json:"format"`
	Width      int              `json:"width"`
	Height     int              `json:"height"`
	Thumbnails []thumbnailState `json:"thumbnails"`
}

// thumbnailState is one size of an upload: its job and, in GET answers,
// the job's state.
type thumbnailState struct {
	Size     int               `json:"size"`
	Job      string            `json:"job"`
	Priority jobqueue.Priority `json:"priority"`
	URL      string            `json:"url"`
	JobURL   string            `json:"job_url"`
	State    jobqueue.State    `json:"state,omitempty"`
	Progress float64           `json:"progress,omitempty"`
}

// server is the thumbnail service: uploads in, thumbnail jobs queued by
// size priority, results served from the store. It is an http.Handler.
type server struct {
	q   *jobqueue.Queue
	st  *store
	cfg serverConfig
	mux *http.ServeMux

	mu      sync.Mutex
	uploads map[string]*upload // the newest MaxUploads uploads
	order   []string           // their IDs, oldest first
}

// newServer returns the service for q, whose thumbnail jobs run on st.
// It does not own q.
func newServer(q *jobqueue.Queue, st *store, cfg serverConfig) *server {
	if cfg.Sizes == nil {
		cfg.Sizes = defaultSizes
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = defaultMaxUpload
	}
	if cfg.MaxPixels <= 0 {
		cfg.MaxPixels = defaultMaxPixels
	}
	if cfg.MaxUploads <= 0 {
		cfg.MaxUploads = defaultMaxUploads
	}
	s := &server{q: q, st: st, cfg: cfg, mux: http.NewServeMux(), uploads: map[string]*upload{}}
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("POST /upload", s.upload)
	s.mux.HandleFunc("GET /uploads/{id}", s.getUpload)
	s.mux.HandleFunc("GET /thumbnails/{id}/{size}", s.thumbnail)
	s.mux.HandleFunc("GET /jobs/{id}", s.getJob)
	return s
}

// ServeHTTP routes r; the mux's own 404 and 405 answers become JSON.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		w = &jsonErrorWriter{ResponseWriter: w}
	}
	s.mux.ServeHTTP(w, r)
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
	case errors.Is(err, jobqueue.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "queue_full", "the queue is full; retry later")
	case errors.Is(err, jobqueue.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "closed", "the server is shutting down")
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

const indexHTML = `<!doctype html>
<meta charset="utf-8">
<title>thumbnails</title>
<h1>thumbnails</h1>
<form method="post" action="/upload" enctype="multipart/form-data">
<input type="file" name="image" accept="image/png,image/jpeg,image/gif" required>
<button>Upload</button>
</form>
<p>The answer lists one job per size; fetch <code>/thumbnails/{id}/{size}</code> when it is done.</p>
`

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	io.WriteString(w, indexHTML)
}

// upload accepts a multipart/form-data request whose field "image" is a
// PNG, JPEG or GIF image. It stores the file, queues one job per size and
// answers 202 with the jobs. It streams the body to disk: memory does not
// grow with the upload.
func (s *server) upload(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "multipart/form-data" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be multipart/form-data with a file field named image")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxUpload)
	tmp, status, code, msg := s.receive(r)
	if status != 0 {
		writeError(w, status, code, msg)
		return
	}
	defer os.Remove(tmp) // after a successful rename, a no-op

	up, status, code, msg := s.check(tmp)
	if status != 0 {
		writeError(w, status, code, msg)
		return
	}
	up.ID = rand.Text()
	if err := os.Rename(tmp, s.st.originalPath(up.ID)); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if err := s.queue(r, up); err != nil {
		os.Remove(s.st.originalPath(up.ID))
		writeQueueError(w, err)
		return
	}
	s.remember(up)
	w.Header().Set("Location", "/uploads/"+up.ID)
	writeJSON(w, http.StatusAccepted, up)
}

// receive copies the "image" part of r's multipart body into a temporary
// file of the store and returns its path, or the status, code and message
// of the error.
func (s *server) receive(r *http.Request) (path string, status int, code, msg string) {
	fail := func(err error) (string, int, string, string) {
		if path != "" {
			os.Remove(path)
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

// save copies rd into a new temporary file among the originals.
func (s *server) save(rd io.Reader) (string, error) {
	f, err := os.CreateTemp(s.st.originalsDir(), ".upload-*")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, rd)
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// check reads the header of the image at path: its format and
// dimensions, refusing what is not a PNG, JPEG or GIF image and images
// with more than MaxPixels pixels (their decoding would take that many
// times four bytes).
func (s *server) check(path string) (up *upload, status int, code, msg string) {
	f, err := os.Open(path)
	if err != nil {
		return nil, http.StatusInternalServerError, "internal", err.Error()
	}
	defer f.Close()
	c, format, err := image.DecodeConfig(f)
	if err != nil {
		return nil, http.StatusUnsupportedMediaType, "unsupported_image", "the file is not a PNG, JPEG or GIF image"
	}
	if c.Width < 1 || c.Height < 1 {
		return nil, http.StatusUnsupportedMediaType, "unsupported_image", "the image is empty"
	}
	if c.Width > s.cfg.MaxPixels/c.Height {
		return nil, http.StatusRequestEntityTooLarge, "too_many_pixels",
			fmt.Sprintf("the image is %dx%d; the limit is %d pixels", c.Width, c.Height, s.cfg.MaxPixels)
	}
	return &upload{Format: format, Width: c.Width, Height: c.Height}, 0, "", ""
}

// queue submits one thumbnail job per size, smallest first. If one is
// refused, it cancels those already queued.
func (s *server) queue(r *http.Request, up *upload) error {
	for _, size := range s.cfg.Sizes {
		payload, _ := json.Marshal(thumbnailIn{Upload: up.ID, Size: size})
		p := priorityFor(size)
		id, err := s.q.Submit(r.Context(), jobqueue.JobRequest{
			Type:     thumbnailType,
			Payload:  payload,
			Priority: p,
			Metadata: map[string]string{"upload": up.ID},
		})
		if err != nil {
			for _, t := range up.Thumbnails {
				s.q.Cancel(r.Context(), t.Job)
			}
			return err
		}
		up.Thumbnails = append(up.Thumbnails, thumbnailState{
			Size: size, Job: id, Priority: p,
			URL:    fmt.Sprintf("/thumbnails/%s/%d", up.ID, size),
			JobURL: "/jobs/" + id,
		})
	}
	return nil
}

// remember keeps up for GET /uploads and GET /thumbnails, forgetting the
// oldest upload beyond MaxUploads (its files stay and are still served).
func (s *server) remember(up *upload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uploads[up.ID] = up
	s.order = append(s.order, up.ID)
	if len(s.order) > s.cfg.MaxUploads {
		delete(s.uploads, s.order[0])
		s.order = slices.Delete(s.order, 0, 1)
	}
}

func (s *server) lookup(id string) (upload, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	up, ok := s.uploads[id]
	if !ok {
		return upload{}, false
	}
	c := *up
	c.Thumbnails = slices.Clone(up.Thumbnails)
	return c, true
}

// getUpload shows an upload with the state and progress of each size.
func (s *server) getUpload(w http.ResponseWriter, r *http.Request) {
	up, ok := s.lookup(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such upload")
		return
	}
	for i := range up.Thumbnails {
		t := &up.Thumbnails[i]
		if info, err := s.q.Get(r.Context(), t.Job); err == nil {
			t.State, t.Progress = info.State, info.Progress
		}
	}
	writeJSON(w, http.StatusOK, up)
}

// thumbnail serves one thumbnail as PNG once it exists. Before that it
// answers 202 with the job's state and progress (a Retry-After header
// says when to ask again), or 500 if the job failed; an unknown upload or
// size is 404.
func (s *server) thumbnail(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	size, err := strconv.Atoi(r.PathValue("size"))
	if !validUploadID(id) || err != nil || !slices.Contains(s.cfg.Sizes, size) {
		writeError(w, http.StatusNotFound, "not_found", "no such upload or size")
		return
	}
	if f, err := os.Open(s.st.thumbnailPath(id, size)); err == nil {
		defer f.Close()
		var mod time.Time
		if fi, err := f.Stat(); err == nil {
			mod = fi.ModTime()
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "public, max-age=86400")
		http.ServeContent(w, r, "", mod, f)
		return
	}
	up, ok := s.lookup(id)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such upload")
		return
	}
	i := slices.IndexFunc(up.Thumbnails, func(t thumbnailState) bool { return t.Size == size })
	if i < 0 {
		writeError(w, http.StatusNotFound, "not_found", "no such size for this upload")
		return
	}
	info, err := s.q.Get(r.Context(), up.Thumbnails[i].Job)
	switch {
	case err != nil:
		writeQueueError(w, err)
	case info.State == jobqueue.StateFailed, info.State == jobqueue.StateCanceled:
		writeError(w, http.StatusInternalServerError, "thumbnail_failed", fmt.Sprintf("the job %s: %s", info.State, info.LastError))
	case info.State == jobqueue.StateSucceeded:
		writeError(w, http.StatusNotFound, "not_found", "the thumbnail was made but its file is gone")
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, info)
	}
}

func (s *server) getJob(w http.ResponseWriter, r *http.Request) {
	info, err := s.q.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeQueueError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

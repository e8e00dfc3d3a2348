package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"maps"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a queue with the thumbnail handler, the service in front of it
// and an httptest server, all stopped by the test's cleanup.
type env struct {
	t   *testing.T
	q   *jobqueue.Queue
	st  *store
	api *server
	hs  *httptest.Server
}

// newEnv starts the service with workers workers and the given filter.
// The workers start only if start is true.
func newEnv(t *testing.T, workers int, filter string, cfg serverConfig, start bool) *env {
	t.Helper()
	st, err := openStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q, err := jobqueue.New(jobqueue.Config{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	jobqueue.HandleFunc(q, thumbnailType, (&thumbnailer{st: st, scaler: filters[filter]}).run)
	if start {
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
	}
	api := newServer(q, st, cfg)
	hs := httptest.NewServer(api)
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("queue shutdown: %v", err)
		}
	})
	return &env{t: t, q: q, st: st, api: api, hs: hs}
}

// gradient returns a w x h image whose pixels all differ a little.
func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			i := img.PixOffset(x, y)
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = uint8(x*255/w), uint8(y*255/h), uint8(x^y), 255
		}
	}
	return img
}

func encode(t *testing.T, format string, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	var err error
	switch format {
	case "png": // uncompressed: fast to make, a realistic size to send
		err = (&png.Encoder{CompressionLevel: png.NoCompression}).Encode(&b, img)
	case "jpeg":
		err = jpeg.Encode(&b, img, nil)
	case "gif":
		err = gif.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// post uploads data as the file field named field of a multipart form.
func post(t *testing.T, c *http.Client, url, field string, data []byte) (int, http.Header, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("note", "a field the service ignores")
	fw, err := mw.CreateFormFile(field, "picture")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	mw.Close()
	return do(t, c, "POST", url+"/upload", mw.FormDataContentType(), body.Bytes())
}

func do(t *testing.T, c *http.Client, method, url, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, b
}

// upload posts an image and returns the accepted upload.
func (e *env) upload(data []byte) upload {
	e.t.Helper()
	status, h, b := post(e.t, e.hs.Client(), e.hs.URL, "image", data)
	if status != http.StatusAccepted {
		e.t.Fatalf("upload: %d %s", status, b)
	}
	var up upload
	if err := json.Unmarshal(b, &up); err != nil {
		e.t.Fatalf("upload: %v in %s", err, b)
	}
	if h.Get("Location") != "/uploads/"+up.ID || !validUploadID(up.ID) {
		e.t.Fatalf("upload: Location %q, body %s", h.Get("Location"), b)
	}
	return up
}

// fetch polls a thumbnail's URL until it is served and returns its
// decoded dimensions.
func fetch(t *testing.T, c *http.Client, url string) (int, int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, h, b := do(t, c, "GET", url, "", nil)
		switch status {
		case http.StatusOK:
			img, format, err := image.Decode(bytes.NewReader(b))
			if err != nil || format != "png" || h.Get("Content-Type") != "image/png" {
				t.Fatalf("GET %s: %s %s %v", url, h.Get("Content-Type"), format, err)
			}
			return img.Bounds().Dx(), img.Bounds().Dy()
		case http.StatusAccepted:
			var info jobqueue.JobInfo
			if err := json.Unmarshal(b, &info); err != nil || info.State.Final() || h.Get("Retry-After") == "" {
				t.Fatalf("GET %s: 202 %s", url, b)
			}
		default:
			t.Fatalf("GET %s: %d %s", url, status, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: not ready in time", url)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) fetchAll(up upload) map[int]string {
	e.t.Helper()
	dims := map[int]string{}
	for _, th := range up.Thumbnails {
		w, h := fetch(e.t, e.hs.Client(), e.hs.URL+th.URL)
		dims[th.Size] = fmt.Sprintf("%dx%d", w, h)
	}
	return dims
}

func (e *env) job(id string) jobqueue.JobInfo {
	e.t.Helper()
	status, _, b := do(e.t, e.hs.Client(), "GET", e.hs.URL+"/jobs/"+id, "", nil)
	var info jobqueue.JobInfo
	if err := json.Unmarshal(b, &info); err != nil || status != http.StatusOK {
		e.t.Fatalf("GET /jobs/%s: %d %s", id, status, b)
	}
	return info
}

// TestUpload uploads a 1600x900 PNG and gets every size back with the
// right dimensions, and watches one job's progress through its steps.
// (Dimensions do not depend on the filter: the bilinear kernel takes half
// the time of the default Catmull-Rom one under the race detector.)
func TestUpload(t *testing.T) {
	e := newEnv(t, 2, "bilinear", serverConfig{}, true)
	sub := e.q.Subscribe(jobqueue.EventFilter{Type: thumbnailType, Kinds: []jobqueue.EventKind{jobqueue.EventProgress}})
	defer sub.Close()

	up := e.upload(encode(t, "png", gradient(1600, 900)))
	if up.Format != "png" || up.Width != 1600 || up.Height != 900 || len(up.Thumbnails) != 5 {
		t.Fatalf("upload %+v", up)
	}
	for i, th := range up.Thumbnails {
		if th.Size != defaultSizes[i] || th.URL != fmt.Sprintf("/thumbnails/%s/%d", up.ID, th.Size) ||
			th.JobURL != "/jobs/"+th.Job || (i > 0 && th.Priority > up.Thumbnails[i-1].Priority) {
			t.Fatalf("thumbnail %d: %+v", i, th)
		}
	}
	want := map[int]string{64: "64x36", 128: "128x72", 256: "256x144", 512: "512x288", 1024: "1024x576"}
	if got := e.fetchAll(up); !maps.Equal(got, want) {
		t.Fatalf("dimensions %v, want %v", got, want)
	}

	// The job shows its result and its last progress report.
	info := e.job(up.Thumbnails[0].Job)
	var out thumbnailOut
	json.Unmarshal(info.Result, &out)
	if info.State != jobqueue.StateSucceeded || info.Progress != 100 || !strings.HasPrefix(info.ProgressMessage, "saved 64x36, ") ||
		out.Width != 64 || out.Height != 36 || out.Bytes <= 0 || out.URL != up.Thumbnails[0].URL || info.Metadata["upload"] != up.ID {
		t.Fatalf("job %+v", info)
	}
	// Each job reported its steps, in order.
	var steps []string
	for len(steps) < 4 {
		select {
		case ev := <-sub.Events():
			if ev.JobID == up.Thumbnails[0].Job {
				steps = append(steps, fmt.Sprintf("%g %s", ev.Progress, ev.Message))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("progress events: %q", steps)
		}
	}
	if !regexp.MustCompile(`^5 decoding\|40 decoded 1600x900 png\|75 resized to 64x36\|100 saved 64x36, \d+ bytes$`).MatchString(strings.Join(steps, "|")) {
		t.Fatalf("progress steps %q", steps)
	}

	// The upload lists every size as done.
	status, _, b := do(t, e.hs.Client(), "GET", e.hs.URL+"/uploads/"+up.ID, "", nil)
	var got upload
	if err := json.Unmarshal(b, &got); err != nil || status != http.StatusOK || len(got.Thumbnails) != 5 {
		t.Fatalf("GET /uploads: %d %s", status, b)
	}
	for _, th := range got.Thumbnails {
		if th.State != jobqueue.StateSucceeded || th.Progress != 100 {
			t.Fatalf("GET /uploads: %s", b)
		}
	}
}

// TestNoUpscaling uploads a small JPEG and a portrait GIF: sizes above an
// original's longer side keep its dimensions.
func TestNoUpscaling(t *testing.T) {
	e := newEnv(t, 2, "approx", serverConfig{}, true)
	up := e.upload(encode(t, "jpeg", gradient(300, 200)))
	want := map[int]string{64: "64x43", 128: "128x85", 256: "256x171", 512: "300x200", 1024: "300x200"}
	if got := e.fetchAll(up); up.Format != "jpeg" || !maps.Equal(got, want) {
		t.Fatalf("JPEG 300x200: %s %v, want %v", up.Format, got, want)
	}

	portrait := image.NewPaletted(image.Rect(0, 0, 50, 100), palette.Plan9)
	up = e.upload(encode(t, "gif", portrait))
	want = map[int]string{64: "32x64", 128: "50x100", 256: "50x100", 512: "50x100", 1024: "50x100"}
	if got := e.fetchAll(up); up.Format != "gif" || !maps.Equal(got, want) {
		t.Fatalf("GIF 50x100: %s %v, want %v", up.Format, got, want)
	}
}

func TestFit(t *testing.T) {
	for _, c := range []struct{ w, h, size, ww, wh int }{
		{1600, 900, 64, 64, 36},
		{900, 1600, 64, 36, 64},
		{500, 500, 128, 128, 128},
		{5000, 1, 64, 64, 1}, // never thinner than one pixel
		{3, 2, 2, 2, 1},
		{64, 10, 64, 64, 10}, // already fits: unchanged
		{10, 10, 1024, 10, 10},
	} {
		if w, h := fit(c.w, c.h, c.size); w != c.ww || h != c.wh {
			t.Errorf("fit(%d, %d, %d) = %d, %d; want %d, %d", c.w, c.h, c.size, w, h, c.ww, c.wh)
		}
	}
}

// TestPriorities queues two uploads before the only worker starts: every
// image's small previews are made before any large size, and uploads
// take turns within a size (first in, first out).
func TestPriorities(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{}, false)
	a := e.upload(encode(t, "png", gradient(640, 320)))
	b := e.upload(encode(t, "png", gradient(640, 320)))

	// Before a job runs, the thumbnail's URL answers 202 with the job.
	status, h, body := do(t, e.hs.Client(), "GET", e.hs.URL+a.Thumbnails[0].URL, "", nil)
	var info jobqueue.JobInfo
	if err := json.Unmarshal(body, &info); err != nil || status != http.StatusAccepted || info.State != jobqueue.StatePending ||
		info.ID != a.Thumbnails[0].Job || h.Get("Retry-After") != "1" {
		t.Fatalf("thumbnail before its job ran: %d %s", status, body)
	}

	if err := e.q.Start(); err != nil {
		t.Fatal(err)
	}
	type done struct {
		name string
		at   time.Time
	}
	var order []done
	for _, up := range []struct {
		name string
		up   upload
	}{{"a", a}, {"b", b}} {
		for _, th := range up.up.Thumbnails {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			info, err := e.q.Wait(ctx, th.Job)
			cancel()
			if err != nil {
				t.Fatalf("job %s: %v", th.Job, err)
			}
			order = append(order, done{fmt.Sprintf("%s%d", up.name, th.Size), info.FinishedAt})
		}
	}
	slices.SortFunc(order, func(x, y done) int { return x.at.Compare(y.at) })
	var names []string
	for _, d := range order {
		names = append(names, d.name)
	}
	if got := strings.Join(names, " "); got != "a64 b64 a128 b128 a256 b256 a512 b512 a1024 b1024" {
		t.Fatalf("finishing order: %s", got)
	}
}

func TestUploadErrors(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{MaxUpload: 64 << 10, MaxPixels: 200 * 200}, true)
	c := e.hs.Client()
	url := e.hs.URL
	noise := image.NewRGBA(image.Rect(0, 0, 200, 200))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise.Pix {
		noise.Pix[i] = byte(rng.Uint32())
	}
	big := encode(t, "png", noise)
	if len(big) <= 64<<10 {
		t.Fatalf("test image of %d bytes is not over the limit", len(big))
	}

	check := func(name string, status int, b []byte, wantStatus int, wantCode string) {
		t.Helper()
		var ae apiError
		if err := json.Unmarshal(b, &ae); err != nil || status != wantStatus || ae.Error.Code != wantCode || ae.Error.Message == "" {
			t.Errorf("%s: %d %s, want %d %s", name, status, b, wantStatus, wantCode)
		}
	}
	status, _, b := post(t, c, url, "image", []byte("hello, I am a text file\n"))
	check("text file", status, b, 415, "unsupported_image")
	status, _, b = post(t, c, url, "image", encode(t, "gif", image.NewPaletted(image.Rect(0, 0, 201, 200), palette.Plan9)))
	check("too many pixels", status, b, 413, "too_many_pixels")
	status, _, b = post(t, c, url, "image", big)
	check("oversize upload", status, b, 413, "too_large")
	status, _, b = post(t, c, url, "photo", encode(t, "png", gradient(20, 20)))
	check("no image field", status, b, 400, "missing_image")
	status, _, b = do(t, c, "POST", url+"/upload", "application/json", []byte(`{"image":"x"}`))
	check("not multipart", status, b, 415, "unsupported_media_type")
	status, _, b = do(t, c, "POST", url+"/upload", "multipart/form-data; boundary=xyz", []byte("--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nab"))
	check("truncated form", status, b, 400, "bad_request")

	up := e.upload(encode(t, "png", gradient(20, 10)))
	for _, c := range []struct{ name, path, code string }{
		{"unknown upload", "/thumbnails/NOSUCHUPLOAD/64", "not_found"},
		{"unknown size", "/thumbnails/" + up.ID + "/100", "not_found"},
		{"bad size", "/thumbnails/" + up.ID + "/big", "not_found"},
		{"bad upload ID", "/thumbnails/..%2f..%2fetc/64", "not_found"},
		{"unknown upload page", "/uploads/NOSUCHUPLOAD", "not_found"},
		{"unknown job", "/jobs/nosuchjob", "not_found"},
		{"unknown route", "/nowhere", "not_found"},
	} {
		status, _, b := do(t, e.hs.Client(), "GET", url+c.path, "", nil)
		check(c.name, status, b, 404, c.code)
	}
	status, h, b := do(t, c, "PUT", url+"/upload", "", nil)
	check("wrong method", status, b, 405, "method_not_allowed")
	if h.Get("Allow") != "POST" {
		t.Errorf("Allow %q", h.Get("Allow"))
	}

	// Refused uploads leave no file behind; the accepted one is there.
	e.fetchAll(up)
	files, _ := os.ReadDir(e.st.originalsDir())
	if len(files) != 1 || files[0].Name() != up.ID {
		t.Fatalf("originals: %v", files)
	}
	status, _, b = do(t, c, "GET", url+"/", "", nil)
	if status != http.StatusOK || !bytes.Contains(b, []byte(`enctype="multipart/form-data"`)) {
		t.Fatalf("GET /: %d %s", status, b)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRun runs the program's run function on a free port and returns its
// base URL, a function that interrupts it (as Ctrl-C does) and returns
// run's error, and its log.
func startRun(t *testing.T, cfg config) (string, func() error, *syncBuffer) {
	t.Helper()
	ctx, interrupt := context.WithCancel(context.Background())
	cfg.addr = "127.0.0.1:0"
	urls := make(chan string, 1)
	cfg.ready = func(u string) { urls <- u }
	log := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, log, cfg) }()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		interrupt()
		t.Fatalf("run: %v\n%s", err, log)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not start listening")
	}
	return url, func() error {
		interrupt()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			t.Fatalf("run did not return after the interrupt\n%s", log)
			return nil
		}
	}, log
}

// TestRun is the smoke test: the whole program on a real port, an upload
// through it, an interrupt; its temporary directory is gone afterwards.
// With -dir, a second run on the same directory serves the thumbnails the
// first one made.
func TestRun(t *testing.T) {
	c := &http.Client{}
	defer c.CloseIdleConnections()
	png := encode(t, "png", gradient(640, 480))

	url, stop, log := startRun(t, config{workers: 2, sizes: []int{64, 128}}) // the default filter
	status, _, b := post(t, c, url, "image", png)
	var up upload
	if err := json.Unmarshal(b, &up); err != nil || status != http.StatusAccepted {
		t.Fatalf("upload: %d %s", status, b)
	}
	if w, h := fetch(t, c, url+up.Thumbnails[1].URL); w != 128 || h != 96 {
		t.Fatalf("128: %dx%d", w, h)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	m := regexp.MustCompile(`files in (\S+);`).FindStringSubmatch(log.String())
	if m == nil || !strings.Contains(log.String(), "shutting down") {
		t.Fatalf("log:\n%s", log)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s left behind: %v", m[1], err)
	}
	c.CloseIdleConnections()

	dir := t.TempDir()
	url, stop, log = startRun(t, config{workers: 1, filter: "approx", sizes: []int{64}, dir: dir})
	status, _, b = post(t, c, url, "image", png)
	if err := json.Unmarshal(b, &up); err != nil || status != http.StatusAccepted {
		t.Fatalf("upload: %d %s", status, b)
	}
	fetch(t, c, url+up.Thumbnails[0].URL)
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	c.CloseIdleConnections()
	url, stop, log = startRun(t, config{workers: 1, sizes: []int{64}, dir: dir})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("second run: %v\n%s", err, log)
		}
	}()
	if w, h := fetch(t, c, url+up.Thumbnails[0].URL); w != 64 || h != 48 {
		t.Fatalf("after a restart: %dx%d", w, h)
	}
	if _, err := os.Stat(filepath.Join(dir, "originals", up.ID)); err != nil {
		t.Fatal(err)
	}
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{{"-nosuchflag"}, {"extra"}, {"-sizes", "64,huge"}, {"-sizes", ""}} {
		if code := cli(args, &stderr); code != 2 {
			t.Errorf("%q: exit %d", args, code)
		}
	}
	stderr.Reset()
	if code := cli([]string{"-filter", "blurry"}, &stderr); code != 1 || !strings.Contains(stderr.String(), "-filter") {
		t.Fatalf("bad filter: exit %d %s", code, stderr.String())
	}
	if s, err := parseSizes("512, 64,128,64"); err != nil || !slices.Equal(s, []int{64, 128, 512}) {
		t.Fatalf("parseSizes: %v %v", s, err)
	}
}

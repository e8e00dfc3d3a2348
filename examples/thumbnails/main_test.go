package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a queue with the thumbnails handler, the service in front of it
// and an httptest server, all stopped by the test's cleanup. decodes
// counts the uploads the jobs decoded.
type env struct {
	t       *testing.T
	q       *jobqueue.Queue
	st      *store
	api     *server
	hs      *httptest.Server
	decodes atomic.Int64
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
	e := &env{t: t, q: q, st: st}
	tn := &thumbnailer{st: st, scaler: filters[filter], decode: func(r io.ReaderAt, size int64) (image.Image, string, error) {
		e.decodes.Add(1)
		return decodeFull(r, size)
	}}
	jobqueue.HandleFunc(q, thumbnailsType, tn.run)
	if start {
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
	}
	e.api = newServer(q, st, cfg)
	e.hs = httptest.NewServer(e.api)
	t.Cleanup(func() {
		e.hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("queue shutdown: %v", err)
		}
	})
	return e
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

// noise returns a w x h image of random opaque pixels (it does not
// compress).
func noise(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = byte(rng.Uint32())
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	return img
}

func encode(t testing.TB, format string, img image.Image) []byte {
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
	return postAs(t, c, "", url, field, data)
}

// postAs is post with a bearer token (none if empty).
func postAs(t *testing.T, c *http.Client, token, url, field string, data []byte) (int, http.Header, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("note", "a field the service ignores")
	fw, err := mw.CreateFormFile(field, "picture")
	if err != nil {
		t.Error(err)
		return 0, nil, nil
	}
	fw.Write(data)
	mw.Close()
	return doAs(t, c, token, "POST", url+"/upload", mw.FormDataContentType(), body.Bytes())
}

func do(t *testing.T, c *http.Client, method, url, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	return doAs(t, c, "", method, url, contentType, body)
}

// doAs makes a request with a bearer token (none if empty). It may run
// on any goroutine: it reports errors with t.Error and returns status 0.
func doAs(t *testing.T, c *http.Client, token, method, url, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, nil, nil
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0, nil, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0, nil, nil
	}
	return resp.StatusCode, resp.Header, b
}

// upload posts an image and returns the accepted upload.
func (e *env) upload(data []byte) upload {
	e.t.Helper()
	return e.uploadAs("", data)
}

func (e *env) uploadAs(token string, data []byte) upload {
	e.t.Helper()
	status, h, b := postAs(e.t, e.hs.Client(), token, e.hs.URL, "image", data)
	if status != http.StatusAccepted {
		e.t.Fatalf("upload: %d %s", status, b)
	}
	var up upload
	if err := json.Unmarshal(b, &up); err != nil {
		e.t.Fatalf("upload: %v in %s", err, b)
	}
	if h.Get("Location") != "/uploads/"+up.ID || !validUploadID(up.ID) || up.JobURL != "/jobs/"+up.Job {
		e.t.Fatalf("upload: Location %q, body %s", h.Get("Location"), b)
	}
	return up
}

// wait waits for the job of up to end and returns it.
func (e *env) wait(up upload) jobqueue.JobInfo {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := e.q.Wait(ctx, up.Job)
	if err != nil {
		e.t.Fatalf("job %s: %v", up.Job, err)
	}
	return info
}

// fetch polls a thumbnail's URL until it is served and returns its
// decoded dimensions.
func fetch(t *testing.T, c *http.Client, url string) (int, int) {
	t.Helper()
	return fetchAs(t, c, "", url)
}

func fetchAs(t *testing.T, c *http.Client, token, url string) (int, int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, h, b := doAs(t, c, token, "GET", url, "", nil)
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

// files returns the names of the files under dir, recursively, relative
// to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	return names
}

// checkError checks an error answer's status and code.
func checkError(t *testing.T, name string, status int, b []byte, wantStatus int, wantCode string) {
	t.Helper()
	var ae apiError
	if err := json.Unmarshal(b, &ae); err != nil || status != wantStatus || ae.Error.Code != wantCode || ae.Error.Message == "" {
		t.Errorf("%s: %d %s, want %d %s", name, status, b, wantStatus, wantCode)
	}
}

// TestUpload uploads a 1600x900 PNG and gets every size back with the
// right dimensions from one job, which decoded the image once, made the
// sizes smallest first and removed the original.
// (Dimensions do not depend on the filter: the bilinear kernel takes half
// the time of the default Catmull-Rom one under the race detector.)
func TestUpload(t *testing.T) {
	e := newEnv(t, 2, "bilinear", serverConfig{}, true)
	sub := e.q.Subscribe(jobqueue.EventFilter{Type: thumbnailsType, Kinds: []jobqueue.EventKind{jobqueue.EventProgress}})
	defer sub.Close()

	up := e.upload(encode(t, "png", gradient(1600, 900)))
	if up.Format != "png" || up.Width != 1600 || up.Height != 900 || up.Owner != access.Local.Name ||
		up.Priority != jobqueue.High || len(up.Thumbnails) != 5 {
		t.Fatalf("upload %+v", up)
	}
	for i, th := range up.Thumbnails {
		if th.Size != defaultSizes[i] || th.URL != fmt.Sprintf("/thumbnails/%s/%d", up.ID, th.Size) {
			t.Fatalf("thumbnail %d: %+v", i, th)
		}
	}
	want := map[int]string{64: "64x36", 128: "128x72", 256: "256x144", 512: "512x288", 1024: "1024x576"}
	if got := e.fetchAll(up); !maps.Equal(got, want) {
		t.Fatalf("dimensions %v, want %v", got, want)
	}

	// The job shows its result and its last progress report.
	info := e.wait(up)
	var out thumbnailsOut
	json.Unmarshal(info.Result, &out)
	if info.State != jobqueue.StateSucceeded || info.Progress != 100 || !strings.HasPrefix(info.ProgressMessage, "made 1024x576, ") ||
		len(out.Thumbnails) != 5 || out.Thumbnails[0].Width != 64 || out.Thumbnails[0].Height != 36 || out.Thumbnails[0].Bytes <= 0 ||
		out.Thumbnails[0].URL != up.Thumbnails[0].URL || info.Metadata["upload"] != up.ID || info.Owner != "local" || info.MaxAttempts != 1 {
		t.Fatalf("job %+v", info)
	}
	// The job reported its steps, in order: the decode, then each size,
	// smallest first.
	var steps []string
	for len(steps) < 6 {
		select {
		case ev := <-sub.Events():
			if ev.JobID == up.Job {
				steps = append(steps, fmt.Sprintf("%g %s", ev.Progress, ev.Message))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("progress events: %q", steps)
		}
	}
	if !regexp.MustCompile(`^10 decoded 1600x900 png\|28 made 64x36, \d+ bytes\|46 made 128x72, \d+ bytes\|64 made 256x144, \d+ bytes\|82 made 512x288, \d+ bytes\|100 made 1024x576, \d+ bytes$`).MatchString(strings.Join(steps, "|")) {
		t.Fatalf("progress steps %q", steps)
	}

	// The upload lists every size as ready.
	status, _, b := do(t, e.hs.Client(), "GET", e.hs.URL+"/uploads/"+up.ID, "", nil)
	var got upload
	if err := json.Unmarshal(b, &got); err != nil || status != http.StatusOK || len(got.Thumbnails) != 5 ||
		got.State != jobqueue.StateSucceeded || got.Progress != 100 {
		t.Fatalf("GET /uploads: %d %s", status, b)
	}
	for _, th := range got.Thumbnails {
		if !th.Ready {
			t.Fatalf("GET /uploads: %s", b)
		}
	}
	if n := e.decodes.Load(); n != 1 {
		t.Fatalf("%d decodes for one upload", n)
	}
	if f := files(t, e.st.originalsDir()); len(f) != 0 {
		t.Fatalf("originals left: %v", f)
	}
}

// TestOneDecodePerUpload: three uploads of five sizes each cost three
// decodes, not fifteen (the job of an upload makes every size from the
// one decoded image), and the store's byte count is what the files take.
func TestOneDecodePerUpload(t *testing.T) {
	e := newEnv(t, 2, "approx", serverConfig{}, true)
	var ups []upload
	for i := range 3 {
		ups = append(ups, e.upload(encode(t, "png", gradient(300+i, 200))))
	}
	made := 0
	for _, up := range ups {
		var out thumbnailsOut
		json.Unmarshal(e.wait(up).Result, &out)
		made += len(out.Thumbnails)
	}
	if n := e.decodes.Load(); made != 15 || n != 3 {
		t.Fatalf("%d thumbnails made with %d decodes; want 15 with 3", made, n)
	}
	if used, on := e.st.usage(), dirSize(e.st.dir); used != on {
		t.Fatalf("store counts %d bytes, the directory holds %d", used, on)
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

// TestReduce: a whole-factor reduction averages each block, and prepare
// reduces only an image more than four times the largest size.
func TestReduce(t *testing.T) {
	src := image.NewGray16(image.Rect(10, 20, 15, 24)) // 5x4, offset, 16-bit
	for y := 20; y < 24; y++ {
		for x := 10; x < 15; x++ {
			src.SetGray16(x, y, color.Gray16{Y: uint16((x - 10) * 0x1000)})
		}
	}
	got := reduce(src, 2) // 2x2; the fifth column is left out
	if got.Bounds() != image.Rect(0, 0, 2, 2) {
		t.Fatalf("bounds %v", got.Bounds())
	}
	// columns 0,1 average 0x0800 (8-bit 0x08); columns 2,3 0x2800 (0x28)
	if c := got.RGBAAt(0, 1); c.R != 0x08 || c.A != 0xff {
		t.Fatalf("pixel 0,1: %v", c)
	}
	if c := got.RGBAAt(1, 0); c.R != 0x28 || c.G != 0x28 || c.A != 0xff {
		t.Fatalf("pixel 1,0: %v", c)
	}
	big := image.NewRGBA(image.Rect(0, 0, 1000, 500))
	if r := prepare(big, 100, 50).Bounds(); r != image.Rect(0, 0, 200, 100) {
		t.Fatalf("prepare 1000x500 for 100x50: %v", r)
	}
	if r := prepare(big, 300, 150).Bounds(); r != big.Bounds() {
		t.Fatalf("prepare 1000x500 for 300x150: %v", r)
	}
}

// TestPriorities queues a big, a medium and a small image while the only
// worker is stopped: no upload is answered before its image is decoded,
// and once the worker starts, the small image's job runs first and the
// big one's last, although it came first.
func TestPriorities(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{SmallImage: 100 * 100, Sizes: []int{32, 64}}, false)
	type answer struct {
		name string
		up   upload
	}
	answers := make(chan answer, 3)
	for i, c := range []struct {
		name string
		w, h int
		prio jobqueue.Priority
	}{{"big", 300, 300, jobqueue.Low}, {"medium", 200, 200, jobqueue.Normal}, {"small", 50, 50, jobqueue.High}} {
		data := encode(t, "png", gradient(c.w, c.h))
		go func() {
			status, _, b := post(t, e.hs.Client(), e.hs.URL, "image", data)
			var up upload
			if err := json.Unmarshal(b, &up); err != nil || status != http.StatusAccepted || up.Priority != c.prio {
				t.Errorf("%s: %d %s", c.name, status, b)
			}
			answers <- answer{c.name, up}
		}()
		waitFor(t, func() bool { return e.q.Stats().Pending == i+1 })
	}
	select {
	case a := <-answers:
		t.Fatalf("%s answered before its image was decoded: %+v", a.name, a.up)
	case <-time.After(50 * time.Millisecond):
	}
	if err := e.q.Start(); err != nil {
		t.Fatal(err)
	}
	started := map[string]time.Time{}
	for range 3 {
		a := <-answers
		started[a.name] = e.wait(a.up).StartedAt
	}
	if !started["small"].Before(started["medium"]) || !started["medium"].Before(started["big"]) {
		t.Fatalf("started: %v", started)
	}
}

// waitFor polls cond until it holds, for at most ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
	}
}

func TestUploadErrors(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{MaxUpload: 64 << 10, MaxPixels: 200 * 200}, true)
	c := e.hs.Client()
	url := e.hs.URL
	big := encode(t, "png", noise(200, 200))
	if len(big) <= 64<<10 {
		t.Fatalf("test image of %d bytes is not over the limit", len(big))
	}

	status, _, b := post(t, c, url, "image", []byte("hello, I am a text file\n"))
	checkError(t, "text file", status, b, 415, "unsupported_image")
	status, _, b = post(t, c, url, "image", encode(t, "gif", image.NewPaletted(image.Rect(0, 0, 201, 200), palette.Plan9)))
	checkError(t, "too many pixels", status, b, 413, "too_many_pixels")
	status, _, b = post(t, c, url, "image", big)
	checkError(t, "oversize upload", status, b, 413, "too_large")
	status, _, b = post(t, c, url, "photo", encode(t, "png", gradient(20, 20)))
	checkError(t, "no image field", status, b, 400, "missing_image")
	status, _, b = do(t, c, "POST", url+"/upload", "application/json", []byte(`{"image":"x"}`))
	checkError(t, "not multipart", status, b, 415, "unsupported_media_type")
	status, _, b = do(t, c, "POST", url+"/upload", "multipart/form-data; boundary=xyz", []byte("--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nab"))
	checkError(t, "truncated form", status, b, 400, "bad_request")

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
		checkError(t, c.name, status, b, 404, c.code)
	}
	status, h, b := do(t, c, "PUT", url+"/upload", "", nil)
	checkError(t, "wrong method", status, b, 405, "method_not_allowed")
	if h.Get("Allow") != "POST" {
		t.Errorf("Allow %q", h.Get("Allow"))
	}

	// Refused uploads leave no file behind, and the accepted one leaves
	// its thumbnails only.
	e.fetchAll(up)
	e.wait(up)
	if f := files(t, e.st.dir); len(f) != 6 || !slices.Contains(f, "thumbnails/"+up.ID+"/meta.json") {
		t.Fatalf("files: %v", f)
	}
	status, _, b = do(t, c, "GET", url+"/", "", nil)
	if status != http.StatusOK || !bytes.Contains(b, []byte(`enctype="multipart/form-data"`)) {
		t.Fatalf("GET /: %d %s", status, b)
	}
}

// pngHeader returns the signature and IHDR chunk of a w x h 8-bit RGBA
// PNG: what image.DecodeConfig reads.
func pngHeader(t *testing.T, w, h int) []byte {
	t.Helper()
	b := encode(t, "png", image.NewNRGBA(image.Rect(0, 0, w, h)))
	return b[:8+25]
}

// TestRefusedImages sends files that are not what their header says: a
// truncated PNG, a 16x16 PNG header followed by megabytes of zeros, a PNG
// with more pixel data than its size needs, images followed by junk, a
// truncated JPEG, and a PNG whose pixel data is corrupt (found only by
// the decode). Each is refused with 422 before any 202, and nothing is
// left on disk. Only the corrupt PNG reaches a decode: the others are
// refused from their structure.
func TestRefusedImages(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{MaxUpload: 4 << 20}, true)
	good := encode(t, "png", noise(120, 100))
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff // inside IDAT: a checksum error for the decoder
	extraIDAT := bytes.Clone(good[:len(good)-12])
	extraIDAT = binaryAppendChunk(extraIDAT, "IDAT", make([]byte, 100<<10))
	extraIDAT = append(extraIDAT, good[len(good)-12:]...)
	jpg := encode(t, "jpeg", gradient(200, 100))
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"truncated PNG", good[:len(good)/2]},
		{"16x16 PNG header and 3 MB of zeros", append(pngHeader(t, 16, 16), make([]byte, 3<<20)...)},
		{"PNG with more pixel data than it needs", extraIDAT},
		{"PNG followed by junk", append(bytes.Clone(good), make([]byte, 64<<10)...)},
		{"GIF followed by junk", append(encode(t, "gif", image.NewPaletted(image.Rect(0, 0, 16, 16), palette.Plan9)), make([]byte, 64<<10)...)},
		{"JPEG followed by junk", append(bytes.Clone(jpg), make([]byte, 64<<10)...)},
		{"truncated JPEG", jpg[:len(jpg)*2/3]},
		{"corrupt PNG", corrupt},
	} {
		status, _, b := post(t, e.hs.Client(), e.hs.URL, "image", c.data)
		checkError(t, c.name, status, b, 422, "bad_image")
		t.Logf("%s: %d %s", c.name, status, bytes.TrimSpace(b))
	}
	if n := e.decodes.Load(); n != 1 {
		t.Errorf("%d decodes; want 1 (the corrupt PNG)", n)
	}
	if f := files(t, e.st.dir); len(f) != 0 {
		t.Fatalf("files left: %v", f)
	}
	if used := e.st.usage(); used != 0 {
		t.Fatalf("store counts %d bytes", used)
	}
}

// binaryAppendChunk appends a PNG chunk (with a correct CRC) to b.
func binaryAppendChunk(b []byte, typ string, data []byte) []byte {
	b = append(b, byte(len(data)>>24), byte(len(data)>>16), byte(len(data)>>8), byte(len(data)))
	start := len(b)
	b = append(append(b, typ...), data...)
	crc := crc32IEEE(b[start:])
	return append(b, byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc))
}

// TestDecodedSizeLimit: the decoded-size limit counts each image at its
// real bytes per pixel. With a limit of 30,000 bytes and no pixel limit
// in reach, a 60x60 16-bit PNG (8 bytes a pixel) is refused while an
// 8-bit one of the same size is accepted, and paletted and 16-bit gray
// images of 100x100 (1 and 2 bytes a pixel) are accepted though a 4-byte
// count would refuse them.
func TestDecodedSizeLimit(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{MaxDecoded: 30_000, MaxPixels: 1_000_000, Sizes: []int{32}}, true)
	rgba64 := image.NewNRGBA64(image.Rect(0, 0, 60, 60))
	for i := range rgba64.Pix {
		rgba64.Pix[i] = byte(i * 7)
	}
	status, _, b := post(t, e.hs.Client(), e.hs.URL, "image", encode(t, "png", rgba64))
	checkError(t, "16-bit 60x60", status, b, 413, "too_large_decoded")
	if !bytes.Contains(b, []byte("takes 35906 bytes decoded")) { // 60*60*8 + two rows + a palette
		t.Errorf("16-bit 60x60: %s", b)
	}
	gray16 := image.NewGray16(image.Rect(0, 0, 100, 100))
	for _, img := range []image.Image{
		image.NewNRGBA(image.Rect(0, 0, 60, 60)),
		image.NewPaletted(image.Rect(0, 0, 100, 100), palette.WebSafe),
		gray16,
	} {
		up := e.upload(encode(t, "png", img))
		e.wait(up)
	}
	up := e.upload(encode(t, "gif", image.NewPaletted(image.Rect(0, 0, 100, 100), palette.Plan9)))
	e.wait(up)
}

// TestDecodeBytes: what inspect counts for an image is at least what its
// decode allocates for the pixels, and not much more.
func TestDecodeBytes(t *testing.T) {
	rgba64 := image.NewRGBA64(image.Rect(0, 0, 40, 30))
	for i := range rgba64.Pix {
		rgba64.Pix[i] = byte(i)
	}
	for _, c := range []struct {
		name   string
		data   []byte
		perPix float64
	}{
		{"png rgba64", encode(t, "png", rgba64), 8},
		{"png rgba", encode(t, "png", gradient(40, 30)), 4},
		{"png gray", encode(t, "png", image.NewGray(image.Rect(0, 0, 40, 30))), 1},
		{"png gray16", encode(t, "png", image.NewGray16(image.Rect(0, 0, 40, 30))), 2},
		{"png paletted", encode(t, "png", image.NewPaletted(image.Rect(0, 0, 40, 30), palette.Plan9)), 1},
		{"gif", encode(t, "gif", image.NewPaletted(image.Rect(0, 0, 40, 30), palette.Plan9)), 1},
		{"jpeg 4:2:0", encode(t, "jpeg", gradient(40, 32)), 1.5},
	} {
		info, err := inspect(bytes.NewReader(c.data), int64(len(c.data)), limits{maxPixels: 1 << 30, maxDecoded: 1 << 30})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		img, _, err := decodeFull(bytes.NewReader(c.data), int64(len(c.data)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		px := float64(info.Width * info.Height)
		got := pixelBytes(img)
		if info.DecodeBytes < got || float64(info.DecodeBytes) > c.perPix*px*1.2+8192 || float64(got) < c.perPix*px {
			t.Errorf("%s: counted %d bytes, decoded %d (%.2f a pixel), want %g a pixel", c.name, info.DecodeBytes, got, float64(got)/px, c.perPix)
		}
	}
}

// pixelBytes returns the bytes a decoded image holds.
func pixelBytes(img image.Image) int64 {
	switch m := img.(type) {
	case *image.RGBA:
		return int64(cap(m.Pix))
	case *image.NRGBA:
		return int64(cap(m.Pix))
	case *image.RGBA64:
		return int64(cap(m.Pix))
	case *image.NRGBA64:
		return int64(cap(m.Pix))
	case *image.Gray:
		return int64(cap(m.Pix))
	case *image.Gray16:
		return int64(cap(m.Pix))
	case *image.CMYK:
		return int64(cap(m.Pix))
	case *image.Paletted:
		return int64(cap(m.Pix) + 24*len(m.Palette))
	case *image.YCbCr:
		return int64(cap(m.Y) + cap(m.Cb) + cap(m.Cr))
	}
	return 1 << 62
}

// TestOriginalsRemoved: the originals directory is empty once each
// upload's job has ended, whether it succeeded, failed (a corrupt image)
// or was canceled (its decode did not start within DecodeWait: 503).
func TestOriginalsRemoved(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{Sizes: []int{32}, DecodeWait: 300 * time.Millisecond}, false)
	// Canceled: no worker runs, so the decode never comes.
	status, h, b := post(t, e.hs.Client(), e.hs.URL, "image", encode(t, "png", gradient(50, 40)))
	checkError(t, "no decode in time", status, b, 503, "busy")
	if h.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	jobs, _ := e.q.List(context.Background(), jobqueue.ListFilter{})
	if len(jobs) != 1 || jobs[0].State != jobqueue.StateCanceled {
		t.Fatalf("jobs: %+v", jobs)
	}
	if f := files(t, e.st.dir); len(f) != 0 {
		t.Fatalf("after a canceled job: %v", f)
	}

	if err := e.q.Start(); err != nil {
		t.Fatal(err)
	}
	good := encode(t, "png", gradient(50, 40))
	e.wait(e.upload(good))
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	status, _, b = post(t, e.hs.Client(), e.hs.URL, "image", corrupt)
	checkError(t, "corrupt", status, b, 422, "bad_image")
	if f := files(t, e.st.originalsDir()); len(f) != 0 {
		t.Fatalf("originals left: %v", f)
	}
}

// tokens are the principals of the access tests.
var tokens = map[string]wsbridge.Principal{
	"alice-token-0123456789": {Name: "alice"},
	"bob-token-0123456789ab": {Name: "bob"},
	"ops-token-0123456789ab": {Name: "ops", Operator: true},
}

const (
	alice = "alice-token-0123456789"
	bob   = "bob-token-0123456789ab"
	ops   = "ops-token-0123456789ab"
)

// TestAccess: with tokens, a request without a valid one is 401 with
// WWW-Authenticate: Bearer; another principal's upload, job and
// thumbnails are 404, as if they did not exist; an operator sees them.
func TestAccess(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{Tokens: tokens, Sizes: []int{32, 64}}, true)
	c, url := e.hs.Client(), e.hs.URL
	data := encode(t, "png", gradient(80, 60))
	for _, tok := range []string{"", "not-a-token-at-all-xx"} {
		status, h, b := postAs(t, c, tok, url, "image", data)
		checkError(t, "upload without a valid token", status, b, 401, "unauthorized")
		if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 with WWW-Authenticate %q", h.Get("WWW-Authenticate"))
		}
	}
	up := e.uploadAs(alice, data)
	if up.Owner != "alice" {
		t.Fatalf("owner %q", up.Owner)
	}
	fetchAs(t, c, alice, url+up.Thumbnails[0].URL)
	e.wait(up)
	paths := []string{"/uploads/" + up.ID, up.JobURL, up.Thumbnails[0].URL, up.Thumbnails[1].URL}
	for _, path := range paths {
		status, _, b := doAs(t, c, "", "GET", url+path, "", nil)
		checkError(t, "no token: "+path, status, b, 401, "unauthorized")
		status, _, b = doAs(t, c, bob, "GET", url+path, "", nil)
		checkError(t, "bob: "+path, status, b, 404, "not_found")
		for _, tok := range []string{alice, ops} {
			if status, _, b := doAs(t, c, tok, "GET", url+path, "", nil); status != http.StatusOK {
				t.Errorf("%s: %s: %d %s", tokens[tok].Name, path, status, b)
			}
		}
	}
	// The form posts with the token the page was opened with.
	status, _, b := doAs(t, c, "", "GET", url+"/?token="+alice, "", nil)
	if status != http.StatusOK || !bytes.Contains(b, []byte(`action="/upload?token=`+alice+`"`)) {
		t.Fatalf("GET /?token=: %d %s", status, b)
	}
}

// TestQuota: a principal at its limit of uploads in progress gets 429
// with Retry-After, while another principal's upload goes through.
func TestQuota(t *testing.T) {
	e := newEnv(t, 1, "approx", serverConfig{Tokens: tokens, MaxActive: 1, Sizes: []int{32}}, false)
	c, url := e.hs.Client(), e.hs.URL
	data := encode(t, "png", gradient(40, 30))
	answers := make(chan int, 2)
	upload := func(tok string) {
		status, _, b := postAs(t, c, tok, url, "image", data)
		if status != http.StatusAccepted {
			t.Errorf("%s: %d %s", tokens[tok].Name, status, b)
		}
		answers <- status
	}
	go upload(alice) // waits for its decode: no worker runs yet
	waitFor(t, func() bool { u, _ := e.q.Usage(context.Background(), "alice"); return u.Active == 1 })
	status, h, b := postAs(t, c, alice, url, "image", data)
	checkError(t, "alice's second upload", status, b, 429, "quota_exceeded")
	if h.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	go upload(bob)
	waitFor(t, func() bool { u, _ := e.q.Usage(context.Background(), "bob"); return u.Active == 1 })
	if err := e.q.Start(); err != nil {
		t.Fatal(err)
	}
	<-answers
	<-answers
	// Once alice's job is done, she may upload again.
	waitFor(t, func() bool { u, _ := e.q.Usage(context.Background(), "alice"); return u.Active == 0 })
	e.wait(e.uploadAs(alice, data))
}

// TestDiskBudget: the bytes kept stay under MaxDisk: the oldest
// uploads' thumbnails are removed for new ones (and their URLs become
// 404), the store's count matches the directory, and an upload that
// cannot fit beside uploads in progress gets 507.
func TestDiskBudget(t *testing.T) {
	const maxUpload, maxDisk = 64 << 10, 64<<10 + 12<<10
	e := newEnv(t, 1, "approx", serverConfig{MaxUpload: maxUpload, MaxDisk: maxDisk, Sizes: []int{64}}, true)
	var ups []upload
	for i := range 6 {
		up := e.upload(encode(t, "png", noise(100+i, 60)))
		e.wait(up)
		ups = append(ups, up)
		if used, on := e.st.usage(), dirSize(e.st.dir); used != on || used > maxDisk {
			t.Fatalf("after upload %d: the store counts %d bytes, the directory holds %d; the budget is %d", i, used, on, maxDisk)
		}
	}
	status, _, b := do(t, e.hs.Client(), "GET", e.hs.URL+ups[0].Thumbnails[0].URL, "", nil)
	checkError(t, "the oldest upload", status, b, 404, "not_found")
	fetch(t, e.hs.Client(), e.hs.URL+ups[5].Thumbnails[0].URL)

	// An upload waiting for its decode holds its file: no room for a second.
	e2 := newEnv(t, 1, "approx", serverConfig{MaxUpload: maxUpload, MaxDisk: maxUpload + 8<<10, Sizes: []int{64}}, false)
	data := encode(t, "png", noise(100, 60))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if status, _, b := post(t, e2.hs.Client(), e2.hs.URL, "image", data); status != http.StatusAccepted {
			t.Errorf("first upload: %d %s", status, b)
		}
	}()
	waitFor(t, func() bool { return e2.q.Stats().Pending == 1 })
	status, h, b := post(t, e2.hs.Client(), e2.hs.URL, "image", data)
	checkError(t, "second upload", status, b, 507, "insufficient_storage")
	if h.Get("Retry-After") == "" {
		t.Error("507 without Retry-After")
	}
	if err := e2.q.Start(); err != nil {
		t.Fatal(err)
	}
	<-done
}

// TestExposed: without tokens, run refuses an address other machines
// can reach, and says what to do.
func TestExposed(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8081"} {
		err := run(context.Background(), io.Discard, config{addr: addr})
		if !errors.Is(err, access.ErrExposed) || !strings.Contains(err.Error(), "-tokens") {
			t.Errorf("%s: %v", addr, err)
		}
	}
	var stderr bytes.Buffer
	if code := cli([]string{"-addr", "0.0.0.0:8081"}, &stderr); code != 1 || !strings.Contains(stderr.String(), "-insecure") {
		t.Errorf("cli: exit %d, %s", code, stderr.String())
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

// startRun runs the program's run function on a free loopback port and
// returns its base URL, a function that interrupts it (as Ctrl-C does)
// and returns run's error, and its log.
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
// With -dir and -tokens, a second run on the same directory serves the
// thumbnails the first one made, to their owner only.
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
	m := regexp.MustCompile(`files in (\S+)\);`).FindStringSubmatch(log.String())
	if m == nil || !strings.Contains(log.String(), "shutting down") || !strings.Contains(log.String(), "no tokens: loopback only") {
		t.Fatalf("log:\n%s", log)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s left behind: %v", m[1], err)
	}
	c.CloseIdleConnections()

	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokenFile, []byte(alice+" alice\n"+bob+" bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, stop, log = startRun(t, config{workers: 1, filter: "approx", sizes: []int{64}, dir: dir, tokens: tokenFile})
	status, _, b = postAs(t, c, alice, url, "image", png)
	if err := json.Unmarshal(b, &up); err != nil || status != http.StatusAccepted {
		t.Fatalf("upload: %d %s", status, b)
	}
	fetchAs(t, c, alice, url+up.Thumbnails[0].URL)
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	if !strings.Contains(log.String(), "2 tokens") {
		t.Fatalf("log:\n%s", log)
	}
	c.CloseIdleConnections()
	url, stop, log = startRun(t, config{workers: 1, sizes: []int{64}, dir: dir, tokens: tokenFile})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("second run: %v\n%s", err, log)
		}
	}()
	if w, h := fetchAs(t, c, alice, url+up.Thumbnails[0].URL); w != 64 || h != 48 {
		t.Fatalf("after a restart: %dx%d", w, h)
	}
	status, _, b = doAs(t, c, bob, "GET", url+up.Thumbnails[0].URL, "", nil)
	checkError(t, "bob after a restart", status, b, 404, "not_found")
	if f := files(t, filepath.Join(dir, "originals")); len(f) != 0 {
		t.Fatalf("originals: %v", f)
	}
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{{"-nosuchflag"}, {"extra"}, {"-sizes", "64,huge"}, {"-sizes", ""}, {"-max-disk", "lots"}} {
		if code := cli(args, &stderr); code != 2 {
			t.Errorf("%q: exit %d", args, code)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-filter", "blurry"}, "-filter"},
		{[]string{"-max-active", "-1"}, "-max-active"},
		{[]string{"-max-disk", "1000", "-max-upload", "2000"}, "-max-disk"},
		{[]string{"-tokens", filepath.Join(t.TempDir(), "none")}, "tokens"},
	} {
		stderr.Reset()
		if code := cli(c.args, &stderr); code != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%q: exit %d %s", c.args, code, stderr.String())
		}
	}
	if s, err := parseSizes("512, 64,128,64"); err != nil || !slices.Equal(s, []int{64, 128, 512}) {
		t.Fatalf("parseSizes: %v %v", s, err)
	}
}

func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

// TestVerbose checks -h (exit 0) and that the queue's logger, as -v sets
// it, writes its records.
func TestVerbose(t *testing.T) {
	var help bytes.Buffer
	if code := cli([]string{"-h"}, &help); code != 0 || !strings.Contains(help.String(), "-v\tdebug log") {
		t.Fatalf("-h: exit %d\n%s", code, help.String())
	}
	var stderr bytes.Buffer
	if code := cli([]string{"-v", "-filter", "blurry"}, &stderr); code != 1 {
		t.Fatalf("-v -filter blurry: exit %d\n%s", code, stderr.String())
	}
	var logs syncBuffer
	_, stop, _ := startRun(t, config{logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `msg="queue started"`) {
		t.Errorf("no queue records:\n%s", logs.String())
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corework/corework/jobqueue"
	"golang.org/x/image/draw"
)

// thumbnailsType is the job type that decodes one upload and makes all
// its thumbnails.
const thumbnailsType = "thumbnails"

// maxSize bounds a thumbnail's longer side.
const maxSize = 4096

// filters are the resampling filters -filter selects, slowest and best
// first.
var filters = map[string]draw.Scaler{
	"catmullrom": draw.CatmullRom,
	"bilinear":   draw.BiLinear,
	"approx":     draw.ApproxBiLinear,
}

// priorityFor is the priority of the job of an image of pixels pixels:
// the images up to small pixels (quick to decode and resize, the usual
// phone photo or screenshot) before bigger ones, so a page waiting for
// the previews of small images is not stuck behind someone's 50-megapixel
// scans. The queue's aging (see run) keeps the big ones from starving.
func priorityFor(pixels, small int64) jobqueue.Priority {
	switch {
	case pixels <= small:
		return jobqueue.High
	case pixels <= 8*small:
		return jobqueue.Normal
	default:
		return jobqueue.Low
	}
}

// fit returns the dimensions of a w x h image scaled so that its longer
// side is size, aspect preserved (rounded, at least 1 pixel); an image no
// larger than size keeps its dimensions: it is never upscaled.
func fit(w, h, size int) (int, int) {
	long, short := w, h
	if h > w {
		long, short = h, w
	}
	if long <= size {
		return w, h
	}
	scaled := max((short*size+long/2)/long, 1)
	if w >= h {
		return size, scaled
	}
	return scaled, size
}

// uploadMeta is what the store keeps about an upload beside its
// thumbnails (meta.json), so that a restart serves them to their owner
// only.
type uploadMeta struct {
	ID      string    `json:"id"`
	Owner   string    `json:"owner"`
	Format  string    `json:"format"`
	Width   int       `json:"width"`
	Height  int       `json:"height"`
	Job     string    `json:"job"`
	Created time.Time `json:"created"`
}

// store keeps the originals and the thumbnails in one directory:
//
//	originals/{upload}               the uploaded file, until its job has decoded it
//	thumbnails/{upload}/meta.json    its uploadMeta
//	thumbnails/{upload}/{size}.png
//
// and counts the bytes they take (see add).
type store struct {
	dir    string
	loaded []uploadMeta // the uploads found by openStore, oldest first

	mu   sync.Mutex
	used int64
}

// openStore returns the store in dir, creating its directories. Files
// left among the originals (by a crash: no job will ever read them) are
// removed, as are thumbnail directories without a readable meta.json; the
// other uploads are in loaded, oldest first, and their bytes in usage.
func openStore(dir string) (*store, error) {
	s := &store{dir: dir}
	for _, d := range []string{s.originalsDir(), s.thumbnailsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	left, err := os.ReadDir(s.originalsDir())
	if err != nil {
		return nil, err
	}
	for _, e := range left {
		if err := os.RemoveAll(filepath.Join(s.originalsDir(), e.Name())); err != nil {
			return nil, err
		}
	}
	ups, err := os.ReadDir(s.thumbnailsDir())
	if err != nil {
		return nil, err
	}
	for _, e := range ups {
		var m uploadMeta
		b, err := os.ReadFile(filepath.Join(s.thumbnailsDir(), e.Name(), "meta.json"))
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil || m.ID != e.Name() || !validUploadID(m.ID) {
			if err := os.RemoveAll(filepath.Join(s.thumbnailsDir(), e.Name())); err != nil {
				return nil, err
			}
			continue
		}
		s.used += dirSize(filepath.Join(s.thumbnailsDir(), e.Name()))
		s.loaded = append(s.loaded, m)
	}
	slices.SortFunc(s.loaded, func(a, b uploadMeta) int { return a.Created.Compare(b.Created) })
	return s, nil
}

func (s *store) originalsDir() string  { return filepath.Join(s.dir, "originals") }
func (s *store) thumbnailsDir() string { return filepath.Join(s.dir, "thumbnails") }

func (s *store) originalPath(upload string) string {
	return filepath.Join(s.originalsDir(), upload)
}

func (s *store) uploadDir(upload string) string {
	return filepath.Join(s.thumbnailsDir(), upload)
}

func (s *store) thumbnailPath(upload string, size int) string {
	return filepath.Join(s.uploadDir(upload), strconv.Itoa(size)+".png")
}

// add counts n more bytes (fewer if negative) as used.
func (s *store) add(n int64) {
	s.mu.Lock()
	s.used += n
	s.mu.Unlock()
}

// usage returns the bytes counted as used: the files, and the room
// reserved for uploads being received.
func (s *store) usage() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// removeFile removes a counted file, if it is still there, and stops
// counting its bytes. It may be called more than once for one file.
func (s *store) removeFile(path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if os.Remove(path) == nil {
		s.add(-fi.Size())
	}
}

// removeUpload removes an upload's thumbnails and meta.json.
func (s *store) removeUpload(id string) error {
	dir := s.uploadDir(id)
	n := dirSize(dir)
	err := os.RemoveAll(dir)
	if err != nil {
		n -= dirSize(dir) // what could not be removed is still there
	}
	s.add(-n)
	return err
}

// writeMeta stores m as its upload's meta.json.
func (s *store) writeMeta(m uploadMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	n, err := writeFile(filepath.Join(s.uploadDir(m.ID), "meta.json"), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	s.add(n)
	return err
}

// dirSize returns the bytes of the regular files in dir (0 if it is
// gone).
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// validUploadID reports whether id can be an upload's ID: 1-64 letters and
// digits, so it is safe as a file name.
func validUploadID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// thumbnailsIn is the payload of a thumbnails job.
type thumbnailsIn struct {
	Upload string `json:"upload"`
	Sizes  []int  `json:"sizes"`
}

// thumbnailsOut is the result of a thumbnails job.
type thumbnailsOut struct {
	Upload     string         `json:"upload"`
	Format     string         `json:"format"`
	Width      int            `json:"width"`
	Height     int            `json:"height"`
	Thumbnails []thumbnailOut `json:"thumbnails"`
}

// thumbnailOut is one thumbnail a job made.
type thumbnailOut struct {
	Size   int    `json:"size"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Bytes  int64  `json:"bytes"`
	URL    string `json:"url"`
}

// thumbnailer runs thumbnails jobs on a store with one resampling filter.
type thumbnailer struct {
	st     *store
	scaler draw.Scaler
	// decode decodes an upload; nil means decodeFull. Tests count calls.
	decode func(r io.ReaderAt, size int64) (image.Image, string, error)
}

// decodedMessage begins the progress message a job reports once its
// upload is decoded: the upload handler waits for it.
const decodedMessage = "decoded"

// run is the job of one upload. It decodes the original, once, removes
// it and reports "decoded WxH format"; then it makes every size from the
// decoded image, smallest first, writing each PNG as soon as it is made
// and reporting it ("made WxH, N bytes"), so the small previews are
// served while the large sizes are still being made. The original is
// removed however the job ends. The job is not retried (the original is
// gone once decoded): every error is Permanent.
func (t *thumbnailer) run(ctx context.Context, in thumbnailsIn) (thumbnailsOut, error) {
	path := t.st.originalPath(in.Upload)
	defer t.st.removeFile(path)
	if !validUploadID(in.Upload) || len(in.Sizes) == 0 || slices.ContainsFunc(in.Sizes, func(s int) bool { return s < 1 || s > maxSize }) {
		return thumbnailsOut{}, jobqueue.Permanent(fmt.Errorf("upload %q at sizes %v: bad upload or size", in.Upload, in.Sizes))
	}
	sizes := slices.Sorted(slices.Values(in.Sizes))

	work, b, format, err := t.load(ctx, path, sizes[len(sizes)-1])
	if err != nil {
		return thumbnailsOut{}, jobqueue.Permanent(err)
	}
	w, h := b.Dx(), b.Dy()
	out := thumbnailsOut{Upload: in.Upload, Format: format, Width: w, Height: h}
	for i, size := range sizes {
		if err := ctx.Err(); err != nil {
			return thumbnailsOut{}, jobqueue.Permanent(context.Cause(ctx))
		}
		tw, th := fit(w, h, size)
		dst := work
		if wb := work.Bounds(); wb.Dx() != tw || wb.Dy() != th {
			rgba := image.NewRGBA(image.Rect(0, 0, tw, th))
			t.scaler.Scale(rgba, rgba.Bounds(), work, wb, draw.Src, nil)
			dst = rgba
		}
		n, err := writeFile(t.st.thumbnailPath(in.Upload, size), func(w io.Writer) error {
			return (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(w, dst)
		})
		t.st.add(n)
		if err != nil {
			return thumbnailsOut{}, jobqueue.Permanent(err)
		}
		out.Thumbnails = append(out.Thumbnails, thumbnailOut{
			Size: size, Width: tw, Height: th, Bytes: n,
			URL: fmt.Sprintf("/thumbnails/%s/%d", in.Upload, size),
		})
		jobqueue.Progress(ctx, 10+90*float64(i+1)/float64(len(sizes)), fmt.Sprintf("made %dx%d, %d bytes", tw, th, n))
	}
	return out, nil
}

// load decodes the upload at path with t.decode, removes the file,
// reports "decoded WxH format" and returns the image to resample the
// sizes from, with the decoded image's bounds and format: the decoded
// image itself, or for an image more than four times the largest size,
// largest, in each dimension, the image reduced by a whole factor to at
// least twice that (see prepare). Every size is then resampled from a
// small image, not from the full one, which the collector can take once
// load returns.
func (t *thumbnailer) load(ctx context.Context, path string, largest int) (image.Image, image.Rectangle, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, image.Rectangle{}, "", err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, image.Rectangle{}, "", err
	}
	decode := t.decode
	if decode == nil {
		decode = decodeFull
	}
	src, format, err := decode(f, fi.Size())
	f.Close()
	t.st.removeFile(path) // the decoded image is all the job needs now
	if err != nil {
		return nil, image.Rectangle{}, "", err
	}
	b := src.Bounds()
	jobqueue.Progress(ctx, 10, fmt.Sprintf("%s %dx%d %s", decodedMessage, b.Dx(), b.Dy(), format))
	if err := ctx.Err(); err != nil {
		return nil, image.Rectangle{}, "", context.Cause(ctx)
	}
	tw, th := fit(b.Dx(), b.Dy(), largest)
	return prepare(src, tw, th), b, format, nil
}

// prepare returns src reduced by the largest whole factor that keeps it
// at least twice tw x th (the largest thumbnail), or src itself if that
// factor is below 2.
func prepare(src image.Image, tw, th int) image.Image {
	b := src.Bounds()
	k := min(b.Dx()/(2*tw), b.Dy()/(2*th))
	if k < 2 {
		return src
	}
	return reduce(src, k)
}

// reduce returns src scaled down by k, each pixel the average of a k x k
// block (a box filter: exact for a whole factor, and cheap: one pass
// over src, k rows at a time). The last b.Dx()%k columns and b.Dy()%k
// rows are left out.
func reduce(src image.Image, k int) *image.RGBA {
	b := src.Bounds()
	w, h := b.Dx()/k, b.Dy()/k
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	strip := image.NewRGBA(image.Rect(0, 0, w*k, k))
	sums := make([]uint32, 4*w)
	n := uint32(k * k)
	for y := range h {
		draw.Draw(strip, strip.Bounds(), src, image.Pt(b.Min.X, b.Min.Y+y*k), draw.Src)
		clear(sums)
		for r := range k {
			row := strip.Pix[r*strip.Stride : r*strip.Stride+4*w*k]
			for x := range w {
				s := sums[4*x : 4*x+4 : 4*x+4]
				px := row[4*x*k : 4*(x+1)*k]
				for i := 0; i+3 < len(px); i += 4 {
					s[0] += uint32(px[i])
					s[1] += uint32(px[i+1])
					s[2] += uint32(px[i+2])
					s[3] += uint32(px[i+3])
				}
			}
		}
		out := dst.Pix[y*dst.Stride : y*dst.Stride+4*w]
		for i, v := range sums {
			out[i] = uint8((v + n/2) / n)
		}
	}
	return dst
}

// writeFile writes a file through write into a temporary file next to
// path and renames it to path, so readers never see a partial file. It
// returns the file's size, or 0 and an error with no file left.
func writeFile(path string, write func(io.Writer) error) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	bw := bufio.NewWriter(tmp)
	err = errors.Join(write(bw), bw.Flush())
	var size int64
	if fi, serr := tmp.Stat(); serr == nil {
		size = fi.Size()
	}
	if err = errors.Join(err, tmp.Close()); err != nil {
		return 0, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, err
	}
	return size, nil
}

// parseSizes parses a comma-separated list of sizes in pixels and returns
// them ascending, without duplicates.
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxSize {
			return nil, fmt.Errorf("size %q: want 1-%d pixels", f, maxSize)
		}
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	return slices.Compact(sizes), nil
}

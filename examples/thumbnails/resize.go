package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // registers the GIF decoder
	_ "image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/corework/corework/jobqueue"
	"golang.org/x/image/draw"
)

// thumbnailType is the job type that makes one thumbnail.
const thumbnailType = "thumbnail"

// maxSize bounds a thumbnail's longer side.
const maxSize = 4096

// filters are the resampling filters -filter selects, slowest and best
// first.
var filters = map[string]draw.Scaler{
	"catmullrom": draw.CatmullRom,
	"bilinear":   draw.BiLinear,
	"approx":     draw.ApproxBiLinear,
}

// priorityFor is the priority of a thumbnail of size pixels: the small
// previews a page shows first run before the large sizes.
func priorityFor(size int) jobqueue.Priority {
	switch {
	case size <= 64:
		return jobqueue.High + 2
	case size <= 128:
		return jobqueue.High + 1
	case size <= 256:
		return jobqueue.High
	case size <= 512:
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

// store keeps the originals and the thumbnails in one directory:
//
//	originals/{upload}            the uploaded file, as sent
//	thumbnails/{upload}/{size}.png
type store struct {
	dir string
}

// openStore returns the store in dir, creating its directories.
func openStore(dir string) (*store, error) {
	s := &store{dir: dir}
	for _, d := range []string{s.originalsDir(), filepath.Join(dir, "thumbnails")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *store) originalsDir() string { return filepath.Join(s.dir, "originals") }

func (s *store) originalPath(upload string) string {
	return filepath.Join(s.originalsDir(), upload)
}

func (s *store) thumbnailPath(upload string, size int) string {
	return filepath.Join(s.dir, "thumbnails", upload, strconv.Itoa(size)+".png")
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

// thumbnailIn is the payload of a thumbnail job.
type thumbnailIn struct {
	Upload string `json:"upload"`
	Size   int    `json:"size"`
}

// thumbnailOut is the result of a thumbnail job.
type thumbnailOut struct {
	Upload string `json:"upload"`
	Size   int    `json:"size"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Bytes  int64  `json:"bytes"`
	URL    string `json:"url"`
}

// thumbnailer runs thumbnail jobs on a store with one resampling filter.
type thumbnailer struct {
	st     *store
	scaler draw.Scaler
}

// run makes one thumbnail: it decodes the original, scales it to fit
// in.Size, and writes it as PNG, reporting progress after each step. A
// missing or undecodable original fails the job at once (no retry could
// help); the file appears whole or not at all.
func (t *thumbnailer) run(ctx context.Context, in thumbnailIn) (thumbnailOut, error) {
	if !validUploadID(in.Upload) || in.Size < 1 || in.Size > maxSize {
		return thumbnailOut{}, jobqueue.Permanent(fmt.Errorf("thumbnail %q at %d px: bad upload or size", in.Upload, in.Size))
	}
	jobqueue.Progress(ctx, 5, "decoding")
	f, err := os.Open(t.st.originalPath(in.Upload))
	if err != nil {
		return thumbnailOut{}, jobqueue.Permanent(err)
	}
	src, format, err := image.Decode(bufio.NewReader(f))
	f.Close()
	if err != nil {
		return thumbnailOut{}, jobqueue.Permanent(fmt.Errorf("decoding %s: %w", in.Upload, err))
	}
	b := src.Bounds()
	jobqueue.Progress(ctx, 40, fmt.Sprintf("decoded %dx%d %s", b.Dx(), b.Dy(), format))
	if err := ctx.Err(); err != nil {
		return thumbnailOut{}, context.Cause(ctx)
	}

	w, h := fit(b.Dx(), b.Dy(), in.Size)
	dst := src
	if w != b.Dx() || h != b.Dy() {
		rgba := image.NewRGBA(image.Rect(0, 0, w, h))
		t.scaler.Scale(rgba, rgba.Bounds(), src, b, draw.Src, nil)
		dst = rgba
	}
	jobqueue.Progress(ctx, 75, fmt.Sprintf("resized to %dx%d", w, h))
	if err := ctx.Err(); err != nil {
		return thumbnailOut{}, context.Cause(ctx)
	}

	n, err := writePNG(t.st.thumbnailPath(in.Upload, in.Size), dst)
	if err != nil {
		return thumbnailOut{}, err
	}
	jobqueue.Progress(ctx, 100, fmt.Sprintf("saved %dx%d, %d bytes", w, h, n))
	return thumbnailOut{
		Upload: in.Upload, Size: in.Size, Width: w, Height: h, Bytes: n,
		URL: fmt.Sprintf("/thumbnails/%s/%d", in.Upload, in.Size),
	}, nil
}

// writePNG encodes img into a temporary file next to path and renames it
// to path, so readers never see a partial file. It returns the file size.
func writePNG(path string, img image.Image) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*.png")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	bw := bufio.NewWriter(tmp)
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	err = errors.Join(enc.Encode(bw, img), bw.Flush())
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

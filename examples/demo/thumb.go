package main

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"

	_ "image/gif" // decoders for -in DIR

	"golang.org/x/image/draw"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/procpool"
)

// thumbIn is one thumbnail job: read Src, scale its longer side to Size,
// write a PNG to Dst.
type thumbIn struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Size int    `json:"size"`
}

// thumbOut is what a job reports: the thumbnail's size and where it ran.
type thumbOut struct {
	Width  int   `json:"width"`
	Height int   `json:"height"`
	Bytes  int64 `json:"bytes"`
	PID    int   `json:"pid"`
	CPU    int   `json:"cpu"` // CPU the thread last ran on, -1 if unknown
}

// thumbTask is registered at init in every process of the program, so a
// worker process started by procpool can run it.
var thumbTask = procpool.Register("demo.thumbnail", makeThumbnail)

// makeThumbnail does the CPU work: decode, scale with Catmull-Rom, encode.
func makeThumbnail(ctx context.Context, in thumbIn) (thumbOut, error) {
	f, err := os.Open(in.Src)
	if err != nil {
		return thumbOut{}, err
	}
	src, _, err := image.Decode(f)
	f.Close()
	if err != nil {
		return thumbOut{}, fmt.Errorf("decode %s: %w", in.Src, err)
	}
	return scaleTo(ctx, src, in.Dst, in.Size)
}

// scaleTo scales src so its longer side is size (Catmull-Rom), writes it
// as a PNG to dst, and reports the thumbnail and where it was made.
func scaleTo(ctx context.Context, src image.Image, dst string, size int) (thumbOut, error) {
	if err := ctx.Err(); err != nil {
		return thumbOut{}, err
	}
	w, h := fit(src.Bounds().Dx(), src.Bounds().Dy(), size)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(img, img.Bounds(), src, src.Bounds(), draw.Src, nil)
	out, err := os.Create(dst)
	if err != nil {
		return thumbOut{}, err
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(out, img); err != nil {
		out.Close()
		return thumbOut{}, err
	}
	if err := out.Close(); err != nil {
		return thumbOut{}, err
	}
	st, err := os.Stat(dst)
	if err != nil {
		return thumbOut{}, err
	}
	cpu, err := affinity.LastCPUThread(os.Getpid(), affinity.Gettid())
	if err != nil {
		cpu = -1
	}
	return thumbOut{Width: w, Height: h, Bytes: st.Size(), PID: os.Getpid(), CPU: cpu}, nil
}

// fit scales w x h so the longer side is size, keeping the aspect ratio and
// never enlarging.
func fit(w, h, size int) (int, int) {
	long := max(w, h)
	if long <= size {
		return w, h
	}
	nw, nh := w*size/long, h*size/long
	return max(nw, 1), max(nh, 1)
}

// generate writes a synthetic photo-like JPEG: smooth gradients and rings,
// different for every index, so there is no input to download.
func generate(path string, index, w, h int) error {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	cx, cy := float64(w)*(0.3+0.05*float64(index%8)), float64(h)*(0.4+0.04*float64(index%5))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			dx, dy := float64(x)-cx, float64(y)-cy
			ring := uint8(int((dx*dx+dy*dy)/float64(200+index*37)) % 256)
			img.SetRGBA(x, y, color.RGBA{
				R: uint8(x * 255 / w),
				G: ring,
				B: uint8((y*255/h + index*29) % 256),
				A: 255,
			})
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := jpeg.Encode(f, img, &jpeg.Options{Quality: 90}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// inputs lists the images of dir (by extension).
func inputs(dir string) ([]string, error) {
	var out []string
	for _, pat := range []string{"*.jpg", "*.jpeg", "*.png", "*.gif", "*.JPG", "*.JPEG", "*.PNG"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no .jpg, .png or .gif images in %s", dir)
	}
	return out, nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/image/draw"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/procpool"
)

// Large images cross to the worker processes in shared memory.
//
// A thumbnail job names its source file; for a small image the worker
// reads and decodes the file itself (thumbTask). An image whose decoded
// pixels exceed config.shareAbove (1 MiB by default) is decoded once, in
// the parent, into a procpool.Shared, and every thumbnail job of that
// image borrows it (Shared.Lend): the worker gets a handle of a few dozen
// bytes, maps the pixels read-only and scales them in place
// (sharedThumbTask). One decode instead of one per size, and no pixels
// copied through the pipes. The Shared is closed when the image's last
// size is done, or at the end of the phase.

// sharedThumbIn is a thumbnail job whose source pixels the parent lends.
type sharedThumbIn struct {
	Pixels        procpool.SharedRef // RGBA, 4 bytes per pixel, rows without padding
	Width, Height int
	Dst           string
	Size          int
}

// sharedThumbTask scales lent pixels in a worker process.
var sharedThumbTask = procpool.Register("demo.thumbnail.shared", func(ctx context.Context, in sharedThumbIn) (thumbOut, error) {
	pix, err := in.Pixels.Bytes() // read-only, valid until we return
	if err != nil {
		return thumbOut{}, err
	}
	if in.Width < 1 || in.Height < 1 || len(pix) != 4*in.Width*in.Height {
		return thumbOut{}, fmt.Errorf("%d bytes of pixels for %dx%d", len(pix), in.Width, in.Height)
	}
	src := &image.RGBA{Pix: pix, Stride: 4 * in.Width, Rect: image.Rect(0, 0, in.Width, in.Height)}
	return scaleTo(ctx, src, in.Dst, in.Size)
})

// sharedImages decodes large sources once, in the parent, and lends them.
type sharedImages struct {
	above  int // decoded bytes above which an image is shared
	perSrc int // jobs per source image: one per size
	logger *slog.Logger

	mu sync.Mutex
	m  map[string]*sharedImage

	count atomic.Int64 // images shared
	bytes atomic.Int64 // their decoded bytes
}

// sharedImage is one source: nil buf for an image small enough to copy.
type sharedImage struct {
	once  sync.Once
	buf   *procpool.Shared
	w, h  int
	err   error
	users int // jobs holding it (c.mu)
	done  int // jobs of this source succeeded (c.mu)
}

func newSharedImages(above, perSrc int, logger *slog.Logger) *sharedImages {
	return &sharedImages{above: above, perSrc: perSrc, logger: logger, m: map[string]*sharedImage{}}
}

// handler is the queue's thumbnail handler: through shared memory for a
// large image, by file name otherwise. Errors are classified as
// jobqueue.ProcPoolHandler does.
func (c *sharedImages) handler(pp *procpool.Pool) jobqueue.Handler {
	return jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		in, err := jobqueue.DecodePayload[thumbIn](job.Payload)
		if err != nil {
			return nil, err
		}
		img, err := c.get(in.Src)
		defer func() { c.release(in.Src, img, err == nil) }()
		if err != nil {
			return nil, jobqueue.Permanent(err)
		}
		var out thumbOut
		if img.buf == nil {
			out, err = thumbTask.Call(ctx, pp, in)
		} else {
			err = img.buf.Lend(func(ref procpool.SharedRef) error {
				var err error
				out, err = sharedThumbTask.Call(ctx, pp, sharedThumbIn{Pixels: ref, Width: img.w, Height: img.h, Dst: in.Dst, Size: in.Size})
				return err
			})
		}
		switch {
		case errors.Is(err, procpool.ErrEncode), errors.Is(err, procpool.ErrDecode),
			errors.Is(err, procpool.ErrFrameTooLarge), errors.Is(err, procpool.ErrUnknownTask),
			errors.Is(err, procpool.ErrSharedClosed):
			return nil, jobqueue.Permanent(err)
		case err != nil:
			return nil, err
		}
		return json.Marshal(out)
	})
}

// get returns the source's entry, decoding and sharing it the first time
// if it is large; release gives it back.
func (c *sharedImages) get(src string) (*sharedImage, error) {
	c.mu.Lock()
	img := c.m[src]
	if img == nil {
		img = &sharedImage{}
		c.m[src] = img
	}
	img.users++
	c.mu.Unlock()
	img.once.Do(func() { img.err = c.load(src, img) })
	return img, img.err
}

// load decodes src into a Shared when its pixels are over c.above bytes.
func (c *sharedImages) load(src string, img *sharedImage) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return fmt.Errorf("decode %s: %w", src, err)
	}
	size := 4 * cfg.Width * cfg.Height
	if size <= c.above {
		return nil // small: the worker reads the file
	}
	start := time.Now()
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	decoded, _, err := image.Decode(f)
	if err != nil {
		return fmt.Errorf("decode %s: %w", src, err)
	}
	b := decoded.Bounds()
	buf, err := procpool.NewShared(4 * b.Dx() * b.Dy())
	if err != nil {
		return err
	}
	pix, _ := buf.Bytes() // ours alone: not lent yet
	dst := &image.RGBA{Pix: pix, Stride: 4 * b.Dx(), Rect: image.Rect(0, 0, b.Dx(), b.Dy())}
	draw.Draw(dst, dst.Rect, decoded, b.Min, draw.Src)
	img.buf, img.w, img.h = buf, b.Dx(), b.Dy()
	c.count.Add(1)
	c.bytes.Add(int64(buf.Len()))
	if c.logger != nil {
		c.logger.Debug("demo: image shared", "src", src, "width", img.w, "height", img.h,
			"bytes", buf.Len(), "decode", time.Since(start))
	}
	return nil
}

// release gives back a job's hold on src; after the last size of the
// image succeeded and no job holds it, its pixels are freed. A job that
// comes later (a retry, or one submitted from the dashboard) decodes the
// image again.
func (c *sharedImages) release(src string, img *sharedImage, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img.users--
	if ok {
		img.done++
	}
	if img.done >= c.perSrc && img.users == 0 {
		if img.buf != nil {
			img.buf.Close()
		}
		if c.m[src] == img {
			delete(c.m, src)
		}
	}
}

// close frees every Shared still held (sources with jobs that failed).
func (c *sharedImages) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for src, img := range c.m {
		if img.buf != nil {
			img.buf.Close()
		}
		delete(c.m, src)
	}
}

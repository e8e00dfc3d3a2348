// Command sharedmem is the lesson of procpool's shared memory, Go's answer
// to Python's multiprocessing.shared_memory.
//
// A large grayscale image, generated in the parent, is processed by two
// worker processes, each taking half its rows and returning their
// histogram. It is done twice, with the same workers and the same task
// code:
//
//  1. copied: each task's input holds its half as a []byte, which gob
//     copies into the request and through the pipe into the worker;
//  2. shared: the image lives in a procpool.Shared (a memfd on Linux) that
//     the parent lends to the calls; each input holds a SharedRef, a
//     handle of a few dozen bytes, and the worker maps the parent's memory
//     read-only and reads it in place.
//
// The program prints what it measured: the bytes each request carried
// through its pipe, the best time of a few rounds of each way, the
// throughput and the ratio, and whether the two ways computed the same
// histogram as the parent.
//
// Run it with:
//
//	go run ./examples/sharedmem            # a 64 MiB image
//	go run ./examples/sharedmem -mib 256   # a larger one
//	go run ./examples/sharedmem -quick     # 4 MiB, for a fast look
//	go run ./examples/sharedmem -v         # and the pool's debug log on stderr
package main

import (
	"context"
	"encoding/gob"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime"
	"time"

	"github.com/corework/corework/procpool"
)

// copiedIn is a band of rows carried in the request itself.
type copiedIn struct {
	Pixels []byte // the band's pixels, row after row
}

// sharedIn is a band of rows of the lent image.
type sharedIn struct {
	Image    procpool.SharedRef // the whole image, one byte per pixel
	From, To int                // byte offsets of the band
}

// histogram is what a worker computes for its band.
type histogram [256]int

func count(pixels []byte) histogram {
	var h histogram
	for _, p := range pixels {
		h[p]++
	}
	return h
}

// The two tasks run the same code; only how their input arrives differs.
var (
	histCopied = procpool.Register("sharedmem.copied", func(_ context.Context, in copiedIn) (histogram, error) {
		return count(in.Pixels), nil
	})
	histShared = procpool.Register("sharedmem.shared", func(_ context.Context, in sharedIn) (histogram, error) {
		img, err := in.Image.Bytes() // read-only, valid until this function returns
		if err != nil {
			return histogram{}, err
		}
		if in.From < 0 || in.From > in.To || in.To > len(img) {
			return histogram{}, fmt.Errorf("band %d-%d of a %d-byte image", in.From, in.To, len(img))
		}
		return count(img[in.From:in.To]), nil
	})
)

type config struct {
	width, height int          // the image, one byte per pixel
	workers       int          // worker processes
	rounds        int          // measured rounds of each way; the best counts
	logger        *slog.Logger // the pool's logger (-v); nil: slog.Default()
}

func main() {
	procpool.Main() // in a worker process: serve tasks, then exit
	mib := flag.Int("mib", 64, "image size in MiB, 1 to 1024 (a grayscale image 4096 pixels wide)")
	quick := flag.Bool("quick", false, "a 4 MiB image, for a fast look")
	verbose := flag.Bool("v", false, "debug logging on stderr: the pool's workers spawned and stopped")
	flag.Parse()
	if *quick {
		*mib = 4
	}
	if *mib < 1 || *mib > 1024 {
		log.Fatalf("sharedmem: -mib %d: want 1 to 1024", *mib)
	}
	cfg := sizeConfig(*mib)
	if *verbose {
		cfg.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, cfg); err != nil {
		log.Fatal("sharedmem: ", err)
	}
}

// sizeConfig is an image of mib MiB, 4096 pixels wide, on 2 workers.
func sizeConfig(mib int) config {
	return config{width: 4096, height: mib << 8, workers: 2, rounds: 3}
}

func run(ctx context.Context, w io.Writer, cfg config) error {
	size := cfg.width * cfg.height
	// A copied request carries half the image; where shared memory falls
	// back to a copy (not Linux), a shared one carries all of it.
	opts := []procpool.Option{procpool.WithWorkers(cfg.workers), procpool.WithMaxFrame(min(size+1<<20, 1<<31-1))}
	if cfg.logger != nil {
		opts = append(opts, procpool.WithLogger(cfg.logger))
	}
	p, err := procpool.New(opts...)
	if errors.Is(err, errors.ErrUnsupported) {
		fmt.Fprintf(w, "procpool is not supported on %s: %v\n", runtime.GOOS, err)
		return nil
	}
	if err != nil {
		return err
	}
	defer p.Close()

	img, err := procpool.NewShared(size)
	if err != nil {
		return err
	}
	defer img.Close()
	start := time.Now()
	pixels, err := img.Bytes() // the owner fills it: no Lend runs yet
	if err != nil {
		return err
	}
	generate(pixels, cfg.width, cfg.height)
	want := count(pixels)
	fmt.Fprintf(w, "image:  %dx%d grayscale, %s, generated in %v in the parent\n",
		cfg.width, cfg.height, mib(size), round(time.Since(start)))
	fmt.Fprintf(w, "pool:   %d worker processes, each given %d rows (%s) per round\n\n",
		cfg.workers, cfg.height/cfg.workers, mib(size/cfg.workers))

	bands := make([][2]int, cfg.workers) // byte offsets of each worker's rows
	for i := range bands {
		bands[i] = [2]int{cfg.height * i / cfg.workers * cfg.width, cfg.height * (i + 1) / cfg.workers * cfg.width}
	}

	// 1. Copied: the bands travel in the requests.
	copied := make([]copiedIn, len(bands))
	for i, b := range bands {
		copied[i] = copiedIn{Pixels: pixels[b[0]:b[1]]}
	}
	var copiedHist []histogram
	copiedTime, err := best(cfg.rounds, func() (err error) {
		copiedHist, err = histCopied.Map(ctx, p, copied, procpool.WithChunkSize(1))
		return err
	})
	if err != nil {
		return fmt.Errorf("copied: %w", err)
	}
	report(w, "copied", size, copiedTime, gobSize(copied[0]))

	// 2. Shared: the requests carry a handle; while the loan runs, the
	// owner cannot touch the image (Bytes fails with ErrSharedLent).
	var sharedHist []histogram
	var sharedTime time.Duration
	var handle int
	err = img.Lend(func(ref procpool.SharedRef) error {
		shared := make([]sharedIn, len(bands))
		for i, b := range bands {
			shared[i] = sharedIn{Image: ref, From: b[0], To: b[1]}
		}
		handle = gobSize(shared[0])
		var err error
		sharedTime, err = best(cfg.rounds, func() (err error) {
			sharedHist, err = histShared.Map(ctx, p, shared, procpool.WithChunkSize(1))
			return err
		})
		if _, ownerErr := img.Bytes(); ownerErr != nil {
			fmt.Fprintf(w, "        (during the loan the owner's Bytes says: %v)\n", ownerErr)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("shared: %w", err)
	}
	report(w, "shared", size, sharedTime, handle)

	fmt.Fprintf(w, "\nshared memory: %.1fx the throughput of copying through the pipes (best of %d rounds each)\n",
		copiedTime.Seconds()/sharedTime.Seconds(), cfg.rounds)
	ok := sum(copiedHist) == want && sum(sharedHist) == want
	fmt.Fprintf(w, "results match: %v (the parent's histogram, mean brightness %.2f)\n", ok, mean(want))
	if !ok {
		return errors.New("the workers' histograms differ from the parent's")
	}
	return nil
}

// generate draws a smooth pattern with some noise, one byte per pixel: a
// wave across the columns plus one down the rows (computed once each),
// plus a xorshift noise.
func generate(pixels []byte, width, height int) {
	cols := make([]float64, width)
	for x := range cols {
		cols[x] = 128 + 70*math.Sin(6*float64(x)/float64(width))
	}
	seed := uint32(2463534242)
	for y := range height {
		row := pixels[y*width : (y+1)*width]
		dy := 40*math.Cos(4*float64(y)/float64(height)) - 16
		for x := range row {
			seed ^= seed << 13
			seed ^= seed >> 17
			seed ^= seed << 5
			row[x] = byte(max(0, min(255, cols[x]+dy+float64(seed%32))))
		}
	}
}

// best runs fn rounds times, after one unmeasured warm-up (workers up, gob
// types sent), and returns the shortest time.
func best(rounds int, fn func() error) (time.Duration, error) {
	if err := fn(); err != nil {
		return 0, err
	}
	var min time.Duration
	for i := range rounds {
		start := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		if d := time.Since(start); i == 0 || d < min {
			min = d
		}
	}
	return min, nil
}

// gobSize is the size of v as gob encodes it for one request (with the
// type's description, which crosses each pipe once).
func gobSize(v any) int {
	var c counter
	if err := gob.NewEncoder(&c).Encode(v); err != nil {
		return -1
	}
	return int(c)
}

type counter int

func (c *counter) Write(p []byte) (int, error) {
	*c += counter(len(p))
	return len(p), nil
}

func report(w io.Writer, name string, size int, d time.Duration, perRequest int) {
	fmt.Fprintf(w, "%-7s %s per request through its pipe; the whole image in %v, %.0f MB/s\n",
		name+":", bytesText(perRequest), round(d), float64(size)/1e6/d.Seconds())
}

func sum(hs []histogram) histogram {
	var t histogram
	for _, h := range hs {
		for i, n := range h {
			t[i] += n
		}
	}
	return t
}

func mean(h histogram) float64 {
	var n, s int
	for v, c := range h {
		n += c
		s += v * c
	}
	return float64(s) / float64(n)
}

func mib(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func bytesText(n int) string {
	if n >= 1<<20 {
		return mib(n)
	}
	return fmt.Sprintf("%d bytes", n)
}

// round keeps three significant digits or so of a duration.
func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// Command jobqueue is the job-queue lesson: a client puts jobs on a queue,
// workers (one per CPU) take them by priority, each job's error is caught and
// reported, and results flow back as they arrive, like Celery or RQ but in
// one Go process.
//
// Three job types share the queue:
//
//   - email (High priority, Critical for password resets): simulated SMTP
//     with a network delay; some addresses fail once with a transient error
//     and are retried with backoff, one template panics every time and ends
//     failed with the panic's stack, an invalid address fails permanently.
//   - thumbnail (Normal): draws an image and scales it down with
//     golang.org/x/image/draw, then encodes it as PNG: real CPU work.
//   - report (Low): generates and summarizes a table of sales, reporting
//     its progress.
//
// Reports are submitted first, e-mails last; the final table of wait times
// per priority shows the e-mails overtaking them anyway.
//
// A second part shows a report on a two-second schedule (Queue.Schedule)
// and workers that size themselves (Config.Autoscale): a burst of
// thumbnails grows the workers from one to several, and they shrink back
// after it.
//
//	go run ./examples/jobqueue          # the full run, a few seconds
//	go run ./examples/jobqueue -quick   # a small run
//	go run ./examples/jobqueue -v       # every event, and the queue's debug log on stderr
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/image/draw"

	"github.com/corework/corework/jobqueue"
)

// options sizes a run.
type options struct {
	Images     int           // thumbnail jobs
	ImageW     int           // source image width; height is 3/4 of it
	Reports    int           // report jobs
	ReportRows int           // rows per report
	Emails     int           // e-mail jobs
	Workers    int           // 0: one per CPU
	Aging      time.Duration // jobqueue.Config.AgingInterval
	Verbose    bool          // print every event, progress included
	Logger     *slog.Logger  // jobqueue.Config.Logger (-v: debug records on stderr)
}

func fullOptions() options {
	return options{Images: 24, ImageW: 1600, Reports: 6, ReportRows: 400_000, Emails: 120, Aging: 500 * time.Millisecond}
}

func quickOptions() options {
	return options{Images: 6, ImageW: 480, Reports: 3, ReportRows: 40_000, Emails: 24, Aging: 500 * time.Millisecond}
}

// parseArgs reads the command line (without the program name); -h and bad
// flags return flag.ErrHelp or the flag's error after printing to stderr.
func parseArgs(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("jobqueue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "a small run that finishes in about a second")
	workers := fs.Int("workers", 0, "worker goroutines (0: one per CPU)")
	aging := fs.Duration("aging", fullOptions().Aging, "anti-starvation aging interval (0: strict priority)")
	verbose := fs.Bool("v", false, "print every event, progress included, and the queue's debug log on stderr")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jobqueue: unexpected argument %q\n", fs.Arg(0))
		return options{}, errors.New("jobqueue: unexpected argument")
	}
	if *aging < 0 {
		fmt.Fprintf(stderr, "jobqueue: -aging %v: must not be negative\n", *aging)
		return options{}, errors.New("jobqueue: negative -aging")
	}
	o := fullOptions()
	if *quick {
		o = quickOptions()
	}
	o.Workers = *workers
	o.Aging = *aging
	o.Verbose = *verbose
	if *verbose {
		o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return o, nil
}

func main() {
	o, err := parseArgs(os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case err != nil:
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := run(ctx, os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "jobqueue example:", err)
		os.Exit(1)
	}
	if _, err := recurring(ctx, os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "jobqueue example:", err)
		os.Exit(1)
	}
}

// summary is what run measured, for the smoke test.
type summary struct {
	Submitted, Succeeded, Failed int
	Stats                        jobqueue.Stats
}

// run builds the queue, submits the jobs, prints events as they arrive and
// the final statistics, and shuts the queue down.
func run(ctx context.Context, w io.Writer, o options) (summary, error) {
	var sum summary
	q, err := jobqueue.New(jobqueue.Config{
		Workers:       o.Workers,
		AgingInterval: o.Aging,
		RetryDelay:    20 * time.Millisecond,
		MaxRetryDelay: 200 * time.Millisecond,
		Timeout:       30 * time.Second,
		Logger:        o.Logger,
	})
	if err != nil {
		return sum, err
	}
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "email", sendEmail)
	jobqueue.HandleFunc(q, "thumbnail", makeThumbnail)
	jobqueue.HandleFunc(q, "report", buildReport)

	// Events are printed by one goroutine as they arrive.
	sub := q.Subscribe(jobqueue.EventFilter{Buffer: 4096})
	t0 := time.Now()
	var printed sync.WaitGroup
	printed.Go(func() { printEvents(w, sub, t0, o.Verbose) })

	// Submit everything before starting the workers, lowest priority first,
	// so the queue holds a backlog that dispatch must sort out.
	var jobs []jobqueue.JobRequest
	for i := range o.Reports {
		jobs = append(jobs, jobqueue.JobRequest{Type: "report", Priority: jobqueue.Low,
			Payload: mustJSON(reportIn{Region: regions[i%len(regions)], Rows: o.ReportRows, Seed: uint64(i)})})
	}
	for i := range o.Images {
		jobs = append(jobs, jobqueue.JobRequest{Type: "thumbnail", Priority: jobqueue.Normal,
			Payload: mustJSON(thumbIn{Name: fmt.Sprintf("photo-%03d.png", i), Width: o.ImageW, Height: o.ImageW * 3 / 4, Thumb: 160, Seed: uint64(i)})})
	}
	for i := range o.Emails {
		in := emailIn{To: fmt.Sprintf("user%03d@example.com", i), Template: "welcome"}
		prio := jobqueue.High
		switch {
		case i%10 == 0:
			in.Template, prio = "password-reset", jobqueue.Critical
		case i == 5:
			in.To = "not-an-address"
		case i == 7:
			in.Template = "broken-template"
		}
		jobs = append(jobs, jobqueue.JobRequest{Type: "email", Priority: prio, Payload: mustJSON(in), MaxAttempts: 3})
	}
	var ids []string
	for _, req := range jobs {
		id, err := q.Submit(ctx, req)
		if err != nil {
			return sum, fmt.Errorf("submit %s: %w", req.Type, err)
		}
		ids = append(ids, id)
	}
	sum.Submitted = len(ids)
	fmt.Fprintf(w, "submitted %d jobs (%d reports, %d thumbnails, %d e-mails); starting %d workers\n\n",
		len(ids), o.Reports, o.Images, o.Emails, q.Stats().Workers)
	if err := q.Start(); err != nil {
		return sum, err
	}
	for _, id := range ids {
		_, err := q.Wait(ctx, id)
		var je *jobqueue.JobError
		switch {
		case err == nil:
			sum.Succeeded++
		case errors.As(err, &je):
			sum.Failed++
		default:
			return sum, err
		}
	}
	elapsed := time.Since(t0)
	sum.Stats = q.Stats()
	sub.Close()
	printed.Wait()
	if err := q.Shutdown(ctx); err != nil {
		return sum, err
	}
	printStats(w, sum, elapsed)
	return sum, nil
}

var regions = []string{"north", "south", "east", "west"}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// printEvents prints retries, results and failures (and, verbose, every
// event) until the subscription ends.
func printEvents(w io.Writer, sub *jobqueue.Subscription, t0 time.Time, verbose bool) {
	lastPct := map[string]float64{}
	for ev := range sub.Events() {
		at := fmt.Sprintf("%7.1fms", float64(ev.Time.Sub(t0).Microseconds())/1000)
		short := ev.JobID[len(ev.JobID)-11 : len(ev.JobID)-7]
		switch ev.Kind {
		case jobqueue.EventSucceeded:
			fmt.Fprintf(w, "%s  ok     %-9s %-8s #%s %s\n", at, ev.Type, ev.Priority, short, ev.Result)
		case jobqueue.EventRetrying:
			fmt.Fprintf(w, "%s  retry  %-9s %-8s #%s attempt %d: %s (next in %v)\n", at, ev.Type, ev.Priority, short,
				ev.Attempt, firstLine(ev.Error), ev.NextRunAt.Sub(ev.Time).Round(time.Millisecond))
		case jobqueue.EventFailed:
			fmt.Fprintf(w, "%s  FAILED %-9s %-8s #%s after %d attempts:\n%s\n", at, ev.Type, ev.Priority, short,
				ev.Attempt, indent(headLines(ev.Error, 8)))
		case jobqueue.EventProgress:
			// Reports print every quarter; everything prints with -v.
			if verbose || (ev.Type == "report" && ev.Progress-lastPct[ev.JobID] >= 25) {
				lastPct[ev.JobID] = ev.Progress
				fmt.Fprintf(w, "%s  ...    %-9s %-8s #%s %3.0f%% %s\n", at, ev.Type, ev.Priority, short, ev.Progress, ev.Message)
			}
		default:
			if verbose {
				fmt.Fprintf(w, "%s  %-6s %-9s %-8s #%s\n", at, ev.Kind, ev.Type, ev.Priority, short)
			}
		}
	}
	if n := sub.Dropped(); n > 0 {
		fmt.Fprintf(w, "(%d progress events dropped by the subscription)\n", n)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func headLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("... (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string { return "      | " + strings.ReplaceAll(s, "\n", "\n      | ") }

// printStats prints what the queue measured, per type and per priority.
func printStats(w io.Writer, sum summary, elapsed time.Duration) {
	st := sum.Stats
	fmt.Fprintf(w, "\n%d jobs in %v: %d succeeded, %d failed, %d retries; %.0f jobs/s on %d workers\n",
		sum.Submitted, elapsed.Round(time.Millisecond), st.Succeeded, st.Failed, st.Retried,
		float64(sum.Submitted)/elapsed.Seconds(), st.Workers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\ntype\tsucceeded\tfailed\tretried\trun p50\trun p99\trun max\t")
	types := make([]string, 0, len(st.Types))
	for t := range st.Types {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		s := st.Types[t]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%v\t%v\t%v\t\n", t, s.Succeeded, s.Failed, s.Retried, dur(s.Run.P50), dur(s.Run.P99), dur(s.Run.Max))
	}
	fmt.Fprintln(tw, "\npriority\tjobs\tsucceeded\tfailed\twait p50\twait p99\twait max\t")
	for p := jobqueue.MaxPriority; p >= jobqueue.MinPriority; p-- {
		l := st.Priorities[p]
		if l.Wait.Count == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%v\t%v\t%v\t\n", p, l.Wait.Count, l.Succeeded, l.Failed, dur(l.Wait.P50), dur(l.Wait.P99), dur(l.Wait.Max))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nwait is submission to first start (all jobs were queued before the workers started); quantiles are histogram upper bounds\n")
}

func dur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// ---- e-mail ----

type emailIn struct {
	To       string `json:"to"`
	Template string `json:"template"`
}

type emailOut struct {
	MessageID string `json:"message_id"`
	Bytes     int    `json:"bytes"`
}

var templates = map[string]string{
	"welcome":        "Hello %s, welcome aboard!",
	"password-reset": "Hello %s, use this link to reset your password: https://example.com/r/%x",
}

// sendEmail renders a template and "sends" it: a 2-10ms network delay. A
// quarter of the addresses meet a busy server on their first attempt.
func sendEmail(ctx context.Context, in emailIn) (emailOut, error) {
	if !strings.Contains(in.To, "@") {
		return emailOut{}, jobqueue.Permanent(fmt.Errorf("invalid recipient %q", in.To))
	}
	body := render(in)
	h := fnv.New64a()
	io.WriteString(h, in.To)
	sum := h.Sum64()
	select {
	case <-time.After(time.Duration(2+sum%9) * time.Millisecond):
	case <-ctx.Done():
		return emailOut{}, ctx.Err()
	}
	if _, attempt, _ := jobqueue.JobFromContext(ctx); attempt == 1 && sum%4 == 0 {
		return emailOut{}, errors.New("smtp: 421 service busy, try again later")
	}
	return emailOut{MessageID: fmt.Sprintf("%016x@example.com", sum), Bytes: len(body)}, nil
}

// render fills a template. An unknown template is a programming error and
// panics; the queue turns the panic into a failed attempt with the stack.
func render(in emailIn) string {
	t, ok := templates[in.Template]
	if !ok {
		panic(fmt.Sprintf("template %q not found", in.Template))
	}
	return fmt.Sprintf(t, in.To, len(in.To))
}

// ---- thumbnail ----

type thumbIn struct {
	Name   string `json:"name"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Thumb  int    `json:"thumb"`
	Seed   uint64 `json:"seed"`
}

type thumbOut struct {
	Name     string `json:"name"`
	Size     string `json:"size"`
	PNGBytes int    `json:"png_bytes"`
	Mean     string `json:"mean_rgb"`
}

// makeThumbnail draws a synthetic photo, scales it to Thumb pixels wide with
// Catmull-Rom resampling and encodes the result as PNG.
func makeThumbnail(ctx context.Context, in thumbIn) (thumbOut, error) {
	if in.Width <= 0 || in.Height <= 0 || in.Thumb <= 0 {
		return thumbOut{}, jobqueue.Permanent(fmt.Errorf("bad size %dx%d -> %d", in.Width, in.Height, in.Thumb))
	}
	src := image.NewRGBA(image.Rect(0, 0, in.Width, in.Height))
	rng := rand.New(rand.NewPCG(in.Seed, 7))
	fx, fy := 0.5+rng.Float64()*8, 0.5+rng.Float64()*8
	for y := range in.Height {
		if y%64 == 0 && ctx.Err() != nil {
			return thumbOut{}, ctx.Err()
		}
		for x := range in.Width {
			u, v := float64(x)/float64(in.Width), float64(y)/float64(in.Height)
			src.SetRGBA(x, y, color.RGBA{
				R: uint8(127 + 127*math.Sin(fx*u*math.Pi)),
				G: uint8(127 + 127*math.Cos(fy*v*math.Pi)),
				B: uint8(255 * u * v),
				A: 255,
			})
		}
	}
	jobqueue.Progress(ctx, 50, "drawn")
	th := in.Thumb * in.Height / in.Width
	dst := image.NewRGBA(image.Rect(0, 0, in.Thumb, th))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	jobqueue.Progress(ctx, 80, "scaled")
	var buf bytes.Buffer
	if err := png.Encode(&buf, dst); err != nil {
		return thumbOut{}, err
	}
	var r, g, b uint64
	for i := 0; i < len(dst.Pix); i += 4 {
		r, g, b = r+uint64(dst.Pix[i]), g+uint64(dst.Pix[i+1]), b+uint64(dst.Pix[i+2])
	}
	n := uint64(len(dst.Pix) / 4)
	return thumbOut{Name: in.Name, Size: fmt.Sprintf("%dx%d", in.Thumb, th), PNGBytes: buf.Len(),
		Mean: fmt.Sprintf("#%02x%02x%02x", r/n, g/n, b/n)}, nil
}

// ---- report ----

type reportIn struct {
	Region string `json:"region"`
	Rows   int    `json:"rows"`
	Seed   uint64 `json:"seed"`
}

type reportOut struct {
	Region string  `json:"region"`
	Rows   int     `json:"rows"`
	Total  float64 `json:"total"`
	Mean   float64 `json:"mean"`
	P95    float64 `json:"p95"`
	Top    string  `json:"top_product"`
}

var products = []string{"chairs", "desks", "lamps", "shelves", "sofas"}

// buildReport generates a region's sales and summarizes them: total, mean,
// 95th percentile of a sale, and the best-selling product.
func buildReport(ctx context.Context, in reportIn) (reportOut, error) {
	if in.Rows <= 0 {
		return reportOut{}, jobqueue.Permanent(fmt.Errorf("report of %d rows", in.Rows))
	}
	rng := rand.New(rand.NewPCG(in.Seed, 11))
	sales := make([]float64, in.Rows)
	byProduct := make([]float64, len(products))
	var total float64
	for i := range sales {
		if i%(in.Rows/4+1) == 0 && i > 0 {
			if err := ctx.Err(); err != nil {
				return reportOut{}, err
			}
			jobqueue.Progress(ctx, float64(75*i/in.Rows), fmt.Sprintf("%d rows", i))
		}
		s := math.Round(rng.ExpFloat64()*12000) / 100
		sales[i] = s
		total += s
		byProduct[rng.IntN(len(products))] += s
	}
	jobqueue.Progress(ctx, 75, "sorting")
	slices.Sort(sales)
	top := products[0]
	for i, v := range byProduct {
		if v > byProduct[slices.Index(products, top)] {
			top = products[i]
		}
	}
	return reportOut{Region: in.Region, Rows: in.Rows, Total: math.Round(total), Mean: math.Round(total/float64(in.Rows)*100) / 100,
		P95: sales[len(sales)*95/100], Top: top}, nil
}

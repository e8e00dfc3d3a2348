package jobqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/panics"
	"github.com/corework/corework/pool"
)

func fib(n int) int {
	a, b := 0, 1
	for range n {
		a, b = b, a+b
	}
	return a
}

// A typed handler, one job, and its result.
func Example() {
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		panic(err)
	}
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "fibonacci", func(ctx context.Context, n int) (int, error) {
		return fib(n), nil
	})
	q.Start()

	ctx := context.Background()
	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: []byte("30"), Priority: jobqueue.High})
	if err != nil {
		panic(err)
	}
	info, err := q.Wait(ctx, id)
	fmt.Println(info.State, string(info.Result), err)
	// Output: succeeded 832040 <nil>
}

// With one worker, jobs run by priority, FIFO within a level.
func Example_priorities() {
	q, _ := jobqueue.New(jobqueue.Config{Workers: 1})
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "print", func(ctx context.Context, s string) (any, error) {
		fmt.Println(s)
		return nil, nil
	})
	ctx := context.Background()
	var last string
	for _, j := range []struct {
		name string
		p    jobqueue.Priority
	}{{"low 1", jobqueue.Low}, {"critical", jobqueue.Critical}, {"normal", jobqueue.Normal}, {"low 2", jobqueue.Low}, {"high", jobqueue.High}} {
		payload, _ := json.Marshal(j.name)
		last, _ = q.Submit(ctx, jobqueue.JobRequest{Type: "print", Payload: payload, Priority: j.p})
	}
	q.Start() // the jobs were queued before the worker started
	q.Wait(ctx, last)
	// Output:
	// critical
	// high
	// normal
	// low 1
	// low 2
}

// Progress reports and the job's events, seen by a subscriber.
func ExampleQueue_Subscribe() {
	q, _ := jobqueue.New(jobqueue.Config{})
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "resize", func(ctx context.Context, files []string) (int, error) {
		for i := range files {
			jobqueue.Progress(ctx, float64(100*(i+1)/len(files)), "resized "+files[i])
		}
		return len(files), nil
	})
	q.Start()
	sub := q.Subscribe(jobqueue.EventFilter{Type: "resize"})
	defer sub.Close()

	q.Submit(context.Background(), jobqueue.JobRequest{Type: "resize", Payload: []byte(`["a.png","b.png"]`)})
	for ev := range sub.Events() {
		fmt.Printf("%s %g%% %q result=%s\n", ev.Kind, ev.Progress, ev.Message, ev.Result)
		if ev.Kind.Final() {
			break
		}
	}
	// Output:
	// queued 0% "" result=
	// started 0% "" result=
	// progress 50% "resized a.png" result=
	// progress 100% "resized b.png" result=
	// succeeded 0% "" result=2
}

// A failing job is retried with backoff until MaxAttempts; Permanent stops
// the retries at once.
func ExamplePermanent() {
	q, _ := jobqueue.New(jobqueue.Config{RetryDelay: time.Millisecond})
	defer q.Shutdown(context.Background())
	q.Handle("send", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		if string(job.Payload) == `"bad address"` {
			return nil, jobqueue.Permanent(errors.New("invalid recipient"))
		}
		return nil, errors.New("server busy")
	}))
	q.Start()
	ctx := context.Background()
	for _, to := range []string{`"busy server"`, `"bad address"`} {
		id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "send", Payload: []byte(to), MaxAttempts: 3})
		info, err := q.Wait(ctx, id)
		fmt.Printf("%s: %s after %d attempts, %v\n", to, info.State, info.Attempts, errors.Is(err, jobqueue.ErrFailed))
	}
	// Output:
	// "busy server": failed after 3 attempts, true
	// "bad address": failed after 1 attempts, true
}

// A payload that does not decode into the handler's input fails at once.
func ExampleHandleFunc() {
	q, _ := jobqueue.New(jobqueue.Config{})
	defer q.Shutdown(context.Background())
	type report struct {
		Year  int    `json:"year"`
		Title string `json:"title"`
	}
	jobqueue.HandleFunc(q, "report", func(ctx context.Context, r report) (string, error) {
		return fmt.Sprintf("%s %d", r.Title, r.Year), nil
	})
	q.Start()
	ctx := context.Background()
	for _, p := range []string{`{"year":2025,"title":"Sales"}`, `{"year":"last"}`} {
		id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "report", Payload: []byte(p)})
		info, err := q.Wait(ctx, id)
		fmt.Printf("%s result=%s attempts=%d failed=%v\n", info.State, info.Result, info.Attempts, errors.Is(err, jobqueue.ErrFailed))
	}
	// Output:
	// succeeded result="Sales 2025" attempts=1 failed=false
	// failed result= attempts=1 failed=true
}

// Cancel stops a running job through its context.
func ExampleQueue_Cancel() {
	q, _ := jobqueue.New(jobqueue.Config{})
	defer q.Shutdown(context.Background())
	started := make(chan struct{})
	q.Handle("long", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	q.Start()
	ctx := context.Background()
	id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "long"})
	<-started
	q.Cancel(ctx, id)
	info, err := q.Wait(ctx, id)
	fmt.Println(info.State, errors.Is(err, jobqueue.ErrCanceled))
	// Output: canceled true
}

// A panicking handler fails its attempt with a *panics.Error; the job's
// LastError holds its message, a blank line and the stack.
func Example_panic() {
	q, _ := jobqueue.New(jobqueue.Config{MaxAttempts: 1, OnError: func(job *jobqueue.Job, attempt int, err error) {
		var pe *panics.Error
		if errors.As(err, &pe) {
			fmt.Printf("OnError: source %s, task %s, value %v, stack captured %v\n", pe.Source, pe.Task, pe.Value, len(pe.Stack) > 0)
		}
	}})
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "render", func(ctx context.Context, template string) (string, error) {
		panic("no template " + template)
	})
	q.Start()
	ctx := context.Background()
	id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "render", Payload: []byte(`"welcome"`)})
	info, _ := q.Wait(ctx, id)
	msg, stack, _ := strings.Cut(info.LastError, "\n\n")
	fmt.Println(info.State, msg)
	fmt.Println(strings.HasPrefix(stack, "goroutine "))
	// Output:
	// OnError: source jobqueue, task render, value no template welcome, stack captured true
	// failed jobqueue: task render panicked: no template welcome
	// true
}

// With a Logger the Queue logs retries, failures, panics and backend errors
// as structured records. Here only warnings and errors are kept, without
// the time and the random IDs, so the output is stable.
func ExampleConfig_logger() {
	drop := map[string]bool{slog.TimeKey: true, "queue": true, "job": true}
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if drop[a.Key] {
				return slog.Attr{}
			}
			return a
		},
	}))
	q, _ := jobqueue.New(jobqueue.Config{Logger: logger, Backoff: func(int, error) time.Duration { return time.Millisecond }})
	defer q.Shutdown(context.Background())
	q.Handle("send", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		return nil, errors.New("server busy")
	}))
	q.Start()
	ctx := context.Background()
	id, _ := q.Submit(ctx, jobqueue.JobRequest{Type: "send", MaxAttempts: 2})
	q.Wait(ctx, id)
	// Output:
	// level=WARN msg="job retrying" type=send attempt=1 max_attempts=2 delay=1ms err="server busy"
	// level=ERROR msg="job failed" type=send attempt=2 err="server busy"
}

// A server acting for clients submits each job with its client's principal
// as the owner and a quota: a client at its limit is refused, the others
// are not.
func ExampleQuota() {
	q, _ := jobqueue.New(jobqueue.Config{NoWorkers: true}) // only submit, for the example
	defer q.Shutdown(context.Background())
	ctx := context.Background()
	quota := jobqueue.Quota{MaxActive: 2, MaxDelay: 24 * time.Hour}
	for _, owner := range []string{"alice", "alice", "alice", "bob"} {
		_, err := q.Submit(ctx, jobqueue.JobRequest{Type: "report", Owner: owner, Quota: quota})
		fmt.Println(owner, err)
	}
	_, err := q.Submit(ctx, jobqueue.JobRequest{Type: "report", Owner: "bob", Quota: quota, RunAt: time.Now().AddDate(1, 0, 0)})
	fmt.Println(errors.Is(err, jobqueue.ErrQuotaExceeded))
	u, _ := q.Usage(ctx, "alice")
	fmt.Printf("alice: %d active\n", u.Active)
	// Output:
	// alice <nil>
	// alice <nil>
	// alice jobqueue: quota exceeded: 2 active jobs, the most allowed
	// bob <nil>
	// true
	// alice: 2 active
}

// List pages through one owner's jobs, newest first, in summaries: each
// page starts after the last ID of the previous one.
func ExampleListFilter_cursor() {
	q, _ := jobqueue.New(jobqueue.Config{NoWorkers: true})
	defer q.Shutdown(context.Background())
	ctx := context.Background()
	for i := range 5 {
		q.Submit(ctx, jobqueue.JobRequest{Type: "report", Owner: "alice", Payload: []byte(fmt.Sprint(i))})
	}
	f := jobqueue.ListFilter{Owner: "alice", Limit: 2, Summary: true}
	for {
		page, _ := q.List(ctx, f)
		fmt.Printf("%d jobs; ", len(page))
		if len(page) < f.Limit {
			break
		}
		f.Cursor = page[len(page)-1].ID
	}
	fmt.Println()
	// Output: 2 jobs; 2 jobs; 1 jobs;
}

// A recurring job: a report every second (in production, a cron
// expression such as "0 3 * * *" for 03:00 every night). Every process of
// a shared queue may register the same schedule: each tick is one job.
func ExampleQueue_Schedule() {
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		panic(err)
	}
	defer q.Shutdown(context.Background())
	reports := make(chan string, 8)
	jobqueue.HandleFunc(q, "report", func(ctx context.Context, kind string) (string, error) {
		job, _, _ := jobqueue.JobFromContext(ctx)
		reports <- fmt.Sprintf("%s report for schedule %q", kind, job.Metadata["schedule"])
		return "done", nil
	})
	err = q.Schedule(jobqueue.Schedule{
		Name:  "nightly-report",
		Every: time.Second, // or Cron: "0 3 * * *", Location: ...
		Job:   jobqueue.JobRequest{Type: "report", Payload: json.RawMessage(`"sales"`)},
	})
	if err != nil {
		panic(err)
	}
	if err := q.Start(); err != nil {
		panic(err)
	}
	fmt.Println(<-reports)
	// Output: sales report for schedule "nightly-report"
}

// Workers that size themselves: between 1 and 8, from the backlog and the
// jobs' run time, changing at most once per 30 s. OnResize keeps a
// goroutine pool that the handlers feed the same size. (No output: the
// counts depend on the machine.)
func ExampleAutoscale() {
	images := pool.New(1)
	defer images.Close()
	q, err := jobqueue.New(jobqueue.Config{
		Autoscale: &jobqueue.Autoscale{Min: 1, Max: 8, Target: 2 * time.Second, Cooldown: 30 * time.Second,
			OnResize: images.Resize},
		Logger: slog.Default(), // each change: level=INFO msg=autoscale from=1 to=8 pending=...
	})
	if err != nil {
		panic(err)
	}
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "thumbnail", func(ctx context.Context, path string) (string, error) {
		done := make(chan string, 1)
		if err := images.Submit(ctx, func() { done <- path + ".thumb.png" }); err != nil {
			return "", err
		}
		select {
		case out := <-done:
			return out, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	if err := q.Start(); err != nil {
		panic(err)
	}
	fmt.Println(q.WorkerCount(), "worker to start with")
}

package jobqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestBadHandlerOutput: a result that is not JSON fails the job for good
// (it could not be stored, listed or sent in an event), and a NaN progress
// is refused, while the queue goes on serving.
func TestBadHandlerOutput(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{Workers: 1, RetryDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var progressErr error
	q.Handle("garbage", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		return json.RawMessage(`{"unterminated": `), nil
	}))
	q.Handle("nan", jobqueue.HandlerFunc(func(ctx context.Context, _ *jobqueue.Job) (json.RawMessage, error) {
		progressErr = jobqueue.Progress(ctx, math.NaN(), "half?")
		return json.RawMessage(`true`), nil
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	info, err := q.Run(ctx, jobqueue.JobRequest{Type: "garbage", MaxAttempts: 3})
	if !errors.Is(err, jobqueue.ErrFailed) || info.Attempts != 1 || !strings.Contains(info.LastError, "not JSON") {
		t.Fatalf("garbage result: %+v, %v; want failed after 1 attempt, not JSON", info, err)
	}
	info, err = q.Run(ctx, jobqueue.JobRequest{Type: "nan"})
	if err != nil || string(info.Result) != "true" {
		t.Fatalf("nan job: %+v, %v", info, err)
	}
	if progressErr == nil || info.Progress != 0 {
		t.Fatalf("Progress(NaN) = %v, stored progress %v; want an error and nothing stored", progressErr, info.Progress)
	}
}

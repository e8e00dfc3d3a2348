package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"time"

	"github.com/corework/corework/jobqueue"
)

// Limits of the example job types, so that one request cannot hold a
// worker for long.
const (
	maxFibonacci = 200_000
	maxSleep     = time.Hour
	fibDigits    = 60 // longer values are shown as head...tail
)

// jobTypes describes the job types registerJobs installs, for GET /.
var jobTypes = map[string]string{
	"fib-big": `payload {"n": 0-200000}: the n-th Fibonacci number, with progress every 10%`,
	"sleep":   `payload {"duration": "5s"}: waits, with progress every tenth; cancel it with DELETE`,
	"fail":    `payload {"rate": 0.5} (optional): each attempt fails with this probability, to watch retries`,
}

// registerJobs installs the example job types on q.
func registerJobs(q *jobqueue.Queue) {
	jobqueue.HandleFunc(q, "fib-big", fibonacci)
	jobqueue.HandleFunc(q, "sleep", sleep)
	jobqueue.HandleFunc(q, "fail", fail)
}

type fibonacciIn struct {
	N int `json:"n"`
}

type fibonacciOut struct {
	N      int    `json:"n"`
	Digits int    `json:"digits"`
	Value  string `json:"value"` // in full up to 60 digits, else head...tail
}

// fibonacci computes F(n) with big integers, reporting progress at every
// tenth of the way and stopping when its context ends.
func fibonacci(ctx context.Context, in fibonacciIn) (fibonacciOut, error) {
	if in.N < 0 || in.N > maxFibonacci {
		return fibonacciOut{}, jobqueue.Permanent(fmt.Errorf("n = %d: want 0-%d", in.N, maxFibonacci))
	}
	a, b := big.NewInt(0), big.NewInt(1)
	step := max(in.N/10, 1)
	for i := 1; i <= in.N; i++ {
		a.Add(a, b)
		a, b = b, a
		if i%step == 0 {
			if err := ctx.Err(); err != nil {
				return fibonacciOut{}, err
			}
			jobqueue.Progress(ctx, float64(100*i/in.N), fmt.Sprintf("%d of %d", i, in.N))
		}
	}
	s := a.String()
	out := fibonacciOut{N: in.N, Digits: len(s), Value: s}
	if len(s) > fibDigits {
		out.Value = s[:fibDigits/2-2] + "..." + s[len(s)-fibDigits/2+1:]
	}
	return out, nil
}

type sleepIn struct {
	Duration string `json:"duration"`
}

type sleepOut struct {
	Slept string `json:"slept"`
}

// sleep waits for the given duration, reporting progress at every tenth,
// and returns early with its context's error when canceled or timed out.
func sleep(ctx context.Context, in sleepIn) (sleepOut, error) {
	d, err := time.ParseDuration(in.Duration)
	if err != nil || d < 0 || d > maxSleep {
		return sleepOut{}, jobqueue.Permanent(fmt.Errorf("duration %q: want 0s-%v", in.Duration, maxSleep))
	}
	start := time.Now()
	tick := time.NewTicker(max(d/10, time.Millisecond))
	defer tick.Stop()
	end := time.NewTimer(d)
	defer end.Stop()
	for {
		select {
		case <-end.C:
			slept := time.Since(start).Round(time.Millisecond).String()
			jobqueue.Progress(ctx, 100, "slept "+slept)
			return sleepOut{Slept: slept}, nil
		case <-tick.C:
			el := time.Since(start)
			jobqueue.Progress(ctx, min(math.Round(100*float64(el)/float64(d)), 99), "slept "+el.Round(time.Millisecond).String())
		case <-ctx.Done():
			return sleepOut{}, context.Cause(ctx)
		}
	}
}

type failIn struct {
	Rate *float64 `json:"rate"` // nil: 0.5
}

type failOut struct {
	Attempt int `json:"attempt"`
}

// errUnlucky is the error of a failed attempt of the fail job type.
var errUnlucky = errors.New("unlucky attempt")

// fail fails each attempt with probability rate, to show retries with
// backoff: look at the job's attempts and last_error. Its payload is
// optional.
func fail(ctx context.Context, in *failIn) (failOut, error) {
	rate := 0.5
	if in != nil && in.Rate != nil {
		rate = *in.Rate
	}
	if rate < 0 || rate > 1 {
		return failOut{}, jobqueue.Permanent(fmt.Errorf("rate %g: want 0-1", rate))
	}
	_, attempt, _ := jobqueue.JobFromContext(ctx)
	if rand.Float64() < rate {
		return failOut{}, fmt.Errorf("attempt %d: %w", attempt, errUnlucky)
	}
	return failOut{Attempt: attempt}, nil
}

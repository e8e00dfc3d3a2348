package jobqueue_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"log/slog"

	"github.com/corework/corework/jobqueue"
)

// syncBuf is a bytes.Buffer safe for a logger and a reader at once.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAutoscale drives a burst of 120 jobs of 40 ms through a queue that
// autoscales between 1 and 4 workers: the count rises to 4, returns to 1
// after the burst, and changes at most once per Cooldown; every job runs
// once, never more than 4 at a time; each change is logged, counted and
// reported to OnResize.
func TestAutoscale(t *testing.T) {
	const (
		jobs     = 120
		cooldown = 400 * time.Millisecond
	)
	var logs syncBuf
	var resized []int
	var mu sync.Mutex
	q, err := jobqueue.New(jobqueue.Config{
		Autoscale: &jobqueue.Autoscale{Min: 1, Max: 4, Interval: 20 * time.Millisecond, Target: 100 * time.Millisecond,
			Cooldown: cooldown, OnResize: func(n int) { mu.Lock(); resized = append(resized, n); mu.Unlock() }},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	var running, peak, done atomic.Int32
	jobqueue.HandleFunc(q, "work", func(ctx context.Context, _ int) (int, error) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(40 * time.Millisecond)
		running.Add(-1)
		done.Add(1)
		return 0, nil
	})
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	if n := q.WorkerCount(); n != 1 {
		t.Fatalf("%d workers at start, want Min 1", n)
	}
	// Record every change of the count.
	type change struct {
		at time.Time
		n  int
	}
	changes := []change{{time.Now(), 1}}
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n := q.WorkerCount(); n != changes[len(changes)-1].n {
				changes = append(changes, change{time.Now(), n})
			}
		}
	}()
	start := time.Now()
	for range jobs {
		if _, err := q.Submit(context.Background(), jobqueue.JobRequest{Type: "work", Payload: []byte("1")}); err != nil {
			t.Fatal(err)
		}
	}
	// The burst: 120 x 40 ms is 4.8 s on one worker, 1.2 s on four.
	for done.Load() < jobs && time.Since(start) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	burst := time.Since(start)
	// After it: back to Min within two cooldowns.
	deadline := time.Now().Add(2*cooldown + time.Second)
	for q.WorkerCount() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(stopWatch)
	<-watched

	if done.Load() != jobs {
		t.Fatalf("%d of %d jobs ran in %v", done.Load(), jobs, burst)
	}
	reachedMax := false
	for i, c := range changes {
		if c.n == 4 {
			reachedMax = true
		}
		if i > 1 && c.at.Sub(changes[i-1].at) < cooldown-20*time.Millisecond {
			t.Errorf("changes %d -> %d and -> %d only %v apart (cooldown %v)", changes[i-2].n, changes[i-1].n, c.n,
				c.at.Sub(changes[i-1].at), cooldown)
		}
	}
	if !reachedMax || changes[len(changes)-1].n != 1 {
		t.Fatalf("worker counts %v: want a rise to 4 and a return to 1", changes)
	}
	if p := peak.Load(); p > 4 || p < 4 {
		t.Errorf("at most %d jobs ran at once, want 4 (Max)", p)
	}
	st := q.Stats()
	mu.Lock()
	defer mu.Unlock()
	if int(st.Resizes) != len(changes)-1 || len(resized) != len(changes)-1 || st.Workers != 1 || st.Succeeded != jobs {
		t.Errorf("Stats: %d resizes, %d workers, %d succeeded; OnResize %v; changes %v", st.Resizes, st.Workers, st.Succeeded, resized, changes)
	}
	if c := strings.Count(logs.String(), "msg=autoscale"); c != len(changes)-1 {
		t.Errorf("%d autoscale log records for %d changes:\n%s", c, len(changes)-1, logs.String())
	}
	t.Logf("burst of %d jobs done in %v; worker counts %v (ms from the start)", jobs, burst.Round(time.Millisecond), func() []string {
		var s []string
		for _, c := range changes {
			s = append(s, c.at.Sub(start).Round(time.Millisecond).String()+":"+string(rune('0'+c.n)))
		}
		return s
	}())
}

func TestAutoscaleConfig(t *testing.T) {
	for _, c := range []jobqueue.Config{
		{Autoscale: &jobqueue.Autoscale{Min: 0, Max: 2}},
		{Autoscale: &jobqueue.Autoscale{Min: 3, Max: 2}},
		{Autoscale: &jobqueue.Autoscale{Min: 1, Max: 2, Cooldown: -1}},
		{Autoscale: &jobqueue.Autoscale{Min: 1, Max: 2}, Workers: 2},
		{Autoscale: &jobqueue.Autoscale{Min: 1, Max: 2}, NoWorkers: true},
	} {
		if q, err := jobqueue.New(c); err == nil {
			q.Shutdown(context.Background())
			t.Errorf("%+v accepted", *c.Autoscale)
		}
	}
}

package jobqueue_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// lossyBackend is the memory backend seen through a connection that lost
// a job's final event: once lost is set, Get reports the job succeeded,
// though no event ever says so. It implements jobqueue.Resyncer.
type lossyBackend struct {
	jobqueue.Backend
	lost   atomic.Bool
	gets   atomic.Int32
	resync chan struct{}
}

func (b *lossyBackend) Get(ctx context.Context, id string) (jobqueue.JobInfo, error) {
	b.gets.Add(1)
	info, err := b.Backend.Get(ctx, id)
	if err == nil && b.lost.Load() {
		info.State, info.Result, info.Attempts = jobqueue.StateSucceeded, json.RawMessage(`1`), 1
	}
	return info, err
}

func (b *lossyBackend) Resync() <-chan struct{}       { return b.resync }
func (b *lossyBackend) ResyncInterval() time.Duration { return interval }

const interval = 300 * time.Millisecond

// TestWaitResyncs: Wait with a Resyncer backend notices a job's end from
// Get at the resync interval, and at once when Resync's channel closes,
// without its final event.
func TestWaitResyncs(t *testing.T) {
	for _, viaSignal := range []bool{false, true} {
		b := &lossyBackend{Backend: jobqueue.NewMemoryBackend(), resync: make(chan struct{})}
		q, err := jobqueue.New(jobqueue.Config{Backend: b, NoWorkers: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "x"})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		var at time.Time
		go func() {
			info, err := q.Wait(ctx, id)
			if err == nil && info.State != jobqueue.StateSucceeded {
				t.Errorf("Wait = %s", info.State)
			}
			at = time.Now()
			done <- err
		}()
		time.Sleep(100 * time.Millisecond)
		b.lost.Store(true)
		lostAt := time.Now()
		if viaSignal {
			close(b.resync)
		}
		if err := <-done; err != nil {
			t.Fatalf("Wait: %v", err)
		}
		// Generous bounds for 2 shared cores: the interval is 300ms.
		if d := at.Sub(lostAt); d > interval+3*time.Second {
			t.Errorf("viaSignal=%v: Wait returned %v after the job's end", viaSignal, d)
		}
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := q.Shutdown(sctx); err != nil {
			t.Error(err)
		}
		scancel()
	}
}

// TestWaitNoExtraGet: a job whose final event arrives costs Wait no read
// beyond its first and the one that confirms the final state.
func TestWaitNoExtraGet(t *testing.T) {
	b := &lossyBackend{Backend: jobqueue.NewMemoryBackend()}
	q, err := jobqueue.New(jobqueue.Config{Backend: b, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = q.Shutdown(ctx)
	}()
	release := make(chan struct{})
	q.Handle("x", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		<-release
		return nil, nil
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "x"})
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(100 * time.Millisecond); close(release) }()
	before := b.gets.Load()
	if _, err := q.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := b.gets.Load() - before; n > 2 {
		t.Errorf("Wait made %d Gets for a job that ended within the interval, want at most 2", n)
	}
}

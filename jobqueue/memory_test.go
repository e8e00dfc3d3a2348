package jobqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemoryAccounting runs a mixed workload (owners, delays, retries,
// failures, cancels, results) and checks that the memory backend's counts
// return to zero: every owner's usage, the owner records, the active bytes,
// and the kept bytes equal to what the retained jobs hold.
func TestMemoryAccounting(t *testing.T) {
	q, err := New(Config{Workers: 3, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Millisecond,
		MaxBytes: 40_000, Retention: Retention{MaxJobs: 50}})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	q.Handle("work", HandlerFunc(func(ctx context.Context, job *Job) (json.RawMessage, error) {
		switch n := calls.Add(1); n % 5 {
		case 0:
			return nil, errors.New("retry me")
		case 1:
			return nil, Permanent(errors.New("fail"))
		default:
			return json.RawMessage(fmt.Sprintf(`"%0*d"`, int(n%200), n)), nil
		}
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	owners := []string{"", "alice", "bob", "carol"}
	var ids []string
	for i := range 400 {
		req := JobRequest{Type: "work", Owner: owners[i%4], Priority: Priority(rng.IntN(NumPriorities)),
			Payload: json.RawMessage(fmt.Sprintf(`"%0*d"`, rng.IntN(300), i)), MaxAttempts: 2,
			Quota: Quota{MaxActive: 60, MaxBytes: 12_000}}
		if rng.IntN(4) == 0 {
			req.RunAt = time.Now().Add(time.Duration(rng.IntN(20)) * time.Millisecond)
		}
		id, err := q.Submit(ctx, req)
		if errors.Is(err, ErrQuotaExceeded) || errors.Is(err, ErrQueueFull) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if rng.IntN(6) == 0 {
			q.Cancel(ctx, ids[rng.IntN(len(ids))])
		}
	}
	for _, id := range ids {
		if _, err := q.Wait(ctx, id); err != nil && !errors.Is(err, ErrFailed) && !errors.Is(err, ErrCanceled) && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	b := q.backend.(*memBackend)
	b.mu.Lock()
	var kept int64
	for i := 0; i < b.finished.n; i++ {
		kept += b.finished.buf[(b.finished.head+i)&(len(b.finished.buf)-1)].size()
	}
	anon, nOwners := b.anon, 0
	for _, o := range b.owners {
		if o.active != 0 || o.bytes != 0 || o.delayed != 0 {
			nOwners++ // idle records may stay; busy ones may not
		}
	}
	if len(b.owners) > 2*idleOwners+1 || b.idle != len(b.owners) {
		t.Errorf("%d owner records kept, %d counted idle, after every job finished", len(b.owners), b.idle)
	}
	state := fmt.Sprintf("active %d bytes %d kept %d (retained hold %d), retained %d, records %d",
		b.active, b.activeBytes, b.keptBytes, kept, b.finished.n, len(b.records))
	ok := b.active == 0 && b.activeBytes == 0 && b.keptBytes == kept && b.keptBytes <= b.maxBytes &&
		b.finished.n == len(b.records) && len(b.unique) == 0
	b.mu.Unlock()
	if !ok || nOwners != 0 || anon.active != 0 || anon.bytes != 0 || anon.delayed != 0 {
		t.Fatalf("after the workload: %s; %d busy owner records, anon %+v", state, nOwners, anon)
	}
	for _, o := range owners {
		if u, err := q.Usage(ctx, o); err != nil || u != (Usage{}) {
			t.Fatalf("Usage(%q) = %+v, %v after every job finished", o, u, err)
		}
	}
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBytes != 256<<20 || cfg.MaxResult != 1<<20 || cfg.MaxPayload != 1<<20 || cfg.Capacity != 65_536 ||
		cfg.Retention != (Retention{MaxJobs: 10_000, MaxAge: time.Hour}) {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg, _ = Config{MaxBytes: -1, MaxResult: -1, Retention: Retention{MaxJobs: -1, MaxAge: -1}}.withDefaults()
	if cfg.MaxBytes != -1 || cfg.MaxResult != -1 || cfg.Retention != (Retention{MaxJobs: -1, MaxAge: -1}) {
		t.Fatalf("negative values not kept: %+v", cfg)
	}
	if bc := (BackendConfig{}).withDefaults(); bc.MaxBytes != 256<<20 || bc.Capacity != 65_536 || bc.Retention.MaxJobs != 10_000 {
		t.Fatalf("backend defaults: %+v", bc)
	}
}

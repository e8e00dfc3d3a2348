package jetstream

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

func TestFreshID(t *testing.T) {
	_, q := submitOnlyQueue(t, WithName("fresh"))
	made := time.Now()
	id := q.NewID()
	// The ID's own time, not made: on a loaded machine NewID may run
	// milliseconds after made (made + 5 ms was once before the ID).
	idAt, ok := jobqueue.IDTime(id)
	if !ok {
		t.Fatalf("IDTime(%q) failed", id)
	}
	for _, tc := range []struct {
		id        string
		submitted time.Time
		want      bool
	}{
		{id, idAt.Add(-time.Millisecond), true},                                      // made by Submit for this job
		{id, idAt.Add(5 * time.Millisecond), false},                                  // from NewID, submitted later: maybe a repeat
		{id, made.Add(10 * time.Minute), false},                                      // a retry long after
		{strings.ToUpper(id), made, false},                                           // not the Queue's alphabet
		{id[:20], made, false},                                                       // the old 20-character form
		{"order-1234", made, false},                                                  // a caller's own
		{"g" + id[1:], time.Time{}.Add(1), false},                                    // sequence beyond 64 bits
		{strings.Repeat("0", 36), time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), true}, // time zero, at the epoch
		{strings.Repeat("0", 35) + "i", made, false},                                 // 'i' is not Crockford's
	} {
		if got := freshID(tc.id, tc.submitted); got != tc.want {
			t.Errorf("freshID(%q, %v) = %v, want %v", tc.id, tc.submitted.Sub(made), got, tc.want)
		}
	}
	// The ID Submit makes is fresh: Enqueue stores it without a lookup.
	got, err := q.Submit(context.Background(), jobqueue.JobRequest{Type: "t"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := q.Get(context.Background(), got)
	if err != nil {
		t.Fatal(err)
	}
	if !freshID(info.ID, info.SubmittedAt) {
		t.Errorf("the ID Submit made, %s at %v, is not fresh", info.ID, info.SubmittedAt)
	}
}

// TestUsageHeal leaves counters too high, as a process dying between a
// reservation and its store would, and checks that they are reset once the
// queue is idle, and not before.
func TestUsageHeal(t *testing.T) {
	srv, err := NewServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	be, err := srv.Backend(WithName("heal"), WithPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	be.led.settle = 50 * time.Millisecond // the scheduler checks about once a second
	q, err := jobqueue.New(jobqueue.Config{Backend: be, NoWorkers: true, MaxBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "t", Owner: "alice", Payload: []byte(`"abc"`)})
	if err != nil {
		t.Fatal(err)
	}
	// Reservations whose jobs were never stored.
	if err := be.led.apply(ownerKey("ghost"), "ghost", usage{Active: 2, Delayed: 1, Bytes: 40}, nil); err != nil {
		t.Fatal(err)
	}
	if err := be.led.apply(bytesKey, "", usage{Bytes: 40}, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]jobqueue.Usage{
		"alice": {Active: 1, Bytes: 5},
		"ghost": {Active: 2, Delayed: 1, Bytes: 40},
	}
	check := func() {
		t.Helper()
		for owner, w := range want {
			if u, err := q.Usage(ctx, owner); err != nil || u != w {
				t.Fatalf("Usage(%s) = %+v, %v; want %+v", owner, u, err, w)
			}
		}
	}
	check()
	time.Sleep(4 * time.Second) // four checks: a job is stored, so no reset
	check()
	if err := q.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	want["alice"] = jobqueue.Usage{}
	check()
	for {
		u, err := q.Usage(ctx, "ghost")
		if err != nil {
			t.Fatal(err)
		}
		if u == (jobqueue.Usage{}) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the idle queue's counters were not reset: ghost %+v", u)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The byte budget is whole again.
	if _, err := q.Submit(ctx, jobqueue.JobRequest{Type: "t", Payload: sized(1000)}); err != nil {
		t.Fatalf("Submit of MaxBytes after the reset: %v", err)
	}
}

func sized(n int) []byte { return []byte(`"` + strings.Repeat("x", n-2) + `"`) }

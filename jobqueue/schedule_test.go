package jobqueue

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// scheduleQueue returns a started queue whose "tick" handler records the
// IDs of the jobs it runs.
func scheduleQueue(t *testing.T, before func(q *Queue)) (*Queue, func() []string) {
	t.Helper()
	q, err := New(Config{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ran []string
	q.Handle("tick", HandlerFunc(func(ctx context.Context, job *Job) (json.RawMessage, error) {
		mu.Lock()
		ran = append(ran, job.ID)
		mu.Unlock()
		return nil, nil
	}))
	before(q)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return q, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(ran)
	}
}

// TestScheduleEvery: a one-second schedule submits one job per second,
// whose ID and metadata name its tick; a six-field cron expression ticking
// every second does the same.
func TestScheduleEvery(t *testing.T) {
	for _, s := range []Schedule{
		{Name: "every", Every: time.Second, Job: JobRequest{Type: "tick"}},
		{Name: "cron", Cron: "* * * * * *", Job: JobRequest{Type: "tick", Metadata: map[string]string{"k": "v"}}},
	} {
		t.Run(s.Name, func(t *testing.T) {
			q, ran := scheduleQueue(t, func(q *Queue) {
				if err := q.Schedule(s); err != nil {
					t.Fatal(err)
				}
			})
			start := time.Now()
			time.Sleep(3500 * time.Millisecond)
			ids := ran()
			// Ticks at whole seconds within 3.5 s: 3 or 4 of them.
			if len(ids) < 3 || len(ids) > 4 {
				t.Fatalf("%d jobs in 3.5 s: %v", len(ids), ids)
			}
			for _, id := range ids {
				tick, err := time.Parse("20060102T150405Z", strings.TrimPrefix(id, s.Name+"-"))
				if err != nil || tick.Before(start.Truncate(time.Second)) || tick.After(time.Now()) {
					t.Errorf("job %s: not a tick of the run (%v)", id, err)
				}
				info, err := q.Get(context.Background(), id)
				if err != nil || info.Metadata["schedule"] != s.Name || info.Metadata["tick"] != tick.Format(time.RFC3339) {
					t.Errorf("job %s: %+v, %v", id, info.Metadata, err)
				}
				if s.Job.Metadata != nil && info.Metadata["k"] != "v" {
					t.Errorf("job %s lost the template's metadata: %v", id, info.Metadata)
				}
			}
		})
	}
}

// TestScheduleCatchUp: with the last recorded tick ten minutes back, a
// one-minute schedule missed 10 ticks: CatchUpLast submits the latest one
// at start, CatchUpAll the latest MaxCatchUp (3), CatchUpNone none; a
// schedule new to the backend submits none and records the latest tick.
func TestScheduleCatchUp(t *testing.T) {
	for _, c := range []struct {
		policy CatchUpPolicy
		new    bool
		want   int
	}{
		{CatchUpLast, false, 1},
		{CatchUpAll, false, 3},
		{CatchUpNone, false, 0},
		{CatchUpLast, true, 0},
	} {
		var now time.Time
		q, ran := scheduleQueue(t, func(q *Queue) {
			// A minute-long interval: no regular tick falls in the test.
			s := Schedule{Name: "report", Every: time.Minute, Job: JobRequest{Type: "tick"}, CatchUp: c.policy, MaxCatchUp: 3}
			if err := q.Schedule(s); err != nil {
				t.Fatal(err)
			}
			now = time.Now()
			if !c.new {
				q.backend.(*memBackend).MarkTick(context.Background(), "report", now.Truncate(time.Minute).Add(-10*time.Minute))
			}
		})
		deadline := time.Now().Add(2 * time.Second)
		for len(ran()) < c.want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // no more than wanted
		ids := ran()
		if len(ids) != c.want {
			t.Fatalf("policy %d (new %v): %d jobs %v, want %d", c.policy, c.new, len(ids), ids, c.want)
		}
		latest := now.Truncate(time.Minute)
		if c.want > 0 && !slices.Contains(ids, tickID("report", latest)) {
			t.Errorf("policy %d: %v lacks the latest missed tick %s", c.policy, ids, tickID("report", latest))
		}
		if c.policy == CatchUpAll && !slices.Contains(ids, tickID("report", latest.Add(-2*time.Minute))) {
			t.Errorf("CatchUpAll: %v lacks the tick two minutes back", ids)
		}
		last, ok, _ := q.backend.(*memBackend).LastTick(context.Background(), "report")
		if !ok || !last.Equal(latest) {
			t.Errorf("policy %d: last tick recorded %v (%v), want %v", c.policy, last, ok, latest)
		}
	}
}

func TestScheduleInvalid(t *testing.T) {
	q, err := New(Config{NoWorkers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	job := JobRequest{Type: "tick"}
	for _, c := range []struct {
		s    Schedule
		want string
	}{
		{Schedule{Name: "", Every: time.Second, Job: job}, "name"},
		{Schedule{Name: strings.Repeat("x", 41), Every: time.Second, Job: job}, "name"},
		{Schedule{Name: "a.b", Every: time.Second, Job: job}, "name"},
		{Schedule{Name: "a", Job: job}, "Cron or Every"},
		{Schedule{Name: "a", Cron: "* * * * *", Every: time.Second, Job: job}, "Cron or Every"},
		{Schedule{Name: "a", Every: 1500 * time.Millisecond, Job: job}, "whole number"},
		{Schedule{Name: "a", Every: time.Millisecond, Job: job}, "whole number"},
		{Schedule{Name: "a", Cron: "61 * * * *", Job: job}, "cron expression"},
		{Schedule{Name: "a", Cron: "nonsense", Job: job}, "cron expression"},
		{Schedule{Name: "a", Every: time.Second, Job: JobRequest{Type: "tick", ID: "x"}}, "ID and UniqueKey"},
		{Schedule{Name: "a", Every: time.Second, Job: JobRequest{}}, "empty type"},
		{Schedule{Name: "a", Every: time.Second, Job: job, CatchUp: 9}, "CatchUp"},
	} {
		if err := q.Schedule(c.s); !errors.Is(err, ErrInvalidJob) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want ErrInvalidJob mentioning %q", c.s, err, c.want)
		}
	}
	// Time zones: CRON_TZ and Location.
	for _, s := range []Schedule{
		{Name: "tz1", Cron: "CRON_TZ=Europe/Madrid 0 3 * * *", Job: job},
		{Name: "tz2", Cron: "0 3 * * *", Location: time.FixedZone("X", 3600), Job: job},
		{Name: "daily", Cron: "@daily", Job: job},
	} {
		if err := q.Schedule(s); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	if err := q.Schedule(Schedule{Name: "daily", Every: time.Hour, Job: job}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a name registered twice: %v", err)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	if err := q.Schedule(Schedule{Name: "late", Every: time.Hour, Job: job}); err == nil {
		t.Error("Schedule after Start accepted")
	}
}

// TestScheduleTimeZone: the ticks of a cron expression fall in its zone.
func TestScheduleTimeZone(t *testing.T) {
	madrid, err := time.LoadLocation("Europe/Madrid")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	q, err := New(Config{NoWorkers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	for _, s := range []Schedule{
		{Name: "a", Cron: "0 3 * * *", Location: madrid, Job: JobRequest{Type: "tick"}},
		{Name: "b", Cron: "CRON_TZ=Europe/Madrid 0 3 * * *", Job: JobRequest{Type: "tick"}},
	} {
		sc, err := q.newSchedule(s)
		if err != nil {
			t.Fatal(err)
		}
		from := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
		got := sc.next(from).UTC()
		if want := time.Date(2026, 12, 8, 2, 0, 0, 0, time.UTC); !got.Equal(want) { // 03:00 CET
			t.Errorf("%s: next tick after %v is %v, want %v", s.Name, from, got, want)
		}
		if p := sc.prev(from).UTC(); !p.Equal(time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)) {
			t.Errorf("%s: the tick before %v is %v", s.Name, from, p)
		}
	}
}

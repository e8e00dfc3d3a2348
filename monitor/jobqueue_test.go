package monitor_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
)

// A real queue runs jobs of three types at two priorities, with a retry, a
// failure and a cancellation; the collector reports them by type, state
// and priority, with run and wait histograms that match the queue's own
// Latency figures.
func TestNewJobQueueCollector(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{Workers: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	jobqueue.HandleFunc(q, "resize", func(ctx context.Context, ms int) (int, error) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ms, nil
	})
	jobqueue.HandleFunc(q, "flaky", func(ctx context.Context, _ any) (int, error) {
		if _, attempt, _ := jobqueue.JobFromContext(ctx); attempt == 1 {
			return 0, errors.New("first attempt fails")
		}
		return 1, nil
	})
	jobqueue.HandleFunc(q, "broken", func(ctx context.Context, _ any) (int, error) {
		return 0, jobqueue.Permanent(errors.New("always fails"))
	})
	c := monitor.NewJobQueueCollector("media", q.Stats)

	// Before Start: five pending jobs at two levels, one scheduled.
	ctx := t.Context()
	submit := func(req jobqueue.JobRequest) string {
		t.Helper()
		id, err := q.Submit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	var ids []string
	for range 3 {
		ids = append(ids, submit(jobqueue.JobRequest{Type: "resize", Payload: []byte("2"), Priority: jobqueue.High}))
	}
	for range 2 {
		ids = append(ids, submit(jobqueue.JobRequest{Type: "resize", Payload: []byte("1")}))
	}
	later := submit(jobqueue.JobRequest{Type: "resize", Payload: []byte("1"), RunAt: time.Now().Add(time.Hour)})
	const before = `
# HELP corework_jobqueue_depth Pending jobs per priority level.
# TYPE corework_jobqueue_depth gauge
corework_jobqueue_depth{priority="0",queue="media"} 2
corework_jobqueue_depth{priority="1",queue="media"} 0
corework_jobqueue_depth{priority="2",queue="media"} 0
corework_jobqueue_depth{priority="3",queue="media"} 0
corework_jobqueue_depth{priority="4",queue="media"} 0
corework_jobqueue_depth{priority="5",queue="media"} 0
corework_jobqueue_depth{priority="6",queue="media"} 3
corework_jobqueue_depth{priority="7",queue="media"} 0
corework_jobqueue_depth{priority="8",queue="media"} 0
corework_jobqueue_depth{priority="9",queue="media"} 0
# HELP corework_jobqueue_jobs_active Jobs not finished, by state (pending, scheduled, retrying, running).
# TYPE corework_jobqueue_jobs_active gauge
corework_jobqueue_jobs_active{queue="media",state="pending"} 5
corework_jobqueue_jobs_active{queue="media",state="retrying"} 0
corework_jobqueue_jobs_active{queue="media",state="running"} 0
corework_jobqueue_jobs_active{queue="media",state="scheduled"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(before), "corework_jobqueue_depth", "corework_jobqueue_jobs_active"); err != nil {
		t.Error(err)
	}

	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ids = append(ids,
		submit(jobqueue.JobRequest{Type: "flaky"}),
		submit(jobqueue.JobRequest{Type: "flaky"}),
		submit(jobqueue.JobRequest{Type: "broken"}))
	for _, id := range ids {
		q.Wait(ctx, id) // the failed job's error is expected
	}
	if err := q.Cancel(ctx, later); err != nil {
		t.Fatal(err)
	}
	if info, _ := q.Wait(ctx, later); info.State != jobqueue.StateCanceled {
		t.Fatalf("scheduled job %s, want canceled", info.State)
	}

	lint(t, c)
	const after = `
# HELP corework_jobqueue_jobs_submitted_total Jobs accepted by Submit and Run.
# TYPE corework_jobqueue_jobs_submitted_total counter
corework_jobqueue_jobs_submitted_total{queue="media"} 9
# HELP corework_jobqueue_jobs_total Jobs ended, by type and final state (succeeded, failed, canceled).
# TYPE corework_jobqueue_jobs_total counter
corework_jobqueue_jobs_total{queue="media",state="canceled",type="broken"} 0
corework_jobqueue_jobs_total{queue="media",state="canceled",type="flaky"} 0
corework_jobqueue_jobs_total{queue="media",state="canceled",type="resize"} 1
corework_jobqueue_jobs_total{queue="media",state="failed",type="broken"} 1
corework_jobqueue_jobs_total{queue="media",state="failed",type="flaky"} 0
corework_jobqueue_jobs_total{queue="media",state="failed",type="resize"} 0
corework_jobqueue_jobs_total{queue="media",state="succeeded",type="broken"} 0
corework_jobqueue_jobs_total{queue="media",state="succeeded",type="flaky"} 2
corework_jobqueue_jobs_total{queue="media",state="succeeded",type="resize"} 5
# HELP corework_jobqueue_retries_total Failed attempts followed by a retry, by job type.
# TYPE corework_jobqueue_retries_total counter
corework_jobqueue_retries_total{queue="media",type="broken"} 0
corework_jobqueue_retries_total{queue="media",type="flaky"} 2
corework_jobqueue_retries_total{queue="media",type="resize"} 0
# HELP corework_jobqueue_workers Worker goroutines: configured, or the autoscaler's count now.
# TYPE corework_jobqueue_workers gauge
corework_jobqueue_workers{queue="media"} 2
# HELP corework_jobqueue_workers_busy Workers running a handler now.
# TYPE corework_jobqueue_workers_busy gauge
corework_jobqueue_workers_busy{queue="media"} 0
# HELP corework_jobqueue_jobs_retained Finished jobs kept for Get and List.
# TYPE corework_jobqueue_jobs_retained gauge
corework_jobqueue_jobs_retained{queue="media"} 9
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(after),
		"corework_jobqueue_jobs_submitted_total", "corework_jobqueue_jobs_total", "corework_jobqueue_retries_total",
		"corework_jobqueue_workers", "corework_jobqueue_workers_busy", "corework_jobqueue_jobs_retained"); err != nil {
		t.Error(err)
	}

	// The histograms are the queue's Latency figures in seconds, bucket
	// for bucket.
	st := q.Stats()
	fams := gather(t, c)
	if typ := fams["corework_jobqueue_run_duration_seconds"].GetType(); typ != dto.MetricType_HISTOGRAM {
		t.Fatalf("run duration type %v", typ)
	}
	run := byLabel(t, fams, "corework_jobqueue_run_duration_seconds", "type")
	for typ, ts := range st.Types {
		checkHistogram(t, "run "+typ, run[typ].GetHistogram(), ts.Run)
	}
	if h := run["resize"].GetHistogram(); h.GetSampleCount() != 5 || h.GetSampleSum() < 0.008 {
		t.Errorf("resize runs: %d, %vs; want 5 lasting at least 8ms", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := run["flaky"].GetHistogram(); h.GetSampleCount() != 4 {
		t.Errorf("flaky runs: %d, want 4 attempts", h.GetSampleCount())
	}
	// A wait histogram per level where a job started: 0 and 6.
	wait := byLabel(t, fams, "corework_jobqueue_wait_duration_seconds", "priority")
	if len(wait) != 2 {
		t.Errorf("wait histograms for levels %v, want 0 and 6", slices.Collect(maps.Keys(wait)))
	}
	for _, p := range []int{0, 6} {
		checkHistogram(t, "wait "+strconv.Itoa(p), wait[strconv.Itoa(p)].GetHistogram(), st.Priorities[p].Wait)
	}
	if n0, n6 := wait["0"].GetHistogram().GetSampleCount(), wait["6"].GetHistogram().GetSampleCount(); n0 != 5 || n6 != 3 {
		t.Errorf("first attempts at priority 0 and 6: %d and %d, want 5 and 3", n0, n6)
	}
}

// checkHistogram compares a Prometheus histogram with the Latency it was
// made from.
func checkHistogram(t *testing.T, name string, h *dto.Histogram, l jobqueue.Latency) {
	t.Helper()
	if h == nil {
		t.Errorf("%s: no histogram", name)
		return
	}
	if h.GetSampleCount() != l.Count || h.GetSampleSum() != l.Sum.Seconds() {
		t.Errorf("%s: count %d sum %v, want %d %v", name, h.GetSampleCount(), h.GetSampleSum(), l.Count, l.Sum.Seconds())
	}
	bs := h.GetBucket()
	if len(bs) != 33 || len(l.Buckets) != 33 {
		t.Fatalf("%s: %d buckets from %d, want 33", name, len(bs), len(l.Buckets))
	}
	for i, b := range bs {
		if b.GetUpperBound() != l.Buckets[i].UpperBound.Seconds() || b.GetCumulativeCount() != l.Buckets[i].Count {
			t.Errorf("%s: bucket %d le %v count %d, want le %v count %d", name, i,
				b.GetUpperBound(), b.GetCumulativeCount(), l.Buckets[i].UpperBound.Seconds(), l.Buckets[i].Count)
		}
	}
	if bs[0].GetUpperBound() != 1.024e-6 || bs[32].GetUpperBound() != float64(int64(1)<<42)/1e9 {
		t.Errorf("%s: bounds %v to %v", name, bs[0].GetUpperBound(), bs[32].GetUpperBound())
	}
}

// The conversion of a Latency on a fixed Stats: seconds, cumulative counts
// and the +Inf bucket as the total count.
func TestNewJobQueueCollectorHistogram(t *testing.T) {
	stats := func() jobqueue.Stats {
		return jobqueue.Stats{Types: map[string]jobqueue.TypeStats{"mail": {Succeeded: 3, Run: jobqueue.Latency{
			Count: 3, Sum: 1500 * time.Millisecond,
			Buckets: []jobqueue.LatencyBucket{{UpperBound: 1 << 28, Count: 1}, {UpperBound: 1 << 29, Count: 1}, {UpperBound: 1 << 30, Count: 2}},
		}}}}
	}
	const want = `
# HELP corework_jobqueue_run_duration_seconds Duration of every attempt, by job type.
# TYPE corework_jobqueue_run_duration_seconds histogram
corework_jobqueue_run_duration_seconds_bucket{queue="q",type="mail",le="0.268435456"} 1
corework_jobqueue_run_duration_seconds_bucket{queue="q",type="mail",le="0.536870912"} 1
corework_jobqueue_run_duration_seconds_bucket{queue="q",type="mail",le="1.073741824"} 2
corework_jobqueue_run_duration_seconds_bucket{queue="q",type="mail",le="+Inf"} 3
corework_jobqueue_run_duration_seconds_sum{queue="q",type="mail"} 1.5
corework_jobqueue_run_duration_seconds_count{queue="q",type="mail"} 3
`
	c := monitor.NewJobQueueCollector("q", stats)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "corework_jobqueue_run_duration_seconds"); err != nil {
		t.Error(err)
	}
	lint(t, c)
}

func TestNewJobQueueCollectorNil(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "monitor: ") {
			t.Errorf("recovered %v, want a monitor: panic", r)
		}
	}()
	monitor.NewJobQueueCollector("x", nil)
}

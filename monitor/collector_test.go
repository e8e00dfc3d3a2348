package monitor_test

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/monitor"
	"github.com/corework/corework/pool"
	"github.com/corework/corework/procpool"
	"github.com/corework/corework/wsbridge"
)

func procPoolStats() procpool.Stats {
	return procpool.Stats{
		Workers: 2, Alive: 1, Restarts: 3, Crashes: 1, Queued: 4, InFlight: 2, Completed: 50, Failed: 5,
		PerWorker: []procpool.WorkerStats{
			{ID: 0, PID: 4242, CPU: 1, PinnedCPU: 1, Tasks: 30, InFlight: 2},
			{ID: 1, PID: -1, CPU: -1, PinnedCPU: 0, Tasks: 25},
		},
	}
}

func jobQueueStats() jobqueue.Stats {
	run := jobqueue.Latency{Count: 4, Sum: 3 * time.Millisecond, Buckets: []jobqueue.LatencyBucket{
		{UpperBound: 1 << 20, Count: 3}, {UpperBound: 1 << 21, Count: 4},
	}}
	s := jobqueue.Stats{
		Workers: 4, Busy: 1, Pending: 2, Scheduled: 1, Running: 1, Retained: 7,
		Submitted: 11, Succeeded: 6, Failed: 1, Retried: 2, Throughput: 3,
		Run:   run,
		Types: map[string]jobqueue.TypeStats{"resize": {Succeeded: 6, Failed: 1, Retried: 2, Run: run}},
	}
	s.Depth[6] = 2
	s.Priorities[6] = jobqueue.LevelStats{Pending: 2, Succeeded: 6, Wait: run}
	return s
}

func wsBridgeStats() wsbridge.Stats {
	return wsbridge.Stats{Connections: 3, Accepted: 10, Rejected: 1, MessagesIn: 40, MessagesOut: 90, Errors: 2, SlowConsumers: 1}
}

func poolStats() pool.Stats {
	return pool.Stats{
		Size: 8, Workers: 6, Running: 5, Waiting: 3,
		Submitted: 100, Completed: 92, Panicked: 2,
		QueueWaitTotal: 1500 * time.Millisecond, QueueWaitMax: 250 * time.Millisecond,
	}
}

// scrape serves reg on a loopback server and parses one scrape of /metrics.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(monitor.Handler(reg))
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func labels(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

func value(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func TestMetricsEndpoint(t *testing.T) {
	s := newSampler(t, monitor.WithMinWindow(50*time.Millisecond))
	reg := prometheus.NewRegistry()
	if err := monitor.Register(reg, s,
		monitor.NewPoolCollector("images", poolStats),
		monitor.NewPoolCollector("mail", func() pool.Stats { return pool.Stats{Size: 2} }),
		monitor.NewProcPoolCollector("thumbs", procPoolStats),
		monitor.NewJobQueueCollector("media", jobQueueStats),
		monitor.NewWSBridgeCollector("api", wsBridgeStats),
	); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, reg)

	want := map[string]struct {
		typ    dto.MetricType
		labels []string
	}{
		"corework_cpu_usage_ratio":               {dto.MetricType_GAUGE, nil},
		"corework_cpu_usage_window_seconds":      {dto.MetricType_GAUGE, nil},
		"corework_cpu_core_usage_ratio":          {dto.MetricType_GAUGE, []string{"cpu"}},
		"corework_cpu_seconds_total":             {dto.MetricType_COUNTER, []string{"cpu", "mode"}},
		"corework_memory_total_bytes":            {dto.MetricType_GAUGE, nil},
		"corework_memory_available_bytes":        {dto.MetricType_GAUGE, nil},
		"corework_memory_used_bytes":             {dto.MetricType_GAUGE, nil},
		"corework_memory_used_ratio":             {dto.MetricType_GAUGE, nil},
		"corework_load1":                         {dto.MetricType_GAUGE, nil},
		"corework_load5":                         {dto.MetricType_GAUGE, nil},
		"corework_load15":                        {dto.MetricType_GAUGE, nil},
		"corework_process_cpu_usage_ratio":       {dto.MetricType_GAUGE, []string{"name", "pid"}},
		"corework_process_cpu_seconds_total":     {dto.MetricType_COUNTER, []string{"name", "pid"}},
		"corework_process_resident_memory_bytes": {dto.MetricType_GAUGE, []string{"name", "pid"}},
		"corework_process_last_cpu":              {dto.MetricType_GAUGE, []string{"name", "pid"}},
		"corework_process_allowed_cpus":          {dto.MetricType_GAUGE, []string{"name", "pid"}},
		"corework_pool_size":                     {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_pool_workers":                  {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_pool_tasks_running":            {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_pool_tasks_waiting":            {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_pool_tasks_submitted_total":    {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_pool_tasks_completed_total":    {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_pool_tasks_panicked_total":     {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_pool_queue_wait_seconds_total": {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_pool_queue_wait_max_seconds":   {dto.MetricType_GAUGE, []string{"pool"}},

		"corework_procpool_workers":                   {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_procpool_workers_alive":             {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_procpool_restarts_total":            {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_procpool_crashes_total":             {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_procpool_requests_queued":           {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_procpool_requests_in_flight":        {dto.MetricType_GAUGE, []string{"pool"}},
		"corework_procpool_tasks_completed_total":     {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_procpool_tasks_failed_total":        {dto.MetricType_COUNTER, []string{"pool"}},
		"corework_procpool_worker_tasks_total":        {dto.MetricType_COUNTER, []string{"pool", "worker"}},
		"corework_procpool_worker_requests_in_flight": {dto.MetricType_GAUGE, []string{"pool", "worker"}},
		"corework_procpool_worker_pid":                {dto.MetricType_GAUGE, []string{"pool", "worker"}},
		"corework_procpool_worker_last_cpu":           {dto.MetricType_GAUGE, []string{"pool", "worker"}},
		"corework_procpool_worker_pinned_cpu":         {dto.MetricType_GAUGE, []string{"pool", "worker"}},

		"corework_jobqueue_jobs_total":                 {dto.MetricType_COUNTER, []string{"queue", "state", "type"}},
		"corework_jobqueue_retries_total":              {dto.MetricType_COUNTER, []string{"queue", "type"}},
		"corework_jobqueue_jobs_submitted_total":       {dto.MetricType_COUNTER, []string{"queue"}},
		"corework_jobqueue_jobs_active":                {dto.MetricType_GAUGE, []string{"queue", "state"}},
		"corework_jobqueue_jobs_retained":              {dto.MetricType_GAUGE, []string{"queue"}},
		"corework_jobqueue_depth":                      {dto.MetricType_GAUGE, []string{"priority", "queue"}},
		"corework_jobqueue_workers":                    {dto.MetricType_GAUGE, []string{"queue"}},
		"corework_jobqueue_worker_resizes_total":       {dto.MetricType_COUNTER, []string{"queue"}},
		"corework_jobqueue_workers_busy":               {dto.MetricType_GAUGE, []string{"queue"}},
		"corework_jobqueue_throughput_jobs_per_second": {dto.MetricType_GAUGE, []string{"queue"}},
		"corework_jobqueue_run_duration_seconds":       {dto.MetricType_HISTOGRAM, []string{"queue", "type"}},
		"corework_jobqueue_wait_duration_seconds":      {dto.MetricType_HISTOGRAM, []string{"priority", "queue"}},

		"corework_wsbridge_connections":                 {dto.MetricType_GAUGE, []string{"bridge"}},
		"corework_wsbridge_connections_accepted_total":  {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_connections_rejected_total":  {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_messages_in_total":           {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_messages_out_total":          {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_errors_total":                {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_slow_consumer_closes_total":  {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_protocol_error_closes_total": {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_timeouts_total":              {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_events_dropped_total":        {dto.MetricType_COUNTER, []string{"bridge"}},
		"corework_wsbridge_events_lost_total":           {dto.MetricType_COUNTER, []string{"bridge"}},
	}
	for name, w := range want {
		f := fams[name]
		if f == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if f.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", name, f.GetType(), w.typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s: no help", name)
		}
		for _, m := range f.GetMetric() {
			var got []string
			for n := range labels(m) {
				got = append(got, n)
			}
			slices.Sort(got)
			if !slices.Equal(got, w.labels) {
				t.Errorf("%s: labels %v, want %v", name, got, w.labels)
			}
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "corework_") {
			if _, ok := want[name]; !ok {
				t.Errorf("unexpected metric %s", name)
			}
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("%s missing: Go or process collector not registered", name)
		}
	}

	// Values and label values.
	cores := fams["corework_cpu_core_usage_ratio"].GetMetric()
	cpus := map[string]bool{}
	for _, m := range cores {
		cpus[labels(m)["cpu"]] = true
		if v := value(m); v < 0 || v > 1 {
			t.Errorf("core usage %v", v)
		}
	}
	if len(cpus) == 0 || len(cpus) != len(cores) || !cpus["0"] {
		t.Errorf("cpu label values %v", cpus)
	}
	if n := len(fams["corework_cpu_seconds_total"].GetMetric()); n != 8*len(cores) {
		t.Errorf("%d cpu_seconds series for %d cores, want 8 modes each", n, len(cores))
	}
	proc := fams["corework_process_last_cpu"].GetMetric()
	if len(proc) != 1 || labels(proc[0])["pid"] != strconv.Itoa(os.Getpid()) || !cpus[strconv.Itoa(int(value(proc[0])))] {
		t.Errorf("process last CPU %v", proc)
	}
	for _, m := range fams["corework_pool_tasks_completed_total"].GetMetric() {
		want := map[string]float64{"images": 92, "mail": 0}[labels(m)["pool"]]
		if value(m) != want {
			t.Errorf("completed %v = %v, want %v", labels(m), value(m), want)
		}
	}
	if v := value(fams["corework_pool_queue_wait_max_seconds"].GetMetric()[0]); v != 0.25 && v != 0 {
		t.Errorf("queue wait max %v", v)
	}

	// Per-worker series exist only for what is known: slot 1 has no
	// process, hence no PID and no last CPU.
	for name, want := range map[string]map[string]float64{
		"corework_procpool_worker_pid":         {"0": 4242},
		"corework_procpool_worker_last_cpu":    {"0": 1},
		"corework_procpool_worker_pinned_cpu":  {"0": 1, "1": 0},
		"corework_procpool_worker_tasks_total": {"0": 30, "1": 25},
	} {
		got := map[string]float64{}
		for _, m := range fams[name].GetMetric() {
			got[labels(m)["worker"]] = value(m)
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if v := value(fams["corework_wsbridge_messages_out_total"].GetMetric()[0]); v != 90 {
		t.Errorf("bridge messages out %v, want 90", v)
	}
	if n := len(fams["corework_jobqueue_depth"].GetMetric()); n != jobqueue.NumPriorities {
		t.Errorf("%d depth series, want %d", n, jobqueue.NumPriorities)
	}
	// Two buckets and the +Inf one, which the text format adds.
	for _, m := range fams["corework_jobqueue_run_duration_seconds"].GetMetric() {
		h := m.GetHistogram()
		if h.GetSampleCount() != 4 || h.GetSampleSum() != 0.003 || len(h.GetBucket()) != 3 || h.GetBucket()[0].GetCumulativeCount() != 3 {
			t.Errorf("run duration %v: %v", labels(m), h)
		}
	}
}

func TestCollectorsLint(t *testing.T) {
	s := newSampler(t, monitor.WithMinWindow(0))
	for name, c := range map[string]prometheus.Collector{
		"system":   monitor.NewSystemCollector(s),
		"pool":     monitor.NewPoolCollector("images", poolStats),
		"procpool": monitor.NewProcPoolCollector("thumbs", procPoolStats),
		"jobqueue": monitor.NewJobQueueCollector("media", jobQueueStats),
		"wsbridge": monitor.NewWSBridgeCollector("api", wsBridgeStats),
	} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s: %s", name, p.Metric, p.Text)
		}
	}
}

func TestNewPoolCollectorValues(t *testing.T) {
	const want = `
# HELP corework_pool_queue_wait_max_seconds Longest time a single task waited before it started.
# TYPE corework_pool_queue_wait_max_seconds gauge
corework_pool_queue_wait_max_seconds{pool="images"} 0.25
# HELP corework_pool_queue_wait_seconds_total Summed time tasks waited between submission and start.
# TYPE corework_pool_queue_wait_seconds_total counter
corework_pool_queue_wait_seconds_total{pool="images"} 1.5
# HELP corework_pool_size Configured maximum number of workers.
# TYPE corework_pool_size gauge
corework_pool_size{pool="images"} 8
# HELP corework_pool_tasks_completed_total Tasks finished, panicked ones included.
# TYPE corework_pool_tasks_completed_total counter
corework_pool_tasks_completed_total{pool="images"} 92
# HELP corework_pool_tasks_panicked_total Tasks that panicked.
# TYPE corework_pool_tasks_panicked_total counter
corework_pool_tasks_panicked_total{pool="images"} 2
# HELP corework_pool_tasks_running Tasks running now.
# TYPE corework_pool_tasks_running gauge
corework_pool_tasks_running{pool="images"} 5
# HELP corework_pool_tasks_submitted_total Tasks submitted.
# TYPE corework_pool_tasks_submitted_total counter
corework_pool_tasks_submitted_total{pool="images"} 100
# HELP corework_pool_tasks_waiting Tasks submitted and not yet started.
# TYPE corework_pool_tasks_waiting gauge
corework_pool_tasks_waiting{pool="images"} 3
# HELP corework_pool_workers Worker goroutines alive.
# TYPE corework_pool_workers gauge
corework_pool_workers{pool="images"} 6
`
	if err := testutil.CollectAndCompare(monitor.NewPoolCollector("images", poolStats), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(monitor.NewPoolCollector("images", poolStats))
	if err := reg.Register(monitor.NewPoolCollector("images", poolStats)); err == nil {
		t.Error("a second pool collector with the same name registered")
	}
}

func TestNewPoolCollectorNil(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "monitor: ") {
			t.Errorf("recovered %v, want a monitor: panic", r)
		}
	}()
	monitor.NewPoolCollector("x", nil)
}

package monitor_test

import (
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

	"github.com/corework/corework/monitor"
	"github.com/corework/corework/pool"
)

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
		monitor.PoolCollector("images", poolStats),
		monitor.PoolCollector("mail", func() pool.Stats { return pool.Stats{Size: 2} }),
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
}

func TestCollectorsLint(t *testing.T) {
	s := newSampler(t, monitor.WithMinWindow(0))
	for name, c := range map[string]prometheus.Collector{
		"system": monitor.NewCollector(s),
		"pool":   monitor.PoolCollector("images", poolStats),
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

func TestPoolCollectorValues(t *testing.T) {
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
	if err := testutil.CollectAndCompare(monitor.PoolCollector("images", poolStats), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(monitor.PoolCollector("images", poolStats))
	if err := reg.Register(monitor.PoolCollector("images", poolStats)); err == nil {
		t.Error("a second pool collector with the same name registered")
	}
}

func TestPoolCollectorNil(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "monitor: ") {
			t.Errorf("recovered %v, want a monitor: panic", r)
		}
	}()
	monitor.PoolCollector("x", nil)
}

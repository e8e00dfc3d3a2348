package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/corework/corework/procpool"
)

// mainEnv, set to 1, makes the test binary run main instead of the tests:
// TestHelp runs it so to see the exit status.
const mainEnv = "COREWORK_MONITOR_TEST_MAIN"

func TestMain(m *testing.M) {
	procpool.Main() // the -demo tests start worker processes of this binary
	if os.Getenv(mainEnv) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestSnapshot(t *testing.T) {
	var out, errs strings.Builder
	if err := run(t.Context(), []string{"-interval", "200ms"}, &out, &errs); err != nil {
		t.Fatal(err, errs.String())
	}
	if got := strings.Count(out.String(), "CPU Total:"); got != 1 || strings.Contains(out.String(), "\x1b") {
		t.Errorf("want one plain snapshot, got:\n%q", out.String())
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"-interval", "0s"}, {"monitor", "extra"}, {"-pids", "x"}, {"-nope"}} {
		if err := run(t.Context(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}

// -h and -help print the usage, with the loopback default of -addr, and
// are no error: run returns nil and the command exits 0, while a bad flag
// still exits 1.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"-help"}, {"prometheus", "-h"}, {"monitor", "--help"}} {
		var out, errs strings.Builder
		if err := run(t.Context(), args, &out, &errs); err != nil {
			t.Errorf("run(%q) = %v, want nil", args, err)
		}
		if u := errs.String(); !strings.Contains(u, "usage: monitor") || !strings.Contains(u, `(default "127.0.0.1:8000")`) || out.Len() != 0 {
			t.Errorf("run(%q): stdout %q, stderr %q", args, out.String(), u)
		}
	}
	for args, wantCode := range map[string]int{"-h": 0, "-nope": 1} {
		cmd := exec.CommandContext(t.Context(), os.Args[0], args)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var errs strings.Builder
		cmd.Stderr = &errs
		err := cmd.Run()
		code := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode || !strings.Contains(errs.String(), "usage: monitor") {
			t.Errorf("monitor %s: exit status %d, want %d; stderr %q", args, code, wantCode, errs.String())
		}
		if help := strings.Contains(errs.String(), "help requested"); help {
			t.Errorf("monitor %s: stderr %q", args, errs.String())
		}
	}
}

// The monitor subcommand runs until its context is cancelled (Ctrl-C in
// main) and then returns nil.
func TestMonitorStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(400*time.Millisecond, cancel)
	var out strings.Builder
	start := time.Now()
	if err := run(ctx, []string{"monitor", "-interval", "100ms"}, &out, io.Discard); err != nil {
		t.Fatalf("run = %v, want nil after cancel", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stopped after %v", d)
	}
	if frames := strings.Count(out.String(), "CPU Total:"); frames < 2 {
		t.Errorf("%d frames", frames)
	}
}

// startPrometheus runs the prometheus subcommand with args on a loopback
// port and returns the URL of /metrics and a function that cancels it and
// checks that it returns nil in time.
func startPrometheus(t *testing.T, args ...string) (url string, stop func()) {
	t.Helper()
	url, stop, err := startServing(t, append([]string{"prometheus", "-addr", "127.0.0.1:0", "-interval", "100ms"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return url, stop
}

// startServing runs run(args), which must start serving on a loopback
// address, and returns the URL of /metrics and a function that cancels it
// and checks that it returns nil in time; or run's error if it ended
// before serving.
func startServing(t *testing.T, args ...string) (url string, stop func(), err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		if rerr := <-done; rerr != nil {
			return "", nil, rerr
		}
		return "", nil, fmt.Errorf("run(%q) returned nil without serving: %v", args, err)
	}
	go io.Copy(io.Discard, pr) // drain the rest; ends when pw closes
	stop = func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("prometheus subcommand did not stop")
		}
	}
	url = strings.Fields(line)[1]
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/metrics") {
		stop()
		t.Fatalf("serving line %q", line)
	}
	return url, stop, nil
}

// get returns the body of one scrape of url.
func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle connection left behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status, err)
	}
	return string(body)
}

// The prometheus subcommand serves /metrics until its context is
// cancelled, then shuts down and returns nil.
func TestPrometheusServesAndStops(t *testing.T) {
	url, stop := startPrometheus(t)
	defer stop()
	body := get(t, url)
	for _, name := range []string{"corework_cpu_core_usage_ratio{cpu=\"0\"}", "corework_memory_used_ratio", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(body, name) {
			t.Errorf("%s not served", name)
		}
	}
	if strings.Contains(body, "corework_jobqueue_") || strings.Contains(body, "corework_procpool_") {
		t.Error("job queue or process pool metrics served without -demo")
	}
}

// Without -addr, the prometheus subcommand listens on 127.0.0.1:8000 only,
// and the target of prometheus.yml, localhost:8000, reaches it. (Skipped
// if something else holds port 8000.)
func TestPrometheusDefaultAddr(t *testing.T) {
	cfg, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*- targets: \["([^"]+)"\]$`).FindAllStringSubmatch(string(cfg), -1)
	if len(m) != 1 || m[0][1] != "localhost:8000" {
		t.Fatalf("prometheus.yml targets %q, want one, localhost:8000", m)
	}
	url, stop, err := startServing(t, "prometheus", "-interval", "100ms")
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "listen" {
		t.Skip("cannot listen on the default address (port 8000 in use?):", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if url != "http://127.0.0.1:8000/metrics" {
		t.Errorf("serving %s, want http://127.0.0.1:8000/metrics", url)
	}
	for _, u := range []string{url, "http://" + m[0][1] + "/metrics"} {
		if body := get(t, u); !strings.Contains(body, "corework_cpu_usage_ratio") {
			t.Errorf("%s: no corework_cpu_usage_ratio in %q", u, body)
		}
	}
}

// With -demo, the prometheus subcommand also runs a job queue whose jobs
// run on goroutines and in two worker processes, and a goroutine pool:
// /metrics soon shows jobs of both types succeeded, both workers alive, a
// run-duration histogram, the workers' process rows and pool tasks done;
// cancelling stops it all (goleak checks the goroutines, procpool the
// processes).
func TestPrometheusDemo(t *testing.T) {
	url, stop := startPrometheus(t, "-demo")
	defer stop()
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^corework_jobqueue_jobs_total\{queue="demo",state="succeeded",type="primes"\} [1-9]`),
		regexp.MustCompile(`(?m)^corework_jobqueue_jobs_total\{queue="demo",state="succeeded",type="upload"\} [1-9]`),
		regexp.MustCompile(`(?m)^corework_jobqueue_run_duration_seconds_bucket\{queue="demo",type="primes",le="\+Inf"\} [1-9]`),
		regexp.MustCompile(`(?m)^corework_procpool_workers_alive\{pool="demo"\} 2$`),
		regexp.MustCompile(`(?m)^corework_procpool_worker_tasks_total\{pool="demo",worker="1"\} [1-9]`),
		regexp.MustCompile(`(?m)^corework_pool_tasks_completed_total\{pool="demo"\} [1-9]`),
		regexp.MustCompile(`(?m)^corework_pool_size\{pool="demo"\} 2$`),
		// This process and its two workers, the children.
		regexp.MustCompile(`(?m)(^corework_process_last_cpu\{.*\n){3}`),
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		body := get(t, url)
		var missing []string
		for _, re := range want {
			if !re.MatchString(body) {
				missing = append(missing, re.String())
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s, /metrics lacks %q:\n%s", missing, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dashboard is the part of grafana/dashboard.json the tests read.
type dashboard struct {
	Inputs     json.RawMessage `json:"__inputs"`
	Templating struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
			Datasource *datasource
		}
	}
	Panels []panel
}

type panel struct {
	Title, Type string
	Datasource  *datasource
	Targets     []struct {
		Expr       string
		Datasource *datasource
	}
	Panels []panel // of a collapsed row
}

type datasource struct{ Type, UID string }

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("grafana/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// exprs returns every PromQL expression of the dashboard: the targets of
// every panel and the metric of every label_values query variable.
func exprs(t *testing.T, d dashboard) []string {
	var out []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
		}
		out = append(out, m[1])
	}
	return out
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping label
// lists are removed, minus function calls and keywords.
func metricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		if i := loc[0]; i > 0 && strings.ContainsRune("0123456789._$", rune(e[i-1])) {
			continue // part of a number (1e3), a duration or a variable
		}
		name := e[loc[0]:loc[1]]
		call := strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " \t\n"), "(")
		if call || slices.Contains(promKeywords, name) {
			continue // a function or aggregation call, or a keyword
		}
		names = append(names, name)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`100 * (1 - sum by (instance, cpu) (rate(corework_cpu_seconds_total{mode=~"idle|iowait",instance=~"$instance"}[$__rate_interval])))`: {"corework_cpu_seconds_total"},
		`a / on (pool) group_left b offset 5m > bool 1e3`:           {"a", "b"},
		`max without (cpu) (x:y{l="a b (c)"}) unless count(z)`:      {"x:y", "z"},
		`histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))`: {"h_bucket"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// Every PromQL expression of the dashboard (panel targets and the
// label_values of query variables) uses only names that the prometheus
// subcommand serves on /metrics with -demo, once its workload has run a
// little: so every panel has data.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	d := readDashboard(t)
	list := exprs(t, d)
	if len(list) < 10 {
		t.Fatalf("only %d expressions found", len(list))
	}
	used := map[string]bool{}
	for _, e := range list {
		names := metricNames(e)
		if len(names) == 0 {
			t.Errorf("no metric in %q", e)
		}
		for _, n := range names {
			used[n] = true
		}
	}

	for _, n := range unservedWithDemo(t, used) {
		for _, e := range list {
			if slices.Contains(metricNames(e), n) {
				t.Errorf("%s (in %q) is not served with -demo", n, e)
			}
		}
	}
	// The dashboard charts what the issue asks for.
	for _, n := range []string{"corework_cpu_seconds_total", "corework_cpu_core_usage_ratio", "corework_memory_used_bytes",
		"corework_load1", "corework_process_last_cpu", "corework_pool_tasks_completed_total",
		"corework_jobqueue_jobs_total", "corework_jobqueue_depth", "corework_jobqueue_run_duration_seconds_bucket",
		"corework_procpool_workers_alive", "corework_procpool_restarts_total"} {
		if !used[n] {
			t.Errorf("dashboard does not chart %s", n)
		}
	}
}

// unservedWithDemo runs the prometheus subcommand with -demo and returns,
// sorted, the names of used that its /metrics does not serve within 15 s.
// Some series come later than others: a worker's last CPU once it runs, a
// wait histogram per priority once a job has started at it, retries once
// an upload failed.
func unservedWithDemo(t *testing.T, used map[string]bool) []string {
	t.Helper()
	url, stop := startPrometheus(t, "-demo")
	defer stop()
	var missing []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		served := scrapedNames(get(t, url))
		missing = missing[:0]
		for n := range used {
			if !served[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	slices.Sort(missing)
	return missing
}

// scrapedNames returns the names of the samples of a text exposition
// (histograms give their _bucket, _sum and _count names).
func scrapedNames(body string) map[string]bool {
	names := map[string]bool{}
	for line := range strings.Lines(body) {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// The data source is a template variable: no __inputs, and every panel and
// target points at ${datasource}.
func TestDashboardDatasourceVariable(t *testing.T) {
	d := readDashboard(t)
	if d.Inputs != nil {
		t.Error("dashboard has __inputs")
	}
	var hasVar bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			hasVar = true
		}
		if v.Datasource != nil && v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s uses data source %q", v.Name, v.Datasource.UID)
		}
	}
	if !hasVar {
		t.Fatal("no datasource variable of type prometheus")
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q: data source %+v", p.Title, p.Datasource)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: target data source %+v", p.Title, tg.Datasource)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
}

// -v sends the -demo's queue and process pool records, Debug included, to
// stderr; without -demo it parses and changes nothing.
func TestVerbose(t *testing.T) {
	if err := run(t.Context(), []string{"-v", "-interval", "200ms"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	var errs syncWriter
	if err := run(t.Context(), []string{"-v", "-demo", "-interval", "200ms"}, io.Discard, &errs); err != nil {
		t.Fatal(err, errs.String())
	}
	if s := errs.String(); !strings.Contains(s, `level=DEBUG msg="procpool: worker spawned"`) || !strings.Contains(s, `msg="queue started"`) {
		t.Errorf("-v -demo logged:\n%s", s)
	}
}

// syncWriter is a strings.Builder safe for the demo's goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a queue with the example job types, the API in front of it and
// an httptest server, all stopped by the test's cleanup.
type env struct {
	t   *testing.T
	q   *jobqueue.Queue
	api *server
	hs  *httptest.Server
}

// newEnv starts an API on a queue configured by qcfg. The queue's workers
// start only if start is true, so a test can look at jobs before they run.
func newEnv(t *testing.T, qcfg jobqueue.Config, scfg serverConfig, start bool) *env {
	t.Helper()
	if qcfg.RetryDelay == 0 {
		qcfg.RetryDelay, qcfg.MaxRetryDelay = time.Millisecond, 10*time.Millisecond
	}
	q, err := jobqueue.New(qcfg)
	if err != nil {
		t.Fatal(err)
	}
	registerJobs(q)
	if start {
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
	}
	api := newServer(q, scfg)
	hs := httptest.NewServer(api)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := api.shutdown(ctx); err != nil {
			t.Errorf("api shutdown: %v", err)
		}
		hs.Close()
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("queue shutdown: %v", err)
		}
	})
	return &env{t: t, q: q, api: api, hs: hs}
}

// do sends a request and returns the status, header and body.
func (e *env) do(method, path, contentType, body string) (int, http.Header, []byte) {
	e.t.Helper()
	return do(e.t, e.hs.Client(), method, e.hs.URL+path, contentType, body)
}

func do(t *testing.T, c *http.Client, method, url, contentType, body string) (int, http.Header, []byte) {
	t.Helper()
	return doAs(t, c, "", method, url, contentType, body)
}

// doAs is do with "Authorization: Bearer token", unless token is empty.
func doAs(t *testing.T, c *http.Client, token, method, url, contentType, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, b
}

// submit posts a job and returns its ID, failing the test unless the
// answer is 202 with a matching Location.
func (e *env) submit(body string) string {
	e.t.Helper()
	status, h, b := e.do("POST", "/jobs", "application/json", body)
	if status != http.StatusAccepted {
		e.t.Fatalf("POST /jobs %s: %d %s", body, status, b)
	}
	var cr createResponse
	if err := json.Unmarshal(b, &cr); err != nil || cr.ID == "" {
		e.t.Fatalf("POST /jobs: body %s: %v", b, err)
	}
	if loc := h.Get("Location"); loc != "/jobs/"+cr.ID || cr.URL != loc || cr.Events != loc+"/events" {
		e.t.Fatalf("POST /jobs: Location %q, body %s", loc, b)
	}
	return cr.ID
}

// get polls GET /jobs/{id} once.
func (e *env) get(id string) jobqueue.JobInfo {
	e.t.Helper()
	status, _, b := e.do("GET", "/jobs/"+id, "", "")
	if status != http.StatusOK {
		e.t.Fatalf("GET /jobs/%s: %d %s", id, status, b)
	}
	var info jobqueue.JobInfo
	if err := json.Unmarshal(b, &info); err != nil {
		e.t.Fatalf("GET /jobs/%s: %v in %s", id, err, b)
	}
	return info
}

// pollUntil polls job id until cond holds, for at most 10 seconds.
func (e *env) pollUntil(id string, cond func(jobqueue.JobInfo) bool) jobqueue.JobInfo {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info := e.get(id)
		if cond(info) {
			return info
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s: condition not met; last state %+v", id, info)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isFinal(info jobqueue.JobInfo) bool { return info.State.Final() }

func TestCreateAndPoll(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 2}, serverConfig{}, true)
	id := e.submit(`{"type":"fib-big","payload":{"n":90},"priority":"high","timeout":"30s","max_attempts":1}`)
	info := e.pollUntil(id, isFinal)
	if info.State != jobqueue.StateSucceeded || info.Priority != jobqueue.High || info.MaxAttempts != 1 || info.Timeout != 30*time.Second {
		t.Fatalf("job %+v", info)
	}
	var out fibonacciOut
	if err := json.Unmarshal(info.Result, &out); err != nil {
		t.Fatal(err)
	}
	if out.Value != "2880067194370816120" || out.Digits != 19 || info.Progress != 100 {
		t.Fatalf("F(90) = %+v, progress %v", out, info.Progress)
	}

	// A long value is shortened; its digit count is exact.
	id = e.submit(`{"type":"fib-big","payload":{"n":1000}}`)
	info = e.pollUntil(id, isFinal)
	if err := json.Unmarshal(info.Result, &out); err != nil {
		t.Fatal(err)
	}
	if out.Digits != 209 || !strings.HasPrefix(out.Value, "434665576869") || !strings.HasSuffix(out.Value, "76137795166849228875") || len(out.Value) != fibDigits {
		t.Fatalf("F(1000) = %+v", out)
	}
}

func TestRetries(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 2}, serverConfig{}, true)
	failing := e.submit(`{"type":"fail","payload":{"rate":1},"max_attempts":3}`)
	lucky := e.submit(`{"type":"fail","payload":{"rate":0}}`)
	some := e.submit(`{"type":"fail","max_attempts":30}`) // no payload: rate 0.5
	info := e.pollUntil(failing, isFinal)
	if info.State != jobqueue.StateFailed || info.Attempts != 3 || !strings.Contains(info.LastError, "attempt 3: unlucky attempt") {
		t.Fatalf("always failing job: %+v", info)
	}
	info = e.pollUntil(lucky, isFinal)
	if info.State != jobqueue.StateSucceeded || string(info.Result) != `{"attempt":1}` {
		t.Fatalf("never failing job: %+v", info)
	}
	if info = e.pollUntil(some, isFinal); info.State != jobqueue.StateSucceeded || info.Attempts < 1 {
		t.Fatalf("job failing half its attempts, 30 attempts: %+v", info)
	}
	// A bad payload fails at once, without retries.
	info = e.pollUntil(e.submit(`{"type":"sleep","payload":{"duration":"forever"}}`), isFinal)
	if info.State != jobqueue.StateFailed || info.Attempts != 1 {
		t.Fatalf("bad payload: %+v", info)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data []byte
}

// readEvents reads server-sent events until the stream ends, checking
// that each one is an "event:" line, a "data:" line and a blank line.
func readEvents(t *testing.T, body io.Reader) []sseEvent {
	t.Helper()
	var evs []sseEvent
	sc := bufio.NewScanner(body)
	var cur sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"): // comment
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = []byte(strings.TrimPrefix(line, "data: "))
		case line == "":
			if cur.name == "" || cur.data == nil {
				t.Fatalf("incomplete event %q %q", cur.name, cur.data)
			}
			evs = append(evs, cur)
			cur = sseEvent{}
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	return evs
}

// openEvents starts GET /jobs/{id}/events and returns the response once
// its header has arrived (the subscription is then in place).
func (e *env) openEvents(ctx context.Context, id string) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.hs.URL+"/jobs/"+id+"/events", nil)
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e.t.Fatalf("events: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return resp
}

func kinds(t *testing.T, evs []sseEvent) []string {
	t.Helper()
	var ks []string
	for _, ev := range evs {
		var je jobqueue.Event
		if err := json.Unmarshal(ev.data, &je); err != nil {
			t.Fatalf("event %s: %v in %s", ev.name, err, ev.data)
		}
		if je.Kind.String() != ev.name {
			t.Fatalf("event named %s carries kind %s", ev.name, je.Kind)
		}
		ks = append(ks, ev.name)
	}
	return ks
}

func TestEventStream(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{}, false)
	id := e.submit(`{"type":"fib-big","payload":{"n":50}}`)
	resp := e.openEvents(context.Background(), id)
	defer resp.Body.Close()
	if err := e.q.Start(); err != nil { // the job runs only now
		t.Fatal(err)
	}
	evs := readEvents(t, resp.Body) // ends after the final event
	got := strings.Join(kinds(t, evs), " ")
	want := "queued started" + strings.Repeat(" progress", 10) + " succeeded"
	if got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	var last jobqueue.Event
	json.Unmarshal(evs[len(evs)-1].data, &last)
	if last.JobID != id || last.State != jobqueue.StateSucceeded || !bytes.Contains(last.Result, []byte(`"value":"12586269025"`)) {
		t.Fatalf("final event %s", evs[len(evs)-1].data)
	}
	var prev float64
	for _, ev := range evs[2:12] {
		var p jobqueue.Event
		json.Unmarshal(ev.data, &p)
		if p.Progress <= prev || p.Message == "" {
			t.Fatalf("progress %s after %v", ev.data, prev)
		}
		prev = p.Progress
	}

	// A stream opened after the end replays the job and ends at once.
	evs = readEvents(t, e.openEvents(context.Background(), id).Body)
	if got := strings.Join(kinds(t, evs), " "); got != "queued started succeeded" {
		t.Fatalf("replayed events: %s", got)
	}

	// An unknown job is a JSON 404.
	status, h, b := e.do("GET", "/jobs/nosuchjob/events", "", "")
	if status != http.StatusNotFound || h.Get("Content-Type") != "application/json" || !bytes.Contains(b, []byte(`"code":"not_found"`)) {
		t.Fatalf("unknown job: %d %s", status, b)
	}
}

func TestEventStreamClientGoes(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{Heartbeat: 10 * time.Millisecond}, true)
	id := e.submit(`{"type":"sleep","payload":{"duration":"1m"}}`)
	e.pollUntil(id, func(i jobqueue.JobInfo) bool { return i.State == jobqueue.StateRunning })
	ctx, cancel := context.WithCancel(context.Background())
	resp := e.openEvents(ctx, id)
	br := bufio.NewReader(resp.Body)
	// The replay shows the running job, then heartbeats keep the stream up.
	var lines []string
	for len(lines) < 6 || !strings.HasPrefix(lines[len(lines)-1], ": keep-alive") {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	if lines[0] != "event: queued" || lines[3] != "event: started" {
		t.Fatalf("stream starts with %q", lines)
	}
	cancel() // the client goes; the handler must end, or cleanup would hang
	resp.Body.Close()
	if err := e.q.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

func TestGate(t *testing.T) {
	ev := func(k jobqueue.EventKind, attempt int, pct float64, msg string) jobqueue.Event {
		return jobqueue.Event{Kind: k, Attempt: attempt, Progress: pct, Message: msg}
	}
	snapshot := jobqueue.JobInfo{State: jobqueue.StateRunning, Attempts: 2, Progress: 30, ProgressMessage: "3 of 10"}
	live := []jobqueue.Event{
		ev(jobqueue.EventQueued, 0, 0, ""),
		ev(jobqueue.EventStarted, 1, 0, ""),
		ev(jobqueue.EventRetrying, 1, 0, ""),
		ev(jobqueue.EventStarted, 2, 0, ""),
		ev(jobqueue.EventProgress, 2, 10, "1 of 10"),
		ev(jobqueue.EventProgress, 2, 30, "3 of 10"), // what the snapshot shows
		ev(jobqueue.EventProgress, 2, 30, "3 of 10"), // after it: a repeat report
		ev(jobqueue.EventProgress, 2, 60, "6 of 10"),
		ev(jobqueue.EventSucceeded, 2, 0, ""),
	}
	g := gate{info: snapshot}
	var passed []string
	for _, e := range live {
		if !g.skip(e) {
			passed = append(passed, fmt.Sprintf("%s/%d/%g", e.Kind, e.Attempt, e.Progress))
		}
	}
	if got := strings.Join(passed, " "); got != "progress/2/30 progress/2/60 succeeded/2/0" {
		t.Fatalf("passed %s", got)
	}

	// Before the first progress report, the next report is new.
	g = gate{info: jobqueue.JobInfo{State: jobqueue.StateRunning, Attempts: 1}}
	if g.skip(ev(jobqueue.EventStarted, 1, 0, "")) != true || g.skip(ev(jobqueue.EventProgress, 1, 10, "")) != false {
		t.Fatal("gate before progress")
	}
	// A retrying job's next start is new.
	g = gate{info: jobqueue.JobInfo{State: jobqueue.StateRetrying, Attempts: 1}}
	if !g.skip(ev(jobqueue.EventProgress, 1, 50, "")) || !g.skip(ev(jobqueue.EventRetrying, 1, 0, "")) || g.skip(ev(jobqueue.EventStarted, 2, 0, "")) {
		t.Fatal("gate of a retrying job")
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{}, true)
	running := e.submit(`{"type":"sleep","payload":{"duration":"1m"}}`)
	e.pollUntil(running, func(i jobqueue.JobInfo) bool { return i.State == jobqueue.StateRunning })
	waiting := e.submit(`{"type":"sleep","payload":{"duration":"1m"}}`) // behind it: pending

	for _, id := range []string{waiting, running} {
		status, _, b := e.do("DELETE", "/jobs/"+id, "", "")
		var info jobqueue.JobInfo
		if err := json.Unmarshal(b, &info); err != nil || status != http.StatusOK || info.ID != id || info.State != jobqueue.StateCanceled {
			t.Fatalf("DELETE /jobs/%s: %d %s", id, status, b)
		}
	}
	if info := e.get(running); info.State != jobqueue.StateCanceled || info.Attempts != 1 {
		t.Fatalf("canceled running job: %+v", info)
	}
	status, _, b := e.do("DELETE", "/jobs/"+running, "", "")
	if status != http.StatusConflict || !bytes.Contains(b, []byte(`"code":"finished"`)) {
		t.Fatalf("second DELETE: %d %s", status, b)
	}
	status, _, b = e.do("DELETE", "/jobs/0000000000000nosuchjob", "", "")
	if status != http.StatusNotFound || !bytes.Contains(b, []byte(`"code":"not_found"`)) {
		t.Fatalf("DELETE of an unknown job: %d %s", status, b)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{MaxBody: 1 << 10}, true)
	const js = "application/json"
	big := `{"type":"sleep","payload":"` + strings.Repeat("x", 4<<10) + `"}`
	for _, c := range []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"bad JSON", "POST", "/jobs", js, `{"type":`, 400, "bad_json"},
		{"not JSON", "POST", "/jobs", js, `type=sleep`, 400, "bad_json"},
		{"empty body", "POST", "/jobs", js, ``, 400, "bad_json"},
		{"two objects", "POST", "/jobs", js, `{"type":"sleep"} {}`, 400, "bad_request"},
		{"unknown field", "POST", "/jobs", js, `{"type":"sleep","color":"red"}`, 400, "bad_request"},
		{"priority too high", "POST", "/jobs", js, `{"type":"sleep","priority":12}`, 400, "bad_request"},
		{"priority name", "POST", "/jobs", js, `{"type":"sleep","priority":"urgent"}`, 400, "bad_request"},
		{"bad timeout", "POST", "/jobs", js, `{"type":"sleep","timeout":30}`, 400, "bad_request"},
		{"no type", "POST", "/jobs", js, `{"payload":1}`, 400, "bad_request"},
		{"not an object", "POST", "/jobs", js, `["sleep"]`, 400, "bad_request"},
		{"wrong field type", "POST", "/jobs", js, `{"type":7}`, 400, "bad_request"},
		{"negative attempts", "POST", "/jobs", js, `{"type":"sleep","max_attempts":-1}`, 400, "bad_request"},
		{"oversize body", "POST", "/jobs", js, big, 413, "too_large"},
		{"wrong content type", "POST", "/jobs", "text/plain", `{"type":"sleep"}`, 415, "unsupported_media_type"},
		{"no content type", "POST", "/jobs", "", `{"type":"sleep"}`, 415, "unsupported_media_type"},
		{"unknown type", "POST", "/jobs", js, `{"type":"teleport"}`, 422, "unknown_type"},
		{"unknown job", "GET", "/jobs/0000000000000nosuchjob", "", "", 404, "not_found"},
		{"unknown route", "GET", "/nowhere", "", "", 404, "not_found"},
		{"wrong method", "PUT", "/jobs", js, `{}`, 405, "method_not_allowed"},
		{"bad state filter", "GET", "/jobs?state=sleepy", "", "", 400, "bad_request"},
		{"bad limit", "GET", "/jobs?limit=0", "", "", 400, "bad_request"},
	} {
		status, h, b := e.do(c.method, c.path, c.ctype, c.body)
		var ae apiError
		if err := json.Unmarshal(b, &ae); err != nil || status != c.status || ae.Error.Code != c.code || ae.Error.Message == "" || h.Get("Content-Type") != js {
			t.Errorf("%s: %d %s %s, want %d %s", c.name, status, h.Get("Content-Type"), b, c.status, c.code)
		}
		if status == http.StatusMethodNotAllowed && !strings.Contains(h.Get("Allow"), "POST") {
			t.Errorf("%s: Allow %q", c.name, h.Get("Allow"))
		}
	}
	if st := e.q.Stats(); st.Submitted != 0 {
		t.Fatalf("%d jobs submitted by refused requests", st.Submitted)
	}
}

func TestQueueFull(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1, Capacity: 2}, serverConfig{}, false)
	first := e.submit(`{"type":"fib-big","payload":{"n":1},"unique_key":"k"}`)
	// The same unique key returns the active job instead of a second one.
	if again := e.submit(`{"type":"fib-big","payload":{"n":1},"unique_key":"k"}`); again != first {
		t.Fatalf("unique key: %s then %s", first, again)
	}
	e.submit(`{"type":"sleep","payload":{"duration":"0s"}}`)
	status, h, b := e.do("POST", "/jobs", "application/json", `{"type":"sleep","payload":{"duration":"0s"}}`)
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !bytes.Contains(b, []byte(`"code":"queue_full"`)) {
		t.Fatalf("full queue: %d %v %s", status, h, b)
	}
}

func TestListAndStats(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 2}, serverConfig{}, true)
	ids := []string{
		e.submit(`{"type":"fib-big","payload":{"n":10}}`),
		e.submit(`{"type":"fib-big","payload":{"n":20},"unique_key":"twenty"}`),
		e.submit(`{"type":"sleep","payload":{"duration":"1ms"}}`),
	}
	for _, id := range ids {
		e.pollUntil(id, isFinal)
	}
	list := func(query string) []jobqueue.JobInfo {
		t.Helper()
		status, _, b := e.do("GET", "/jobs"+query, "", "")
		var lr listResponse
		if err := json.Unmarshal(b, &lr); err != nil || status != http.StatusOK {
			t.Fatalf("GET /jobs%s: %d %s", query, status, b)
		}
		return lr.Jobs
	}
	if jobs := list(""); len(jobs) != 3 || jobs[0].ID != ids[2] {
		t.Fatalf("all jobs, newest first: %+v", jobs)
	}
	if jobs := list("?type=fib-big&state=succeeded&limit=1"); len(jobs) != 1 || jobs[0].ID != ids[1] {
		t.Fatalf("filtered: %+v", jobs)
	}
	if jobs := list("?state=failed"); len(jobs) != 0 {
		t.Fatalf("failed jobs: %+v", jobs)
	}
	status, _, b := e.do("GET", "/stats", "", "")
	var st statsResponse
	if err := json.Unmarshal(b, &st); err != nil || status != http.StatusOK || st.Queue.Submitted != 3 || st.Queue.Succeeded != 3 || st.Queue.Workers != 2 {
		t.Fatalf("GET /stats: %d %s", status, b)
	}
	status, _, b = e.do("GET", "/", "", "")
	if status != http.StatusOK || !bytes.Contains(b, []byte("GET /jobs/{id}/events")) {
		t.Fatalf("GET /: %d %s", status, b)
	}
}

func TestWebSocket(t *testing.T) {
	// Without tokens the WebSocket client is access.Local, as every REST
	// request is: each sees the other's jobs.
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wsbridge.Dial(ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+"/ws", wsbridge.WithReconnect(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if c.Principal() != access.Local.Name {
		t.Fatalf("WebSocket principal %q, want %q", c.Principal(), access.Local.Name)
	}
	defer c.Close()
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "fib-big", Payload: []byte(`{"n":30}`)})
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.Wait(ctx, id)
	if err != nil || done.State != jobqueue.StateSucceeded || !bytes.Contains(done.Result, []byte(`"value":"832040"`)) {
		t.Fatalf("over the WebSocket: %+v %v", done, err)
	}
	// The job submitted over the WebSocket is the REST API's job too.
	if info := e.get(id); info.State != jobqueue.StateSucceeded || !bytes.Equal(info.Result, done.Result) {
		t.Fatalf("GET /jobs/%s: %+v", id, info)
	}
	// And a job submitted over REST can be waited for over the WebSocket.
	id = e.submit(`{"type":"fib-big","payload":{"n":40}}`)
	if done, err = c.Wait(ctx, id); err != nil || !bytes.Contains(done.Result, []byte(`"value":"102334155"`)) {
		t.Fatalf("REST job over the WebSocket: %+v %v", done, err)
	}
	// A plain GET of /ws is not an upgrade.
	if status, _, _ := e.do("GET", "/ws", "", ""); status != http.StatusUpgradeRequired {
		t.Fatalf("GET /ws without upgrade: %d", status)
	}
}

// startRun runs the program's run function on a free port and returns its
// base URL, a function that interrupts it (as Ctrl-C does) and returns
// run's error, and its log.
func startRun(t *testing.T, cfg config) (string, func() error, *syncBuffer) {
	t.Helper()
	ctx, interrupt := context.WithCancel(context.Background())
	cfg.addr = "127.0.0.1:0"
	urls := make(chan string, 1)
	cfg.ready = func(u string) { urls <- u }
	log := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, log, cfg) }()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		interrupt()
		t.Fatalf("run: %v\n%s", err, log)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not start listening")
	}
	stop := func() error {
		interrupt()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("run did not return after the interrupt\n%s", log)
			return nil
		}
	}
	return url, stop, log
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun is the smoke test: the whole program on a real port, a job
// through it, then an interrupt while an event stream is open.
func TestRun(t *testing.T) {
	url, stop, log := startRun(t, config{workers: 2, grace: 200 * time.Millisecond})
	c := &http.Client{}
	defer c.CloseIdleConnections()
	status, h, b := do(t, c, "POST", url+"/jobs", "application/json", `{"type":"fib-big","payload":{"n":20}}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", status, b)
	}
	jobURL := url + h.Get("Location")
	var info jobqueue.JobInfo
	for deadline := time.Now().Add(10 * time.Second); !info.State.Final(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("job not done: %+v", info)
		}
		_, _, b = do(t, c, "GET", jobURL, "", "")
		json.Unmarshal(b, &info)
	}
	if info.State != jobqueue.StateSucceeded || !bytes.Contains(info.Result, []byte(`"value":"6765"`)) {
		t.Fatalf("job %s", b)
	}

	// An open event stream of a running job ends with an error event when
	// the server shuts down, and the shutdown does not wait for it.
	_, h, _ = do(t, c, "POST", url+"/jobs", "application/json", `{"type":"sleep","payload":{"duration":"1m"}}`)
	resp, err := c.Get(url + h.Get("Location") + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "event: queued\n" {
		t.Fatalf("stream starts with %q", line)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "event: error\ndata: {\"error\":{\"code\":\"closed\"") {
		t.Fatalf("stream ended with %q", rest)
	}
	// The sleep job outlived the grace period: it was interrupted.
	if !strings.Contains(log.String(), "shutting down") || !strings.Contains(log.String(), "jobs still running after 200ms were canceled") ||
		!strings.Contains(log.String(), "stopped; 1 succeeded") {
		t.Fatalf("log:\n%s", log)
	}
}

// TestRunJetStream runs the program on the durable JetStream store twice
// on the same directory: a job finished in the first run is still there
// in the second, and one still queued when the first run stopped is run
// by the second.
func TestRunJetStream(t *testing.T) {
	dir := t.TempDir()
	c := &http.Client{}
	defer c.CloseIdleConnections()
	post := func(url, body string) string {
		t.Helper()
		status, h, b := do(t, c, "POST", url+"/jobs", "application/json", body)
		if status != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", body, status, b)
		}
		return h.Get("Location")
	}
	poll := func(url string, cond func(jobqueue.JobInfo) bool) jobqueue.JobInfo {
		t.Helper()
		var info jobqueue.JobInfo
		for deadline := time.Now().Add(10 * time.Second); !cond(info); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %+v", url, info)
			}
			_, _, b := do(t, c, "GET", url, "", "")
			json.Unmarshal(b, &info)
		}
		return info
	}

	url, stop, log := startRun(t, config{workers: 1, store: dir, grace: 100 * time.Millisecond})
	done := post(url, `{"type":"fib-big","payload":{"n":20}}`)
	if info := poll(url+done, isFinal); info.State != jobqueue.StateSucceeded {
		t.Fatalf("job %+v", info)
	}
	long := post(url, `{"type":"sleep","payload":{"duration":"1m"}}`)
	poll(url+long, func(i jobqueue.JobInfo) bool { return i.State == jobqueue.StateRunning })
	queued := post(url, `{"type":"fib-big","payload":{"n":25}}`) // behind the sleep
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	c.CloseIdleConnections()

	url, stop, log = startRun(t, config{workers: 1, store: dir, grace: 100 * time.Millisecond})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("second run: %v\n%s", err, log)
		}
	}()
	if info := poll(url+done, isFinal); info.State != jobqueue.StateSucceeded || !bytes.Contains(info.Result, []byte(`"value":"6765"`)) {
		t.Fatalf("finished job after a restart: %+v", info)
	}
	// The queued job (priority low, like the interrupted sleep) runs in
	// the second run: cancel the sleep if it got the worker first.
	status, _, _ := do(t, c, "DELETE", url+long, "", "")
	if status != http.StatusOK && status != http.StatusConflict {
		t.Fatalf("DELETE %s: %d", long, status)
	}
	if info := poll(url+queued, isFinal); info.State != jobqueue.StateSucceeded || !bytes.Contains(info.Result, []byte(`"value":"75025"`)) {
		t.Fatalf("queued job after a restart: %+v", info)
	}
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := cli([]string{"-nosuchflag"}, &stderr); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
	if code := cli([]string{"extra"}, &stderr); code != 2 {
		t.Fatalf("extra argument: exit %d", code)
	}
	if code := cli([]string{"-addr", "127.0.0.1:notaport"}, &stderr); code != 1 || !strings.Contains(stderr.String(), "apiserver:") {
		t.Fatalf("bad address: exit %d\n%s", code, stderr.String())
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-max-active", "0"}, 2, "apiserver: -max-active 0: must be positive"},
		{[]string{"-max-payload-bytes", "-5"}, 2, "apiserver: -max-payload-bytes -5: must be positive"},
		{[]string{"-max-streams", "0"}, 2, "apiserver: -max-streams 0: must be positive"},
		{[]string{"-max-streams-total", "0"}, 2, "apiserver: -max-streams-total 0: must be positive"},
		{[]string{"-write-timeout", "0s"}, 2, "apiserver: -write-timeout 0s: must be positive"},
		{[]string{"-max-body", "0"}, 2, "apiserver: -max-body 0: must be positive"},
		{[]string{"-workers", "-1"}, 2, "apiserver: -workers: must not be negative"},
		{[]string{"-max-active", "many"}, 2, `invalid value "many" for flag -max-active`},
		{[]string{"-tokens", "/nonexistent/tokens"}, 1, "apiserver: -tokens: open /nonexistent/tokens"},
	} {
		stderr.Reset()
		if code := cli(c.args, &stderr); code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%q: exit %d, want %d with %q\n%s", c.args, code, c.code, c.want, stderr.String())
		}
	}
}

// TestVerbose checks -h (exit 0) and -v: the queue's and the bridge's
// records, Debug included, go to stderr.
func TestVerbose(t *testing.T) {
	var help bytes.Buffer
	if code := cli([]string{"-h"}, &help); code != 0 || !strings.Contains(help.String(), "-v\tdebug log") {
		t.Fatalf("-h: exit %d\n%s", code, help.String())
	}
	var stderr bytes.Buffer
	if code := cli([]string{"-v", "-addr", "127.0.0.1:notaport"}, &stderr); code != 1 || !strings.Contains(stderr.String(), `level=INFO msg="queue stopped"`) {
		t.Fatalf("-v with a bad address: exit %d\n%s", code, stderr.String())
	}

	// A command the bridge refuses is a Debug record.
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	urls := make(chan string, 1)
	done := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() {
		done <- run(sctx, &logs, config{addr: "127.0.0.1:0", logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			ready: func(url string) { urls <- url }})
	}()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	c, err := wsbridge.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws", wsbridge.WithReconnect(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, jobqueue.JobRequest{Type: "no-such-type"}); err == nil {
		t.Error("a job of an unknown type was accepted")
	}
	c.Close()
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Errorf("-v logged no Debug record:\n%s", logs.String())
	}
}

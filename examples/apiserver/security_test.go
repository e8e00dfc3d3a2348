package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
)

// The tokens of the tests: two clients and an operator.
const (
	aliceToken = "alice-0123456789abcdef"
	bobToken   = "bob-0123456789abcdefgh"
	opsToken   = "ops-0123456789abcdefgh"
)

var testTokens = map[string]wsbridge.Principal{
	aliceToken: {Name: "alice"},
	bobToken:   {Name: "bob"},
	opsToken:   {Name: "ops", Operator: true},
}

// tokenFile writes testTokens as a token file and returns its path.
func tokenFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	text := fmt.Sprintf("# test tokens\n%s alice\n%s bob\n%s ops operator\n", aliceToken, bobToken, opsToken)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// doAs sends a request with token's bearer header.
func (e *env) doAs(token, method, path, contentType, body string) (int, http.Header, []byte) {
	e.t.Helper()
	return doAs(e.t, e.hs.Client(), token, method, e.hs.URL+path, contentType, body)
}

// submitAs posts a job as token's principal and returns its ID.
func (e *env) submitAs(token, body string) string {
	e.t.Helper()
	status, _, b := e.doAs(token, "POST", "/jobs", "application/json", body)
	var cr createResponse
	if err := json.Unmarshal(b, &cr); err != nil || status != http.StatusAccepted || cr.ID == "" {
		e.t.Fatalf("POST /jobs %s: %d %s", body, status, b)
	}
	return cr.ID
}

// listAs gets one page of GET /jobs as token's principal.
func (e *env) listAs(token, query string) listResponse {
	e.t.Helper()
	status, _, b := e.doAs(token, "GET", "/jobs"+query, "", "")
	var lr listResponse
	if err := json.Unmarshal(b, &lr); err != nil || status != http.StatusOK {
		e.t.Fatalf("GET /jobs%s: %d %s", query, status, b)
	}
	return lr
}

// errorCode returns the code of a JSON error body, or "".
func errorCode(b []byte) string {
	var ae apiError
	json.Unmarshal(b, &ae)
	return ae.Error.Code
}

func TestListenRefusal(t *testing.T) {
	// 192.0.2.1 (TEST-NET-1) is a non-loopback address no machine here
	// has: a run that passes the check fails to listen on it, so that no
	// test server listens beyond 127.0.0.1.
	const exposed = "192.0.2.1:8080"
	err := run(context.Background(), io.Discard, config{addr: exposed})
	if !errors.Is(err, access.ErrExposed) || !strings.Contains(err.Error(), "-tokens FILE") || !strings.Contains(err.Error(), "-insecure") {
		t.Fatalf("exposed without tokens: %v", err)
	}
	for _, c := range []struct {
		name string
		cfg  config
	}{
		{"-insecure", config{addr: exposed, insecure: true}},
		{"-tokens", config{addr: exposed, tokens: tokenFile(t)}},
	} {
		err := run(context.Background(), io.Discard, c.cfg)
		var opErr *net.OpError
		if errors.Is(err, access.ErrExposed) || !errors.As(err, &opErr) || opErr.Op != "listen" {
			t.Errorf("%s: got %v, want a failure to listen on %s, past the check", c.name, err, exposed)
		}
	}
	// The command line says why, and what to do.
	var stderr bytes.Buffer
	if code := cli([]string{"-addr", ":8080"}, &stderr); code != 1 || !strings.Contains(stderr.String(), "refusing to listen beyond loopback without tokens") {
		t.Fatalf("cli -addr :8080: exit %d\n%s", code, stderr.String())
	}
	// On loopback, no tokens are needed: TestRun runs so.
}

func TestUnauthorized(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{Tokens: testTokens}, true)
	for _, c := range []struct{ token, method, path string }{
		{"", "GET", "/jobs"},
		{"", "POST", "/jobs"},
		{"", "GET", "/stats"},
		{"", "GET", "/"},
		{"", "GET", "/nowhere"}, // no route probing without a token
		{"not-a-token-of-the-table", "GET", "/jobs"},
		{"", "GET", "/jobs/0000000000000nosuchjob/events"},
	} {
		status, h, b := e.doAs(c.token, c.method, c.path, "application/json", `{"type":"sleep"}`)
		if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || errorCode(b) != "unauthorized" {
			t.Errorf("%s %s with token %q: %d %v %s", c.method, c.path, c.token, status, h, b)
		}
	}
	if st := e.q.Stats(); st.Submitted != 0 {
		t.Fatalf("%d jobs submitted without a token", st.Submitted)
	}
	if status, _, b := e.doAs(aliceToken, "GET", "/jobs", "", ""); status != http.StatusOK {
		t.Fatalf("with a token: %d %s", status, b)
	}

	// The WebSocket bridge takes the same tokens.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(e.hs.URL, "http") + "/ws"
	if c, err := wsbridge.Dial(ctx, wsURL, wsbridge.WithReconnect(0, 0)); err == nil {
		c.Close()
		t.Fatal("WebSocket without a token admitted")
	} else if !strings.Contains(err.Error(), "401") {
		t.Fatalf("WebSocket without a token: %v, want a 401", err)
	}
	c, err := wsbridge.Dial(ctx, wsURL, wsbridge.WithReconnect(0, 0), wsbridge.WithToken(aliceToken))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Principal() != "alice" {
		t.Fatalf("WebSocket principal %q", c.Principal())
	}
	// A job alice submits over the WebSocket is alice's over REST.
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "fib-big", Payload: []byte(`{"n":10}`)})
	if err != nil {
		t.Fatal(err)
	}
	if status, _, b := e.doAs(aliceToken, "GET", "/jobs/"+id, "", ""); status != http.StatusOK || !bytes.Contains(b, []byte(`"owner":"alice"`)) {
		t.Fatalf("alice's WebSocket job over REST: %d %s", status, b)
	}
	if status, _, _ := e.doAs(bobToken, "GET", "/jobs/"+id, "", ""); status != http.StatusNotFound {
		t.Fatalf("alice's WebSocket job for bob: %d", status)
	}
}

func TestOwnership(t *testing.T) {
	// Workers are not started: the jobs stay pending, so that a stream of
	// one stays open and a cancel has something to cancel.
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{Tokens: testTokens}, false)
	job := e.submitAs(aliceToken, `{"type":"sleep","payload":{"duration":"1m"}}`)
	bobs := e.submitAs(bobToken, `{"type":"sleep","payload":{"duration":"1m"}}`)

	// bob gets 404 for alice's job, exactly as for an unknown one.
	_, _, unknown := e.doAs(bobToken, "GET", "/jobs/0000000000000nosuchjob", "", "")
	for _, c := range []struct{ method, path string }{
		{"GET", "/jobs/" + job},
		{"DELETE", "/jobs/" + job},
		{"GET", "/jobs/" + job + "/events"},
	} {
		status, _, b := e.doAs(bobToken, c.method, c.path, "", "")
		if status != http.StatusNotFound || !bytes.Equal(b, unknown) {
			t.Errorf("bob %s %s: %d %s, want 404 %s", c.method, c.path, status, b, unknown)
		}
	}
	if status, _, b := e.doAs(aliceToken, "GET", "/jobs/"+job, "", ""); status != http.StatusOK || !bytes.Contains(b, []byte(`"state":"pending"`)) {
		t.Fatalf("alice's job after bob's DELETE: %d %s", status, b)
	}
	for _, query := range []string{"", "?owner=alice", "?type=sleep&state=pending"} {
		if lr := e.listAs(bobToken, query); len(lr.Jobs) != 1 || lr.Jobs[0].ID != bobs {
			t.Errorf("bob lists %s: %+v", query, lr.Jobs)
		}
	}
	if lr := e.listAs(aliceToken, ""); len(lr.Jobs) != 1 || lr.Jobs[0].ID != job || lr.Jobs[0].Owner != "alice" {
		t.Errorf("alice lists: %+v", lr.Jobs)
	}

	// The operator sees both, lists by owner, follows and cancels.
	if lr := e.listAs(opsToken, ""); len(lr.Jobs) != 2 {
		t.Errorf("ops lists: %+v", lr.Jobs)
	}
	if lr := e.listAs(opsToken, "?owner=alice"); len(lr.Jobs) != 1 || lr.Jobs[0].ID != job {
		t.Errorf("ops lists alice's: %+v", lr.Jobs)
	}
	if status, _, b := e.doAs(opsToken, "GET", "/jobs/"+job, "", ""); status != http.StatusOK || !bytes.Contains(b, []byte(`"owner":"alice"`)) {
		t.Errorf("ops GET: %d %s", status, b)
	}
	req, _ := http.NewRequest("GET", e.hs.URL+"/jobs/"+job+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+opsToken)
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || line != "event: queued\n" {
		t.Errorf("ops events: %d %q", resp.StatusCode, line)
	}
	status, _, b := e.doAs(opsToken, "DELETE", "/jobs/"+job, "", "")
	if status != http.StatusOK || !bytes.Contains(b, []byte(`"state":"canceled"`)) {
		t.Errorf("ops DELETE: %d %s", status, b)
	}
	// alice, the owner, sees it canceled.
	if status, _, b := e.doAs(aliceToken, "GET", "/jobs/"+job, "", ""); status != http.StatusOK || !bytes.Contains(b, []byte(`"state":"canceled"`)) {
		t.Errorf("alice GET: %d %s", status, b)
	}
}

func TestQuota(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{Tokens: testTokens, MaxActive: 2, MaxPayloadBytes: 1000}, false)
	const small = `{"type":"sleep","payload":{"duration":"1m"}}`
	e.submitAs(aliceToken, small)
	e.submitAs(aliceToken, small)
	status, h, b := e.doAs(aliceToken, "POST", "/jobs", "application/json", small)
	if status != http.StatusTooManyRequests || h.Get("Retry-After") != quotaRetryAfter || errorCode(b) != "quota_exceeded" || !bytes.Contains(b, []byte("active")) {
		t.Fatalf("third active job: %d %v %s", status, h, b)
	}
	// Quotas are per principal: bob is not affected by alice's jobs.
	// Payload bytes: 600 + 600 > 1000.
	pad := `{"type":"sleep","payload":{"duration":"1m","pad":"` + strings.Repeat("x", 580) + `"}}`
	e.submitAs(bobToken, pad)
	status, h, b = e.doAs(bobToken, "POST", "/jobs", "application/json", pad)
	if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" || errorCode(b) != "quota_exceeded" || !bytes.Contains(b, []byte("bytes")) {
		t.Fatalf("bob's payload bytes over quota: %d %v %s", status, h, b)
	}
	e.submitAs(bobToken, small)
	// Operators have no job quota, as in the bridge.
	for range 3 {
		e.submitAs(opsToken, pad)
	}
	// The WebSocket bridge counts the same jobs against the same quota.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wsbridge.Dial(ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+"/ws", wsbridge.WithReconnect(0, 0), wsbridge.WithToken(aliceToken))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Submit(ctx, jobqueue.JobRequest{Type: "sleep", Payload: []byte(`{"duration":"1m"}`)}); err == nil || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("alice's third job over the WebSocket: %v", err)
	}
	if st := e.q.Stats(); st.Submitted != 7 {
		t.Fatalf("%d jobs submitted, want 7", st.Submitted)
	}
}

// walk pages through GET /jobs with query and limit, as token's
// principal, and returns the IDs in order and the pages' sizes in bytes.
func (e *env) walk(token, query string, limit int) (ids []string, pages []int) {
	e.t.Helper()
	cursor := ""
	for {
		q := fmt.Sprintf("?limit=%d%s", limit, query)
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		status, _, b := e.doAs(token, "GET", "/jobs"+q, "", "")
		var lr listResponse
		if err := json.Unmarshal(b, &lr); err != nil || status != http.StatusOK {
			e.t.Fatalf("GET /jobs%s: %d %s", q, status, b)
		}
		pages = append(pages, len(b))
		if len(lr.Jobs) == 0 && lr.NextCursor != "" {
			e.t.Fatalf("GET /jobs%s: an empty page with a next cursor", q)
		}
		for _, j := range lr.Jobs {
			if j.Payload != nil || j.Result != nil || j.Metadata != nil {
				e.t.Fatalf("GET /jobs%s: not a summary: %+v", q, j)
			}
			ids = append(ids, j.ID)
		}
		if lr.NextCursor == "" {
			return ids, pages
		}
		if lr.NextCursor != lr.Jobs[len(lr.Jobs)-1].ID {
			e.t.Fatalf("GET /jobs%s: next_cursor %s is not the last job's ID", q, lr.NextCursor)
		}
		cursor = lr.NextCursor
		if len(pages) > 1000 {
			e.t.Fatal("endless pages")
		}
	}
}

// submitMany submits n sleep jobs of owner with a payload of pad bytes
// straight to the queue, and returns their IDs, newest first.
func (e *env) submitMany(owner string, n, pad int) []string {
	e.t.Helper()
	payload := fmt.Sprintf(`{"duration":"1m","pad":"%s"}`, strings.Repeat("x", pad))
	ids := make([]string, n)
	for i := range n {
		id, err := e.q.Submit(context.Background(), jobqueue.JobRequest{Type: "sleep", Owner: owner, Payload: []byte(payload)})
		if err != nil {
			e.t.Fatal(err)
		}
		ids[n-1-i] = id
	}
	return ids
}

// checkOnce fails unless got is want, in order: every job exactly once.
func checkOnce(t *testing.T, what string, got, want []string) {
	t.Helper()
	seen := make(map[string]bool)
	for _, id := range got {
		if seen[id] {
			t.Fatalf("%s: job %s listed twice", what, id)
		}
		seen[id] = true
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%s: listed %d jobs, want %d newest first:\n got %v\nwant %v", what, len(got), len(want), got, want)
	}
}

func TestListPagination(t *testing.T) {
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{Tokens: testTokens}, false)
	want := e.submitMany("alice", 250, 100) // more than two chunks of listChunk
	e.submitMany("bob", 5, 10)
	for _, limit := range []int{1, 7, 50, 125, 250, 1000} {
		ids, pages := e.walk(aliceToken, "", limit)
		checkOnce(t, fmt.Sprintf("limit %d", limit), ids, want)
		if wantPages := (250 + limit - 1) / limit; len(pages) != wantPages {
			t.Errorf("limit %d: %d pages, want %d", limit, len(pages), wantPages)
		}
	}
	// The operator walks everyone's jobs, and the filters hold across pages.
	if ids, _ := e.walk(opsToken, "", 33); len(ids) != 255 {
		t.Fatalf("ops walked %d jobs, want 255", len(ids))
	}
	if ids, _ := e.walk(opsToken, "&owner=alice&type=sleep&state=pending", 60); len(ids) != 250 {
		t.Fatalf("ops walked %d of alice's jobs, want 250", len(ids))
	}
	// A cursor that cannot be a job ID is refused.
	if status, _, b := e.doAs(aliceToken, "GET", "/jobs?cursor=a%20b", "", ""); status != http.StatusBadRequest {
		t.Fatalf("bad cursor: %d %s", status, b)
	}
}

func TestListByteBound(t *testing.T) {
	const budget = 8 << 10
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{Tokens: testTokens, ListBytes: budget}, false)
	// Summaries leave out the 60 KB payloads: without the bound a page
	// of 1000 would hold the 300 jobs, about 200 bytes each, 60 KB.
	want := e.submitMany("alice", 300, 60_000)
	ids, pages := e.walk(aliceToken, "", 1000)
	checkOnce(t, "pages of 8 KiB", ids, want)
	sum := 0
	for _, n := range pages {
		sum += n
	}
	if sum < 4*budget || len(pages) > sum/(budget*3/4)+1 {
		t.Fatalf("%d pages, %d bytes in all: %v", len(pages), sum, pages)
	}
	for i, n := range pages {
		if n > budget {
			t.Errorf("page %d: %d bytes, over the %d budget", i, n, budget)
		}
		if i < len(pages)-1 && n < budget*3/4 {
			t.Errorf("page %d: %d bytes, ended well before the budget", i, n)
		}
	}
	t.Logf("300 jobs in %d pages of at most %d bytes: %v", len(pages), budget, pages)
}

func TestStreamCaps(t *testing.T) {
	const perPrincipal, total = 3, 5
	e := newEnv(t, jobqueue.Config{Workers: 1}, serverConfig{Tokens: testTokens, MaxStreams: perPrincipal, MaxStreamsTotal: total, Heartbeat: time.Second}, false)
	jobs := map[string]string{ // token: a pending job of its principal
		aliceToken: e.submitAs(aliceToken, `{"type":"sleep","payload":{"duration":"1m"}}`),
		bobToken:   e.submitAs(bobToken, `{"type":"sleep","payload":{"duration":"1m"}}`),
		opsToken:   e.submitAs(opsToken, `{"type":"sleep","payload":{"duration":"1m"}}`),
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var mu sync.Mutex
	var open []*http.Response // streams admitted, held to the end
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	// stream opens an event stream and keeps it if admitted; it returns
	// the status, and the Retry-After and error code of a refusal.
	stream := func(token string) (int, string, string) {
		req, _ := http.NewRequest("GET", e.hs.URL+"/jobs/"+jobs[token]+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return 0, "", ""
		}
		if resp.StatusCode == http.StatusOK {
			mu.Lock()
			open = append(open, resp)
			mu.Unlock()
			return resp.StatusCode, "", ""
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After"), errorCode(b)
	}
	refused := func(what string, status int, retry, code string) {
		t.Helper()
		if status != http.StatusServiceUnavailable || retry != streamRetryAfter || code != "too_many_streams" {
			t.Fatalf("%s: %d Retry-After %q code %q, want 503 too_many_streams", what, status, retry, code)
		}
	}

	runtime.GC()
	base := runtime.NumGoroutine()
	for i := range perPrincipal {
		if status, _, _ := stream(aliceToken); status != http.StatusOK {
			t.Fatalf("alice's stream %d: %d", i+1, status)
		}
	}
	status, retry, code := stream(aliceToken)
	refused("alice's stream over her cap", status, retry, code)
	for i := range total - perPrincipal {
		if status, _, _ := stream(bobToken); status != http.StatusOK {
			t.Fatalf("bob's stream %d: %d", i+1, status)
		}
	}
	status, retry, code = stream(opsToken) // the operator too: the total cap
	refused("a stream over the total cap", status, retry, code)

	// The attack: many more streams than the caps, 16 at a time. Without
	// caps each would hold two goroutines of the server (its connection
	// and its background read) and two of the client's transport: 200
	// streams, 800 goroutines.
	var admitted, refusals atomic.Int32
	var peak atomic.Int64
	var wg sync.WaitGroup
	tokens := []string{aliceToken, bobToken, opsToken}
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 / 16 {
				status, retry, code := stream(tokens[(w+i)%3])
				switch {
				case status == http.StatusOK:
					admitted.Add(1)
				case status == http.StatusServiceUnavailable && retry != "" && code == "too_many_streams":
					refusals.Add(1)
				default:
					t.Errorf("stream: %d %q %q", status, retry, code)
				}
				if n := int64(runtime.NumGoroutine()); n > peak.Load() {
					peak.Store(n)
				}
			}
		}()
	}
	wg.Wait()
	// The bound: 5 streams of 4 goroutines, 16 attackers each with a
	// connection of 4, and connections closing meanwhile; well under the
	// 800 of 200 streams.
	const bound = 5*4 + 16*(1+4) + 100
	if admitted.Load() != 0 || refusals.Load() != 16*(200/16) || peak.Load()-int64(base) > bound {
		t.Fatalf("%d admitted, %d refused; goroutines %d -> peak %d, bound %d over", admitted.Load(), refusals.Load(), base, peak.Load(), bound)
	}
	t.Logf("%d streams refused; goroutines %d at the start, at most %d during (%d over, bound %d)", refusals.Load(), base, peak.Load(), peak.Load()-int64(base), bound)
	var st statsResponse
	_, _, b := e.doAs(opsToken, "GET", "/stats", "", "")
	if err := json.Unmarshal(b, &st); err != nil || st.Streams.Open != total || st.Streams.Refused != int64(2+refusals.Load()) {
		t.Fatalf("stats: %s", b)
	}

	// A closed stream frees its place.
	mu.Lock()
	open[0].Body.Close() // one of alice's
	open = open[1:]
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _, _ := stream(aliceToken)
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's stream after closing one: %d", status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestListAttackHeap replays attack 1 of the issue, scaled down: 120 jobs
// with 60 KB of padding each, then 40 clients that list ?limit=1000 and
// read slowly (16 bytes every 50 ms) or not at all.
//
// The server before this change answered each list with every job in full,
// payloads included, built in memory (7 MB a response) and held while the
// client crawled; measured with this same attack (120 jobs, 40 readers),
// its HeapInuse went from 11 MiB to 210 MiB in 3 s (from 12 to 115 MiB
// under -race, still climbing), far over the bound below. Now a page
// holds summaries, is written a chunk of 100 at a time, and stops at 1 MiB.
func TestListAttackHeap(t *testing.T) {
	const (
		jobs      = 120
		readers   = 40
		heapBound = 32 << 20 // over the heap after the submissions
	)
	url, stop, log := startRun(t, config{workers: 1, grace: 100 * time.Millisecond, tokens: tokenFile(t)})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v\n%s", err, log)
		}
	}()
	addr := strings.TrimPrefix(url, "http://")
	c := &http.Client{Timeout: time.Second}
	defer c.CloseIdleConnections()
	pad := strings.Repeat("x", 60_000)
	for i := range jobs {
		status, _, b := doAs(t, c, aliceToken, "POST", url+"/jobs", "application/json", `{"type":"sleep","payload":{"duration":"1h","pad":"`+pad+`"}}`)
		if status != http.StatusAccepted {
			t.Fatalf("job %d: %d %s", i, status, b)
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	done := make(chan struct{})
	var peak atomic.Uint64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	var answered atomic.Int32
	for i := range readers {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.(*net.TCPConn).SetReadBuffer(4 << 10)
		fmt.Fprintf(conn, "GET /jobs?limit=1000 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", addr, aliceToken)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 16)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(conn, buf[:12]); err != nil || string(buf[:12]) != "HTTP/1.1 200" {
				t.Errorf("reader %d: %q %v", i, buf[:12], err)
				return
			}
			answered.Add(1)
			if i%2 == 1 {
				return // never reads again
			}
			for {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := conn.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	// The server still answers during the attack.
	var slowest time.Duration
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		start := time.Now()
		status, _, b := doAs(t, c, aliceToken, "GET", url+"/stats", "", "")
		if el := time.Since(start); status != http.StatusOK || el > time.Second {
			t.Fatalf("GET /stats during the attack: %d in %v: %s", status, el, b)
		} else {
			slowest = max(slowest, el)
		}
	}
	close(done)
	wg.Wait()
	<-sampled
	if answered.Load() != readers {
		t.Fatalf("%d of %d readers got an answer", answered.Load(), readers)
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("HeapInuse %.1f MiB after %d jobs, peak %.1f MiB during the attack (+%.1f MiB, bound +%d MiB); slowest /stats %v",
		float64(base)/(1<<20), jobs, float64(peak.Load())/(1<<20), float64(grew)/(1<<20), heapBound>>20, slowest)
	if grew > heapBound {
		t.Fatalf("the heap grew by %d MiB during the attack, over %d MiB", grew>>20, heapBound>>20)
	}
	// What the readers were sent: a page of summaries.
	status, _, b := doAs(t, c, aliceToken, "GET", url+"/jobs?limit=1000", "", "")
	if status != http.StatusOK || bytes.Contains(b, []byte(pad[:100])) || len(b) > 64<<10 {
		t.Fatalf("list: %d, %d bytes", status, len(b))
	}
}

// TestStreamOutlivesTimeouts runs the program with read and write timeouts
// of 300 ms: an ordinary request is bound by them, an event stream is not,
// and keeps its heartbeat well past them.
func TestStreamOutlivesTimeouts(t *testing.T) {
	url, stop, log := startRun(t, config{workers: 1, grace: 100 * time.Millisecond,
		readTimeout: 300 * time.Millisecond, writeTimeout: 300 * time.Millisecond, heartbeat: 50 * time.Millisecond})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v\n%s", err, log)
		}
	}()
	c := &http.Client{}
	defer c.CloseIdleConnections()
	_, h, _ := do(t, c, "POST", url+"/jobs", "application/json", `{"type":"sleep","payload":{"duration":"1m"}}`)
	resp, err := c.Get(url + h.Get("Location") + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	start := time.Now()
	beats := 0
	for time.Since(start) < time.Second {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended after %v: %v", time.Since(start), err)
		}
		if strings.HasPrefix(line, ": keep-alive") {
			beats++
		}
	}
	if beats < 5 {
		t.Fatalf("%d heartbeats in a second", beats)
	}

	// A request that takes longer than the read timeout to send is cut off.
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start = time.Now()
	reply, _ := io.ReadAll(conn)
	if el := time.Since(start); el > 3*time.Second || bytes.Contains(reply, []byte("202 Accepted")) {
		t.Fatalf("a body that never comes: %q after %v", reply, el)
	}
}

func TestServerTimeouts(t *testing.T) {
	hs := httpServer(config{}, http.NotFoundHandler())
	if hs.ReadHeaderTimeout != defaultReadHeaderTimeout || hs.ReadTimeout != defaultReadTimeout ||
		hs.WriteTimeout != defaultWriteTimeout || hs.IdleTimeout != defaultIdleTimeout {
		t.Fatalf("http.Server timeouts: header %v, read %v, write %v, idle %v",
			hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout)
	}
	if hs = httpServer(config{writeTimeout: time.Minute}, http.NotFoundHandler()); hs.WriteTimeout != time.Minute {
		t.Fatalf("-write-timeout 1m: %v", hs.WriteTimeout)
	}
}

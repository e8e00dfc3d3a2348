package wsbridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

func dialClient(t testing.TB, url string, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientSubmitWait(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	c := dialClient(t, e.url)
	ctx := testCtx(t)
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: json.RawMessage(`{"n":25}`), Priority: jobqueue.High, Timeout: time.Minute, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != jobqueue.StateSucceeded || got.ID != id || got.Type != "fibonacci" || got.Priority != jobqueue.High ||
		got.Attempts != 1 || got.FinishedAt.IsZero() || string(got.Result) != `{"n":25,"result":75025}` {
		t.Fatalf("Wait = %+v", got)
	}
	// Wait again: the Client remembers.
	if again, err := c.Wait(ctx, id); err != nil || again.ID != id || again.State != jobqueue.StateSucceeded {
		t.Fatalf("second Wait = %+v, %v", again, err)
	}
	info, err := c.Get(ctx, id)
	if err != nil || info.State != jobqueue.StateSucceeded || info.Job.Timeout != time.Minute || info.MaxAttempts != 1 {
		t.Fatalf("Status = %+v, %v", info, err)
	}
	jobs, err := c.List(ctx, jobqueue.ListFilter{Type: "fibonacci", State: jobqueue.StateSucceeded})
	if err != nil || len(jobs) != 1 || jobs[0].ID != id {
		t.Fatalf("List = %+v, %v", jobs, err)
	}
	st, err := c.Stats(ctx)
	if err != nil || st.Bridge.Connections != 1 || st.Queue.Succeeded != 1 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
	if rtt, err := c.Ping(ctx); err != nil || rtt <= 0 {
		t.Fatalf("Ping = %v, %v", rtt, err)
	}
	var kinds []string
	for len(kinds) == 0 || kinds[len(kinds)-1] != "succeeded" {
		select {
		case ev := <-c.Events():
			kinds = append(kinds, ev.Kind.String())
		case <-ctx.Done():
			t.Fatalf("events so far: %v", kinds)
		}
	}
}

func TestClientErrors(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{Workers: 1})
	c := dialClient(t, e.url)
	ctx := testCtx(t)
	if _, err := c.Submit(ctx, jobqueue.JobRequest{Type: "nobody"}); !errors.Is(err, jobqueue.ErrNoHandler) {
		t.Errorf("Submit of an unknown type: %v", err)
	}
	if _, err := c.Submit(ctx, jobqueue.JobRequest{Type: "noop", Timeout: -1}); !errors.Is(err, ErrProtocol) {
		t.Errorf("Submit with a negative timeout: %v", err)
	}
	if _, err := c.Get(ctx, "nope"); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Errorf("Status of an unknown job: %v", err)
	}
	if _, err := c.Wait(ctx, "nope"); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Errorf("Wait of an unknown job: %v", err)
	}
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "fail"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Wait(ctx, id)
	var je *jobqueue.JobError
	if !errors.Is(err, jobqueue.ErrFailed) || !errors.As(err, &je) || je.Message != "it failed" || je.ID != id {
		t.Errorf("Wait of a failing job: %v", err)
	}
	if info.ID != id || info.State != jobqueue.StateFailed || info.LastError != "it failed" {
		t.Errorf("Wait of a failing job: info %+v", info)
	}
	if err := c.Cancel(ctx, id); !errors.Is(err, jobqueue.ErrFinished) {
		t.Errorf("Cancel of a finished job: %v", err)
	}
	id, err = c.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if info, err := c.Wait(ctx, id); !errors.Is(err, jobqueue.ErrCanceled) || info.State != jobqueue.StateCanceled || info.ID != id {
		t.Errorf("Wait of a canceled job: %+v, %v", info, err)
	}
	var se *ServerError
	_, err = c.Get(ctx, "nope")
	if !errors.As(err, &se) || se.Code != CodeNotFound || !strings.HasPrefix(err.Error(), "wsbridge: ") {
		t.Errorf("ServerError: %#v", err)
	}
}

func TestClientWaitsForJobsItDidNotSubmit(t *testing.T) {
	// An operator may wait for any job. (wsbridge server change: other
	// principals find their own jobs only.)
	e := newEnv(t, Config{Authenticate: TokenAuth(map[string]Principal{"op": {Name: "op", Operator: true}})}, jobqueue.Config{})
	c := dialClient(t, e.url, WithToken("op"))
	ctx := testCtx(t)
	done, err := e.q.Submit(ctx, jobqueue.JobRequest{Type: "noop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Wait(ctx, done); err != nil {
		t.Fatal(err)
	}
	if info, err := c.Wait(ctx, done); err != nil || info.State != jobqueue.StateSucceeded || info.ID != done {
		t.Fatalf("Wait of a finished job = %+v, %v", info, err)
	}
	running, err := e.q.Submit(ctx, jobqueue.JobRequest{Type: "sleep", Payload: json.RawMessage(`{"Ms":50}`)})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := c.Wait(ctx, running); err != nil || string(info.Result) != `"slept"` {
		t.Fatalf("Wait of a running job = %+v, %v", info, err)
	}
}

func TestClientSubscribeAll(t *testing.T) {
	// An operator sees every job. (wsbridge server change: other principals
	// see their own jobs only.)
	e := newEnv(t, Config{Authenticate: TokenAuth(map[string]Principal{"op": {Name: "op", Operator: true}})}, jobqueue.Config{})
	c := dialClient(t, e.url, WithEventBuffer(64), WithToken("op"))
	ctx := testCtx(t)
	if err := c.Subscribe(ctx, ""); err != nil {
		t.Fatal(err)
	}
	id, err := e.q.Submit(ctx, jobqueue.JobRequest{Type: "noop"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-c.Events():
			if ev.JobID == id && ev.Kind == jobqueue.EventSucceeded {
				if err := c.Unsubscribe(ctx, ""); err != nil {
					t.Fatal(err)
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("no event for a job submitted by someone else")
		}
	}
}

// TestClientReconnect cuts the connection while a job runs: the job ends
// while the Client is away, and Wait still returns its result after the
// Client reconnects and subscribes again.
func TestClientReconnect(t *testing.T) {
	// An anonymous Client comes back as the same principal: it presents
	// the resume credential of its welcome message.
	e := newEnv(t, Config{}, jobqueue.Config{})
	p := newProxy(t, strings.TrimPrefix(e.hs.URL, "http://"))
	c := dialClient(t, p.url(), WithReconnect(10*time.Millisecond, 50*time.Millisecond))
	ctx := testCtx(t)
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "sleep", Payload: json.RawMessage(`{"Ms":100}`)})
	if err != nil {
		t.Fatal(err)
	}
	p.cut()
	if _, err := e.q.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	info, err := c.Wait(ctx, id)
	if err != nil || string(info.Result) != `"slept"` {
		t.Fatalf("Wait across a reconnection = %+v, %v", info, err)
	}
	// The Client works on its new connection.
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.s.Stats().Accepted; n != 2 {
		t.Errorf("%d connections accepted, want 2", n)
	}
}

func TestClientReconnectOff(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	p := newProxy(t, strings.TrimPrefix(e.hs.URL, "http://"))
	c := dialClient(t, p.url(), WithReconnect(0, 0))
	ctx := testCtx(t)
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		p.cut()
	}()
	if _, err := c.Wait(ctx, id); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("Wait after the connection dropped: %v", err)
	}
	if _, err := c.Ping(ctx); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("Ping after the connection dropped: %v", err)
	}
}

func TestClientServerGoesAway(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	c := dialClient(t, e.url, WithReconnect(0, 0))
	ctx := testCtx(t)
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = c.Wait(ctx, id)
	var ce *CloseError
	if !errors.Is(err, ErrConnectionLost) || !errors.As(err, &ce) || ce.Code != ws.StatusGoingAway {
		t.Fatalf("Wait after Shutdown: %v", err)
	}
}

func TestClientToken(t *testing.T) {
	e := newEnv(t, Config{Authenticate: TokenAuth(map[string]Principal{"t0k": {Name: "user"}})}, jobqueue.Config{})
	ctx := testCtx(t)
	if _, err := Dial(ctx, e.url); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Dial without the token: %v", err)
	}
	c := dialClient(t, e.url, WithToken("t0k"))
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Principal() != "user" || c.ResumeCredential() != "" {
		t.Fatalf("principal %q, resume credential %q", c.Principal(), c.ResumeCredential())
	}
	c2 := dialClient(t, e.url, WithHeader(http.Header{"Authorization": {"Bearer t0k"}}))
	if _, err := c2.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClientClose(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	c := dialClient(t, e.url)
	ctx := testCtx(t)
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	if err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() {
		_, err := c.Wait(ctx, id)
		waitErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait during Close: %v", err)
	}
	if _, err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}
	for range c.Events() {
	}
	waitFor(t, "the server to see the close", func() bool { return e.s.Stats().Connections == 0 })
}

// TestRouterFallsBehind gives the server a one-event subscription, so that
// it falls behind the queue and must renew it: every Wait still returns,
// from the snapshots the server sends after renewing, and a client watching
// every job is told to resynchronize.
func TestRouterFallsBehind(t *testing.T) {
	e := newEnv(t, Config{EventBuffer: 1, SendQueueBytes: 64 << 20}, jobqueue.Config{})
	watcher := dialRaw(t, e.url, nil)
	watcher.sendText(`{"command":"subscribe"}`)
	watcher.until("ack")
	c := dialClient(t, e.url)
	ctx := testCtx(t)
	for round := 0; e.s.Stats().EventsLost == 0; round++ {
		if round == 20 {
			t.Fatal("the router never fell behind a one-event subscription")
		}
		ids := make([]string, 200)
		for i := range ids {
			id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "noop"})
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		for _, id := range ids {
			if _, err := c.Wait(ctx, id); err != nil {
				t.Fatalf("Wait(%s): %v", id, err)
			}
		}
	}
	if m := watcher.until("error"); m["code"] != CodeEventsLost {
		t.Fatalf("watcher got %v", m)
	}
}

func TestClientUnsubscribeAllKeepsOwnJobs(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	c := dialClient(t, e.url)
	ctx := testCtx(t)
	if err := c.Subscribe(ctx, ""); err != nil {
		t.Fatal(err)
	}
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "sleep", Payload: json.RawMessage(`{"Ms":100}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Unsubscribe(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if info, err := c.Wait(ctx, id); err != nil || string(info.Result) != `"slept"` {
		t.Fatalf("Wait after unsubscribing from every job: %+v, %v", info, err)
	}
}

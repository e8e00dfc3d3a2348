package wsbridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestClientWindow: a Client has at most its window of commands in flight,
// by default the server's max_in_flight from the welcome message, or
// WithMaxInFlight's, or 32 when the server has none; 200 concurrent calls
// all succeed.
func TestClientWindow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		welcome string
		opts    []Option
		want    int64
	}{
		{"server", `{"type":"welcome","principal":"p","quota":{"max_in_flight":8}}`, nil, 8},
		{"option", `{"type":"welcome","principal":"p","quota":{"max_in_flight":8}}`, []Option{WithMaxInFlight(3)}, 3},
		{"default", `{"type":"welcome","principal":"p","quota":{}}`, nil, defaultWindow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t, tc.welcome, func(cmd *fakeCmd) {
				time.Sleep(time.Millisecond)
				cmd.reply(`{"type":"pong"}`)
			})
			c := dialClient(t, s.url(), tc.opts...)
			if p := c.Principal(); p != "p" {
				t.Fatalf("Principal = %q", p)
			}
			ctx := longCtx(t)
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range 200 {
				wg.Go(func() {
					if _, err := c.Ping(ctx); err != nil {
						failed.Add(1)
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if high := s.high.Load(); high > tc.want || high < 2 || failed.Load() != 0 {
				t.Fatalf("high-water mark %d in flight, window %d; %d calls failed", high, tc.want, failed.Load())
			}
		})
	}
}

// TestClientWindowFIFO: calls wait for the window in the order they came;
// one whose ctx ends leaves the line with ctx.Err(), and Close ends the
// wait of the others with ErrClosed.
func TestClientWindowFIFO(t *testing.T) {
	held := make(chan *fakeCmd, 16)
	s := newFakeServer(t, `{"type":"welcome","principal":"p","quota":{"max_in_flight":1}}`, func(cmd *fakeCmd) { held <- cmd })
	c := dialClient(t, s.url())
	ctx := longCtx(t)

	first := make(chan error, 1)
	go func() { _, err := c.Ping(ctx); first <- err }()
	head := <-held // the window is full
	results := make(chan string, 8)
	for i := 1; i <= 5; i++ {
		if i == 3 {
			// A caller that gives up while in line.
			short, cancel := context.WithCancel(ctx)
			gaveUp := make(chan error, 1)
			go func() { _, err := c.Get(short, "gives-up"); gaveUp <- err }()
			waitLong(t, "the caller to queue", func() bool { return c.waiting.Load() == 3 })
			cancel()
			if err := <-gaveUp; !errors.Is(err, context.Canceled) {
				t.Fatalf("Get canceled in line: %v", err)
			}
		}
		id := fmt.Sprintf("job-%d", i)
		go func() {
			_, err := c.Get(ctx, id)
			results <- fmt.Sprintf("%s %v", id, errors.Is(err, jobqueue.ErrNotFound))
		}()
		waitLong(t, "the caller to queue", func() bool { return c.waiting.Load() == int64(i) })
	}
	head.reply(`{"type":"pong"}`)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		cmd := <-held
		if want := fmt.Sprintf("job-%d", i); cmd.JobID != want {
			t.Fatalf("command %d is for %q, want %q", i, cmd.JobID, want)
		}
		cmd.reply(`{"type":"error","code":"not_found","message":"no"}`)
		if got, want := <-results, fmt.Sprintf("job-%d true", i); got != want {
			t.Fatalf("result %q, want %q", got, want)
		}
	}
	// job-5 is in flight, unanswered; another call waits; Close ends both.
	<-held
	waiting := make(chan error, 1)
	go func() { _, err := c.Ping(ctx); waiting <- err }()
	waitLong(t, "the caller to queue", func() bool { return c.waiting.Load() == 1 })
	c.Close()
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping waiting at Close: %v", err)
	}
	if got := <-results; got != "job-5 false" {
		t.Fatalf("Get in flight at Close: %s", got)
	}
}

// TestClientManySubmits is finding 4 of the trust-boundary issue: 2000
// goroutines submit on one Client at once. Every Submit succeeds, on one
// connection (no 4008, no reconnection), and the queue holds exactly the
// jobs whose IDs were returned. The Client's window is the server's
// MaxInFlight, so the server never refuses or closes it. (It may pause
// reading the connection while the client catches up with its replies,
// which is backpressure, not a failure: on a loaded machine it did, once
// in a run of the all-module tests.)
func TestClientManySubmits(t *testing.T) {
	// The 2000 jobs may all be active at once; the job quotas are
	// TestQuota's subject, not this test's.
	e := newEnv(t, Config{Quota: Quota{MaxActive: 4000}}, jobqueue.Config{})
	c := dialClient(t, e.url)
	ctx := longCtx(t)
	const n = 2000
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = c.Submit(ctx, jobqueue.JobRequest{Type: "noop", Payload: []byte(`{"n":1}`)})
		})
	}
	wg.Wait()
	checkSubmitted(t, e.q, c.Principal(), ids, errs)
	st := e.s.Stats()
	if st.SlowConsumers != 0 || st.Accepted != 1 || st.QuotaRefused != 0 || st.ProtocolErrors != 0 {
		t.Fatalf("server stats %+v: want no slow consumer, one connection, no refusal", st)
	}
	if st.Paused != 0 {
		t.Logf("the server paused reading %d times while the client caught up", st.Paused)
	}
}

// checkSubmitted checks that every Submit succeeded with a distinct ID and
// that the queue holds exactly those jobs for owner.
func checkSubmitted(t *testing.T, q *jobqueue.Queue, owner string, ids []string, errs []error) {
	t.Helper()
	seen := make(map[string]bool, len(ids))
	for i, id := range ids {
		if errs[i] != nil || id == "" {
			t.Fatalf("Submit %d = %q, %v", i, id, errs[i])
		}
		if seen[id] {
			t.Fatalf("ID %s returned twice", id)
		}
		seen[id] = true
	}
	held := ownedIDs(t, q, owner)
	for id := range held {
		if !seen[id] {
			t.Errorf("job %s is in the queue but no Submit returned it", id)
		}
	}
	for id := range seen {
		if !held[id] {
			t.Errorf("Submit returned %s, which the queue does not hold", id)
		}
	}
	if len(held) != len(ids) {
		t.Fatalf("the queue holds %d jobs of %s, %d Submits returned", len(held), owner, len(ids))
	}
}

// TestClientSubmitSurvivesDrop is the second half of finding 4: many
// Submits are in flight when the connection drops after the server queued
// some of them and before their acks reach the client. Every Submit
// returns nil and an ID once the Client has reconnected (as the same
// anonymous principal, through its resume credential), and the queue
// holds exactly the returned jobs: no orphan, no duplicate.
func TestClientSubmitSurvivesDrop(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	p := newHoldProxy(t, strings.TrimPrefix(e.hs.URL, "http://"))
	c := dialClient(t, p.url(), WithReconnect(10*time.Millisecond, 50*time.Millisecond))
	ctx := longCtx(t)
	principal := c.Principal()
	if !strings.HasPrefix(principal, AnonymousPrefix) || c.ResumeCredential() == "" {
		t.Fatalf("principal %q, credential %q", principal, c.ResumeCredential())
	}
	const n = 500
	ids := make([]string, n)
	errs := make([]error, n)
	var returned atomic.Int64
	p.hold() // the server's acks stop here
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = c.Submit(ctx, jobqueue.JobRequest{Type: "noop"})
			returned.Add(1)
		})
	}
	waitLong(t, "the server to queue jobs", func() bool { return len(ownedIDs(t, e.q, principal)) >= 50 })
	if r := returned.Load(); r != 0 {
		t.Fatalf("%d Submits returned while their acks were held back", r)
	}
	queued := len(ownedIDs(t, e.q, principal))
	p.cut()
	wg.Wait()
	checkSubmitted(t, e.q, principal, ids, errs)
	if c.Principal() != principal {
		t.Fatalf("reconnected as %q, was %q", c.Principal(), principal)
	}
	if st := e.s.Stats(); st.Accepted < 2 {
		t.Fatalf("%d connections: no reconnection", st.Accepted)
	}
	t.Logf("%d jobs were queued when their acks were lost", queued)
}

// TestClientCommandsSurviveDrop: commands in flight when the connection
// drops (their replies lost) are sent again on the next connection: Get,
// List, Ping and Stats return as if nothing happened, and a Cancel that
// canceled the job before the drop returns nil, not ErrFinished.
func TestClientCommandsSurviveDrop(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	p := newHoldProxy(t, strings.TrimPrefix(e.hs.URL, "http://"))
	c := dialClient(t, p.url(), WithReconnect(10*time.Millisecond, 50*time.Millisecond))
	ctx := longCtx(t)
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	if err != nil {
		t.Fatal(err)
	}
	in := e.s.Stats().MessagesIn
	p.hold()
	errs := make(chan error, 5)
	go func() {
		errs <- c.Cancel(ctx, id)
	}()
	waitLong(t, "the job to be canceled", func() bool {
		info, err := e.q.Get(ctx, id)
		return err == nil && info.State == jobqueue.StateCanceled
	})
	go func() {
		info, err := c.Get(ctx, id)
		if err == nil && info.ID != id {
			err = fmt.Errorf("Get returned %+v", info)
		}
		errs <- err
	}()
	go func() {
		jobs, err := c.List(ctx, jobqueue.ListFilter{})
		if err == nil && (len(jobs) != 1 || jobs[0].ID != id) {
			err = fmt.Errorf("List returned %+v", jobs)
		}
		errs <- err
	}()
	go func() { _, err := c.Ping(ctx); errs <- err }()
	go func() { _, err := c.Stats(ctx); errs <- err }()
	waitLong(t, "the server to read the commands", func() bool { return e.s.Stats().MessagesIn >= in+5 })
	p.cut()
	for range 5 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if info, err := c.Wait(ctx, id); !errors.Is(err, jobqueue.ErrCanceled) {
		t.Fatalf("Wait = %+v, %v", info, err)
	}
}

// TestClientSubmitWithoutReconnect: with reconnecting off, a Submit whose
// ack was lost fails with ErrConnectionLost and returns the ID it sent,
// which names the job the server queued.
func TestClientSubmitWithoutReconnect(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	p := newHoldProxy(t, strings.TrimPrefix(e.hs.URL, "http://"))
	c := dialClient(t, p.url(), WithReconnect(0, 0))
	ctx := longCtx(t)
	p.hold()
	type result struct {
		id  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "noop"})
		done <- result{id, err}
	}()
	waitLong(t, "the server to queue the job", func() bool { return len(ownedIDs(t, e.q, c.Principal())) == 1 })
	p.cut()
	r := <-done
	if !errors.Is(r.err, ErrConnectionLost) || !ownedIDs(t, e.q, c.Principal())[r.id] {
		t.Fatalf("Submit = %q, %v; the queue holds %v", r.id, r.err, ownedIDs(t, e.q, c.Principal()))
	}
}

// TestClientPrincipals: an anonymous Client is a principal of its own; it
// keeps it, and its jobs, across a reconnection and, with WithResume,
// across Clients; another principal finds none of its jobs, and a bad
// credential gets a fresh principal.
func TestClientPrincipals(t *testing.T) {
	e := newEnv(t, Config{}, jobqueue.Config{})
	p := newProxy(t, strings.TrimPrefix(e.hs.URL, "http://"))
	c1 := dialClient(t, p.url(), WithReconnect(10*time.Millisecond, 50*time.Millisecond))
	ctx := longCtx(t)
	alice, cred := c1.Principal(), c1.ResumeCredential()
	if !strings.HasPrefix(alice, AnonymousPrefix) || !strings.HasPrefix(cred, alice+".") {
		t.Fatalf("principal %q, credential %q", alice, cred)
	}
	id, err := c1.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := e.q.Get(ctx, id); err != nil || info.Owner != alice {
		t.Fatalf("queue has %+v, %v; want owner %s", info, err, alice)
	}

	bob := dialClient(t, e.url)
	if bob.Principal() == alice || !strings.HasPrefix(bob.Principal(), AnonymousPrefix) {
		t.Fatalf("second client is %q, first %q", bob.Principal(), alice)
	}
	if _, err := bob.Get(ctx, id); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Errorf("Get of another's job: %v", err)
	}
	if err := bob.Cancel(ctx, id); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Errorf("Cancel of another's job: %v", err)
	}
	if _, err := bob.Wait(ctx, id); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Errorf("Wait of another's job: %v", err)
	}
	if jobs, err := bob.List(ctx, jobqueue.ListFilter{Limit: -1}); err != nil || len(jobs) != 0 {
		t.Errorf("List of another's jobs: %+v, %v", jobs, err)
	}
	if _, err := bob.Submit(ctx, jobqueue.JobRequest{ID: id, Type: "noop"}); !errors.Is(err, jobqueue.ErrInvalidJob) {
		t.Errorf("Submit with another's job ID: %v", err)
	}

	p.cut() // c1 reconnects as alice
	if info, err := c1.Get(ctx, id); err != nil || info.State != jobqueue.StateRunning {
		t.Fatalf("Get after the reconnection: %+v, %v", info, err)
	}
	if c1.Principal() != alice || e.s.Stats().Accepted != 3 {
		t.Fatalf("after the reconnection: principal %q, %d connections", c1.Principal(), e.s.Stats().Accepted)
	}
	c1.Close()

	// A later Client, as in a restarted program.
	c2 := dialClient(t, e.url, WithResume(cred))
	if c2.Principal() != alice {
		t.Fatalf("WithResume: principal %q, want %q", c2.Principal(), alice)
	}
	if err := c2.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Wait(ctx, id); !errors.Is(err, jobqueue.ErrCanceled) {
		t.Fatalf("Wait with the resumed principal: %v", err)
	}

	c3 := dialClient(t, e.url, WithResume(alice+".AAAAAAAAAAAAAAAAAAAAAA"))
	if c3.Principal() == alice || c3.ResumeCredential() == cred {
		t.Fatalf("a forged credential gave principal %q", c3.Principal())
	}
	if _, err := c3.Get(ctx, id); !errors.Is(err, jobqueue.ErrNotFound) {
		t.Errorf("Get with a forged credential: %v", err)
	}
}

// TestClientListPages: List pages by cursor, newest first (the Client's
// job IDs sort by time), fills a page from as many of the server's short
// pages as it takes, and returns summaries.
func TestClientListPages(t *testing.T) {
	e := newEnv(t, Config{ListBytes: 2 << 10}, jobqueue.Config{})
	c := dialClient(t, e.url)
	ctx := longCtx(t)
	var ids []string
	for i := range 25 {
		id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "noop", Payload: []byte(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		if _, err := c.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	all, err := c.List(ctx, jobqueue.ListFilter{Limit: -1})
	if err != nil || len(all) != len(ids) {
		t.Fatalf("List of every job: %d jobs, %v", len(all), err)
	}
	for i, j := range all {
		if want := ids[len(ids)-1-i]; j.ID != want || j.Payload != nil || j.Owner != c.Principal() {
			t.Fatalf("job %d: %+v, want ID %s, no payload, owner %s", i, j, want, c.Principal())
		}
	}
	cursor := ""
	for page, want := range [][]jobqueue.JobInfo{all[:10], all[10:20], all[20:], nil} {
		got, err := c.List(ctx, jobqueue.ListFilter{Limit: 10, Cursor: cursor, State: jobqueue.StateSucceeded})
		if err != nil || len(got) != len(want) {
			t.Fatalf("page %d: %d jobs, %v; want %d", page, len(got), err, len(want))
		}
		for i := range got {
			if got[i].ID != want[i].ID {
				t.Fatalf("page %d, job %d: %s, want %s", page, i, got[i].ID, want[i].ID)
			}
		}
		if len(got) > 0 {
			cursor = got[len(got)-1].ID
		}
	}
	if jobs, err := c.List(ctx, jobqueue.ListFilter{}); err != nil || len(jobs) != 25 {
		t.Fatalf("List with the default limit: %d jobs, %v", len(jobs), err)
	}
	if jobs, err := c.List(ctx, jobqueue.ListFilter{State: jobqueue.StateFailed}); err != nil || len(jobs) != 0 {
		t.Fatalf("List of failed jobs: %+v, %v", jobs, err)
	}
}

// TestClientJobIDs: the IDs Submit chooses are valid job IDs, distinct,
// and sort by time with the queue's own.
func TestClientJobIDs(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	before := q.NewID()
	time.Sleep(3 * time.Millisecond)
	seen := make(map[string]bool)
	prev := ""
	for range 1000 {
		id := newJobID()
		if len(id) != 36 || strings.Trim(id, "0123456789abcdefghjkmnpqrstvwxyz") != "" || seen[id] || id <= prev {
			t.Fatalf("ID %q after %q", id, prev)
		}
		seen[id] = true
		prev = id
	}
	time.Sleep(3 * time.Millisecond)
	after := q.NewID()
	if !(before < prev && prev < after) {
		t.Fatalf("IDs out of order: queue %s, client %s, queue %s", before, prev, after)
	}
}

// TestClientQuota: a principal over its quota gets a *ServerError matching
// jobqueue.ErrQuotaExceeded, and keeps its connection.
func TestClientQuota(t *testing.T) {
	e := newEnv(t, Config{Quota: Quota{MaxActive: 2}}, jobqueue.Config{})
	c := dialClient(t, e.url)
	ctx := longCtx(t)
	for range 2 {
		if _, err := c.Submit(ctx, jobqueue.JobRequest{Type: "block"}); err != nil {
			t.Fatal(err)
		}
	}
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "block"})
	var se *ServerError
	if !errors.Is(err, jobqueue.ErrQuotaExceeded) || !errors.As(err, &se) || se.Code != CodeQuota || id != "" {
		t.Fatalf("Submit over the quota = %q, %v", id, err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.s.Stats().Accepted; n != 1 {
		t.Fatalf("%d connections", n)
	}
}

// TestClientDialNeedsWelcome: a server whose first message is not a
// welcome is refused, and a Dial whose ctx ends while waiting for it
// returns the ctx's error.
func TestClientDialNeedsWelcome(t *testing.T) {
	s := newFakeServer(t, `{"type":"pong"}`, func(*fakeCmd) {})
	ctx := longCtx(t)
	if _, err := Dial(ctx, s.url()); err == nil || !strings.Contains(err.Error(), "welcome") {
		t.Fatalf("Dial: %v", err)
	}
	silent := newFakeServer(t, ``, func(*fakeCmd) {})
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := Dial(short, silent.url()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial of a silent server: %v", err)
	}
}

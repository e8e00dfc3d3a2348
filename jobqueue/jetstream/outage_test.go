package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
	"github.com/nats-io/nats.go"
	njs "github.com/nats-io/nats.go/jetstream"
)

// restartable is a server on a fixed store directory and loopback port that
// a test can stop abruptly (Shutdown: clients are cut off, nothing is
// drained) and start again.
type restartable struct {
	t    *testing.T
	dir  string
	addr string
	mu   sync.Mutex
	srv  *jetstream.Server
}

func newRestartable(t *testing.T) *restartable {
	r := &restartable{t: t, dir: t.TempDir(), addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	s, err := jetstream.NewServer(r.dir, jetstream.WithListen(r.addr))
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.srv = s
	r.mu.Unlock()
}

func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.Shutdown()
		r.srv = nil
	}
}

func (r *restartable) url() string { return "nats://" + r.addr }

// TestWaitSurvivesOutage is issue 14, finding 3: the submitting process
// waits for a job that a worker process (a second Backend, connected by
// URL) runs for 3 s; the server stops abruptly 1 s into the job and starts
// again on the same store 4 s later, so the job's final event is published
// (or lost) during the outage. Wait must return the succeeded job within
// AckWait + 5 s of the restart, not at its deadline.
func TestWaitSurvivesOutage(t *testing.T) {
	const ackWait = 2 * time.Second
	srv := newRestartable(t)
	name := uniqueName()
	opts := []jetstream.Option{jetstream.WithName(name), jetstream.WithAckWait(ackWait),
		jetstream.WithPollInterval(100 * time.Millisecond)}

	started := make(chan struct{}, 4)
	slowWorkers(t, srv.url(), opts, 1, func() {
		started <- struct{}{}
		time.Sleep(3 * time.Second)
	})

	sb, err := jetstream.Connect(srv.url(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	submitter := newQueue(t, sb, jobqueue.Config{NoWorkers: true})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	id, err := submitter.Submit(ctx, jobqueue.JobRequest{Type: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		info jobqueue.JobInfo
		err  error
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		info, err := submitter.Wait(ctx, id)
		done <- result{info, err, time.Now()}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the job never started")
	}
	time.Sleep(time.Second)
	srv.stop()
	time.Sleep(4 * time.Second)
	srv.start()
	restarted := time.Now()

	select {
	case r := <-done:
		if r.err != nil || r.info.State != jobqueue.StateSucceeded {
			t.Fatalf("Wait = %v, %s; want succeeded", r.err, r.info.State)
		}
		t.Logf("Wait returned %v after the restart; attempts %d", r.at.Sub(restarted).Round(time.Millisecond), r.info.Attempts)
	case <-time.After(ackWait + 5*time.Second):
		info, err := sb.Get(ctx, id)
		t.Fatalf("Wait still blocked %v after the restart; Get says %s (attempts %d), %v",
			ackWait+5*time.Second, info.State, info.Attempts, err)
	}
}

// TestSubmitAcrossRestart is issue 14, finding 4, on one server: four
// loops submit through a proxy; the proxy swallows everything the client
// sends for 300 ms (its requests are lost, as when its node dies with them),
// then cuts the connection while the server stops abruptly and starts again
// 1 s later on the same store. Every Submit that returns nil names a stored job; no job is
// stored twice; and no Submit returns later than 3 s after the restart (the
// request timeout is 10 s: a request lost in the outage used to take all
// of it).
func TestSubmitAcrossRestart(t *testing.T) {
	srv := newRestartable(t)
	px := newProxy(t, srv.addr)
	name := uniqueName()
	b, err := jetstream.Connect(px.url(), jetstream.WithName(name), jetstream.WithRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, b, jobqueue.Config{NoWorkers: true, Capacity: 100_000})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	type call struct {
		id         string
		err        error
		start, end time.Time
	}
	var (
		mu    sync.Mutex
		calls []call
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := call{start: time.Now()}
				c.id, c.err = q.Submit(ctx, jobqueue.JobRequest{Type: "job"})
				c.end = time.Now()
				mu.Lock()
				calls = append(calls, c)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	// Outage 1: the server stores the jobs but its replies are lost; then
	// the connection breaks and the client reconnects to the same server.
	time.Sleep(500 * time.Millisecond)
	deafAt := time.Now()
	px.deaf.Store(true)
	time.Sleep(300 * time.Millisecond)
	px.cut()
	cutAt := time.Now()
	// Outage 2: the requests are lost, then the server stops abruptly and
	// starts again on the same store a second later.
	time.Sleep(700 * time.Millisecond)
	holeAt := time.Now()
	px.hole.Store(true)
	time.Sleep(300 * time.Millisecond)
	px.cut()
	srv.stop()
	time.Sleep(time.Second)
	srv.start()
	restarted := time.Now()
	time.Sleep(time.Second)
	// The time each call spent with the server out of reach.
	overlap := func(c call, from, to time.Time) time.Duration {
		end := c.end
		if to.Before(end) {
			end = to
		}
		return max(0, end.Sub(maxTime(c.start, from)))
	}
	close(stop)
	wg.Wait()

	// The stored jobs, counted per subject (one subject per job ID).
	nc, err := nats.Connect(srv.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := njs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, fmt.Sprintf("%s_JOBS", upper(name)))
	if err != nil {
		t.Fatal(err)
	}
	si, err := st.Info(ctx, njs.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]uint64{}
	for subj, n := range si.State.Subjects {
		stored[subj[len(name)+len(".q.0."):]] += n
	}

	var ok, failed, during, twice int
	var slowest time.Duration // a call's time beyond the outages it spanned
	for _, c := range calls {
		out := overlap(c, deafAt, cutAt) + overlap(c, holeAt, restarted)
		if out > 0 {
			during++
		}
		slowest = max(slowest, c.end.Sub(c.start)-out)
		if c.err != nil {
			failed++
			t.Logf("Submit failed after %v: %v", c.end.Sub(c.start).Round(time.Millisecond), c.err)
			continue
		}
		ok++
		if n := stored[c.id]; n != 1 {
			t.Errorf("Submit returned %s, stored %d times", c.id, n)
		}
	}
	for id, n := range stored {
		if n > 1 {
			twice++
			t.Errorf("job %s stored %d times", id, n)
		}
	}
	t.Logf("%d submits: %d succeeded, %d failed, %d spanned an outage; the longest took %v beyond the outages it spanned",
		len(calls), ok, failed, during, slowest.Round(time.Millisecond))
	if during == 0 {
		t.Errorf("no Submit was in flight during an outage")
	}
	if slowest > 3*time.Second {
		t.Errorf("a Submit took %v beyond the outages it spanned; want at most 3s", slowest)
	}
}

// proxy forwards loopback TCP connections to a server. While black-holed
// it swallows what clients send (requests reach no server, as when the
// client's node dies without closing its sockets); cut closes every
// connection (the node's death is noticed).
type proxy struct {
	ln    net.Listener
	to    string
	hole  atomic.Bool // swallow what clients send
	deaf  atomic.Bool // swallow what the server sends
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, to string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, to: to}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { // client to server, or nowhere while black-holed
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 && !p.hole.Load() {
					if _, err := s.Write(buf[:n]); err != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			s.Close()
		}()
		go func() { // server to client, or nowhere while deaf
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && !p.deaf.Load() {
					if _, err := c.Write(buf[:n]); err != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			s.Close()
		}()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.hole.Store(false)
	p.deaf.Store(false)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// TestWaitersSurviveLostReplies: many waiters poll while the replies to
// the submitter's connection are lost for 1.5 s (the server stays up; its
// answers never arrive, as when a server dies mid-request), then the
// connection breaks and the client reconnects. Each waiter had a read in
// flight when the replies stopped; a read must not outlive its connection,
// so every Wait returns within AckWait + 5 s of the reconnect, not at its
// 60 s deadline. (examples/cluster submit -n 500 with the server SIGKILLed
// 1 s in and restarted: all 500 jobs succeeded by +6 s, submit returned at
// its 2 min deadline.)
func TestWaitersSurviveLostReplies(t *testing.T) {
	const (
		ackWait = time.Second
		jobs    = 20
	)
	srv := newRestartable(t)
	px := newProxy(t, srv.addr)
	name := uniqueName()
	opts := []jetstream.Option{jetstream.WithName(name), jetstream.WithAckWait(ackWait),
		jetstream.WithPollInterval(100 * time.Millisecond)}
	slowWorkers(t, srv.url(), opts, jobs, func() { time.Sleep(2 * time.Second) })
	sb, err := jetstream.Connect(px.url(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	submitter := newQueue(t, sb, jobqueue.Config{NoWorkers: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		info jobqueue.JobInfo
		err  error
		at   time.Time
	}
	done := make(chan result, jobs)
	for range jobs {
		id, err := submitter.Submit(ctx, jobqueue.JobRequest{Type: "slow"})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			info, err := submitter.Wait(ctx, id)
			done <- result{info, err, time.Now()}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	px.deaf.Store(true)
	time.Sleep(1500 * time.Millisecond) // every waiter polls once a second
	px.cut()
	px.deaf.Store(false)
	cutAt := time.Now()
	var slowest time.Duration
	for range jobs {
		select {
		case r := <-done:
			if r.err != nil || r.info.State != jobqueue.StateSucceeded {
				t.Errorf("Wait = %v, %s; want succeeded", r.err, r.info.State)
			}
			slowest = max(slowest, r.at.Sub(cutAt))
		case <-time.After(time.Until(cutAt.Add(ackWait + 5*time.Second))):
			t.Fatalf("a Wait still blocked %v after the reconnect", ackWait+5*time.Second)
		}
	}
	t.Logf("%d waits returned, the last %v after the reconnect", jobs, slowest.Round(time.Millisecond))
}

// TestWaitBegunInOutage: a Wait that begins while the server is down does
// not fail with ErrNotConnected; it waits, and returns the job's end once
// the server is back (examples/cluster submit waits for many jobs, some of
// whose waits begin after the server died).
func TestWaitBegunInOutage(t *testing.T) {
	const ackWait = time.Second
	srv := newRestartable(t)
	opts := []jetstream.Option{jetstream.WithName(uniqueName()), jetstream.WithAckWait(ackWait),
		jetstream.WithPollInterval(100 * time.Millisecond)}
	slowWorkers(t, srv.url(), opts, 1, func() { time.Sleep(500 * time.Millisecond) })
	sb, err := jetstream.Connect(srv.url(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	submitter := newQueue(t, sb, jobqueue.Config{NoWorkers: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id, err := submitter.Submit(ctx, jobqueue.JobRequest{Type: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	srv.stop()
	if _, err := sb.Get(ctx, id); !errors.Is(err, jetstream.ErrNotConnected) || !errors.Is(err, jobqueue.ErrUnavailable) {
		t.Fatalf("Get in the outage: %v, want ErrNotConnected, an ErrUnavailable", err)
	}
	type result struct {
		info jobqueue.JobInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := submitter.Wait(ctx, id)
		done <- result{info, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Wait in the outage returned %v, %s", r.err, r.info.State)
	case <-time.After(2 * time.Second):
	}
	srv.start()
	restarted := time.Now()
	select {
	case r := <-done:
		if r.err != nil || r.info.State != jobqueue.StateSucceeded {
			t.Fatalf("Wait = %v, %s; want succeeded", r.err, r.info.State)
		}
		t.Logf("Wait begun in the outage returned %v after the restart", time.Since(restarted).Round(time.Millisecond))
	case <-time.After(ackWait + 5*time.Second):
		t.Fatalf("Wait still blocked %v after the restart", ackWait+5*time.Second)
	}
}

// slowWorkers starts a queue with n workers on its own connection to url
// (as a worker process would be) whose "slow" jobs call work and succeed.
// work ignores the job's context: it goes on through an outage.
func slowWorkers(t *testing.T, url string, opts []jetstream.Option, n int, work func()) {
	t.Helper()
	wb, err := jetstream.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, wb, jobqueue.Config{Workers: n, OnError: func(*jobqueue.Job, int, error) {}})
	q.Handle("slow", jobqueue.HandlerFunc(func(context.Context, *jobqueue.Job) (json.RawMessage, error) {
		work()
		return json.RawMessage(`"done"`), nil
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
}

package wsbridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// env is a queue, a Server and an httptest server, all stopped by cleanup.
type env struct {
	q   *jobqueue.Queue
	s   *Server
	hs  *httptest.Server
	url string
}

type fibIn struct {
	N int `json:"n"`
}

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

// newEnv starts a queue with a few handlers and a Server configured by cfg.
func newEnv(t testing.TB, cfg Config, qcfg jobqueue.Config, register ...func(*jobqueue.Queue)) *env {
	t.Helper()
	q, err := jobqueue.New(qcfg)
	if err != nil {
		t.Fatal(err)
	}
	jobqueue.HandleFunc(q, "fibonacci", func(ctx context.Context, in fibIn) (map[string]int, error) {
		return map[string]int{"n": in.N, "result": fib(in.N)}, nil
	})
	jobqueue.HandleFunc(q, "noop", func(ctx context.Context, in json.RawMessage) (struct{}, error) {
		return struct{}{}, nil
	})
	jobqueue.HandleFunc(q, "fail", func(ctx context.Context, in json.RawMessage) (struct{}, error) {
		return struct{}{}, jobqueue.Permanent(errors.New("it failed"))
	})
	jobqueue.HandleFunc(q, "block", func(ctx context.Context, in json.RawMessage) (struct{}, error) {
		_ = jobqueue.Progress(ctx, 10, "blocked")
		<-ctx.Done()
		return struct{}{}, ctx.Err()
	})
	jobqueue.HandleFunc(q, "sleep", func(ctx context.Context, in struct{ Ms int }) (string, error) {
		select {
		case <-time.After(time.Duration(in.Ms) * time.Millisecond):
			return "slept", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	jobqueue.HandleFunc(q, "big", func(ctx context.Context, in struct{ Size int }) (string, error) {
		return strings.Repeat("x", in.Size), nil
	})
	for _, r := range register {
		r(q)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	s := New(q, cfg)
	hs := httptest.NewServer(s)
	e := &env{q: q, s: s, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http")}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Server.Shutdown: %v", err)
		}
		hs.Close()
		// Handlers like "block" wait for their context: cancel what is left.
		jobs, _ := q.List(ctx, jobqueue.ListFilter{Limit: -1})
		for _, j := range jobs {
			if !j.State.Final() {
				_ = q.Cancel(ctx, j.ID)
			}
		}
		if err := q.Shutdown(ctx); err != nil {
			t.Errorf("Queue.Shutdown: %v", err)
		}
	})
	return e
}

// raw is a bare WebSocket client for protocol tests.
type raw struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader

	welcome   map[string]any // the server's first message
	principal string         // its principal: the owner of the jobs it submits
}

// dialRaw connects and reads the welcome message.
func dialRaw(t testing.TB, url string, h http.Header) *raw {
	t.Helper()
	d := ws.Dialer{Timeout: 5 * time.Second}
	if h != nil {
		d.Header = ws.HandshakeHeaderHTTP(h)
	}
	nc, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if br == nil {
		br = bufio.NewReader(nc)
	}
	r := &raw{t: t, nc: nc, br: br}
	t.Cleanup(func() { nc.Close() })
	r.welcome = r.msg()
	if r.welcome["type"] != "welcome" {
		t.Fatalf("first message %v, want a welcome", r.welcome)
	}
	r.principal, _ = r.welcome["principal"].(string)
	return r
}

// job returns a request of type typ owned by r's principal, to submit
// straight to the queue.
func (r *raw) job(typ string, payload string) jobqueue.JobRequest {
	req := jobqueue.JobRequest{Type: typ, Owner: r.principal}
	if payload != "" {
		req.Payload = json.RawMessage(payload)
	}
	return req
}

func (r *raw) sendText(s string) {
	r.t.Helper()
	if err := wsutil.WriteClientText(r.nc, []byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) send(v any) {
	r.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	r.sendText(string(b))
}

// frame reads the next frame, failing the test after 5 s.
func (r *raw) frame() ws.Frame {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(r.br)
	if err != nil {
		r.t.Fatalf("read header: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r.br, p); err != nil {
		r.t.Fatalf("read payload: %v", err)
	}
	return ws.Frame{Header: h, Payload: p}
}

// msg reads frames until a text message and decodes it, answering pings.
func (r *raw) msg() map[string]any {
	r.t.Helper()
	for {
		f := r.frame()
		switch f.Header.OpCode {
		case ws.OpText:
			var m map[string]any
			if err := json.Unmarshal(f.Payload, &m); err != nil {
				r.t.Fatalf("bad JSON from server: %v: %s", err, f.Payload)
			}
			return m
		case ws.OpPing:
			wsutil.WriteClientMessage(r.nc, ws.OpPong, f.Payload)
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			r.t.Fatalf("unexpected close %d %q", code, reason)
		}
	}
}

// until reads messages until one has type typ and returns it.
func (r *raw) until(typ string) map[string]any {
	r.t.Helper()
	for {
		m := r.msg()
		if m["type"] == typ {
			return m
		}
	}
}

// untilAll reads messages until it has one of each type, in any order,
// and returns the first of each.
func (r *raw) untilAll(types ...string) map[string]map[string]any {
	r.t.Helper()
	got := make(map[string]map[string]any)
	for len(got) < len(types) {
		m := r.msg()
		for _, typ := range types {
			if m["type"] == typ && got[typ] == nil {
				got[typ] = m
			}
		}
	}
	return got
}

// closeCode reads until a close frame and returns its code.
func (r *raw) closeCode() ws.StatusCode {
	r.t.Helper()
	for {
		f := r.frame()
		if f.Header.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return code
		}
	}
}

// proxy forwards TCP connections to a target and can cut them all, to
// test reconnection.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "ws://" + p.ln.Addr().String() + "/" }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes every connection through the proxy.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

package wsbridge

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// waitLong is waitFor with a deadline for heavy work on a loaded machine.
func waitLong(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// longCtx is testCtx with room for heavy tests on two loaded cores.
func longCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ownedIDs returns the IDs of the jobs the queue holds for owner.
func ownedIDs(t testing.TB, q *jobqueue.Queue, owner string) map[string]bool {
	t.Helper()
	jobs, err := q.List(context.Background(), jobqueue.ListFilter{Owner: owner, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	ids := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		ids[j.ID] = true
	}
	return ids
}

// holdProxy forwards TCP connections to a target, like proxy, and can also
// hold back what the target sends (so that the client's commands reach the
// server while their replies do not) before it cuts every connection.
type holdProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
	gate  chan struct{} // open (not closed) while holding
}

func newHoldProxy(t testing.TB, target string) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: target, gate: make(chan struct{})}
	close(p.gate)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *holdProxy) url() string { return "ws://" + p.ln.Addr().String() + "/" }

func (p *holdProxy) accept() {
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
		go p.pipe(u, c, false)
		go p.pipe(c, u, true)
	}
}

// pipe copies src to dst; with held, each chunk waits for the gate.
func (p *holdProxy) pipe(dst, src net.Conn, held bool) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if held {
				p.mu.Lock()
				gate := p.gate
				p.mu.Unlock()
				<-gate
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold stops forwarding what the target sends until cut.
func (p *holdProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
}

// cut closes every connection, dropping what was held back, and forwards
// freely again.
func (p *holdProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// fakeServer is a WebSocket server that sends a welcome and hands each
// command to answer, on a goroutine of its own; it counts the commands in
// flight (received and not answered) and their high-water mark.
type fakeServer struct {
	t       testing.TB
	ln      net.Listener
	welcome string
	answer  func(cmd *fakeCmd)
	wg      sync.WaitGroup

	inflight, high atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
}

// fakeCmd is a command the fakeServer received.
type fakeCmd struct {
	Command string          `json:"command"`
	ID      json.RawMessage `json:"id"`
	JobID   string          `json:"job_id"`

	s   *fakeServer
	nc  net.Conn
	wmu *sync.Mutex
}

// reply sends msg, a JSON object to which it adds the command's id, once.
func (c *fakeCmd) reply(msg string) {
	c.s.inflight.Add(-1)
	b := []byte(msg[:len(msg)-1] + `,"id":` + string(c.ID) + `}`)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = wsutil.WriteServerText(c.nc, b)
}

func newFakeServer(t testing.TB, welcome string, answer func(cmd *fakeCmd)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, welcome: welcome, answer: answer}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) url() string { return "ws://" + s.ln.Addr().String() + "/" }

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, nc)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(nc)
	}
}

func (s *fakeServer) serve(nc net.Conn) {
	defer s.wg.Done()
	defer nc.Close()
	if _, err := ws.Upgrade(nc); err != nil {
		return
	}
	wmu := new(sync.Mutex)
	if s.welcome != "" { // else a server that never speaks
		if err := wsutil.WriteServerText(nc, []byte(s.welcome)); err != nil {
			return
		}
	}
	for {
		data, op, err := wsutil.ReadClientData(nc)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		cmd := &fakeCmd{s: s, nc: nc, wmu: wmu}
		if json.Unmarshal(data, cmd) != nil {
			continue
		}
		n := s.inflight.Add(1)
		for {
			h := s.high.Load()
			if n <= h || s.high.CompareAndSwap(h, n) {
				break
			}
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.answer(cmd)
		}()
	}
}

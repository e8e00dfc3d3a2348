package wsbridge

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

// Server bridges WebSocket clients to a jobqueue.Queue. It implements
// http.Handler: mount it on any mux. Its methods are safe for concurrent use.
//
// New starts two goroutines (the event router and the stats ticker) and
// each connection runs one reader goroutine plus, only while it has
// something to send, one writer goroutine. Shutdown stops and waits for all
// of them. The Server does not own the queue: shut the queue down after the
// Server.
type Server struct {
	q        *jobqueue.Queue
	cfg      Config
	upgrader ws.HTTPUpgrader

	ctx    context.Context // canceled when Shutdown begins
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    map[*conn]struct{}
	watchers map[*conn]struct{} // connections watching stats
	closed   bool
	idle     chan struct{} // closed when closed and no connection is left

	wg       sync.WaitGroup // connection goroutines: readers and writers
	bg       sync.WaitGroup // router and stats goroutines
	begin    sync.Once
	stopOnce sync.Once

	router    router
	groups    groups
	resumeKey []byte
	system    atomic.Pointer[[]byte] // latest encoded SystemStats value
	nextConn  atomic.Uint64          // the last connection number given

	st counters
}

// counters are the Server's statistics, updated with atomics.
type counters struct {
	conns          atomic.Int64
	accepted       atomic.Uint64
	rejected       atomic.Uint64
	messagesIn     atomic.Uint64
	messagesOut    atomic.Uint64
	slow           atomic.Uint64
	errors         atomic.Uint64
	protocolErrors atomic.Uint64
	timeouts       atomic.Uint64
	eventsLost     atomic.Uint64
	quota          atomic.Uint64
	paused         atomic.Uint64
}

// Stats is a point-in-time view of a Server's counters, for package monitor
// and for `stats` messages. Counters run from New.
type Stats struct {
	Connections    int64  `json:"connections"`     // open now
	Accepted       uint64 `json:"accepted"`        // upgrades completed
	Rejected       uint64 `json:"rejected"`        // upgrades refused: host, origin, auth, bad handshake, shutdown
	MessagesIn     uint64 `json:"messages_in"`     // data messages received
	MessagesOut    uint64 `json:"messages_out"`    // messages queued to clients
	SlowConsumers  uint64 `json:"slow_consumers"`  // connections closed with 4008
	Errors         uint64 `json:"errors"`          // `error` messages sent
	ProtocolErrors uint64 `json:"protocol_errors"` // connections closed with 1002, 1003, 1007 or 1009
	Timeouts       uint64 `json:"timeouts"`        // connections dropped for a missing pong or a write timeout
	EventsDropped  uint64 `json:"events_dropped"`  // non-final queue events dropped while the router was behind
	EventsLost     uint64 `json:"events_lost"`     // times the router's subscription broke and was renewed
	QuotaRefused   uint64 `json:"quota_refused"`   // commands refused with CodeQuota
	Paused         uint64 `json:"paused"`          // times a connection stopped reading: its principal's replies to drain, or past its quota refusals
}

// New returns a Server for q configured by cfg (see Config for its zero
// values). It subscribes to q's events and starts the goroutines that route
// them and push stats; call Shutdown to stop them. It panics if q is nil.
func New(q *jobqueue.Queue, cfg Config) *Server {
	if q == nil {
		panic("wsbridge: New with a nil queue")
	}
	checkTrustedProxies(cfg.TrustedProxies)
	cfg = cfg.withDefaults()
	s := &Server{
		q:        q,
		cfg:      cfg,
		conns:    make(map[*conn]struct{}),
		watchers: make(map[*conn]struct{}),
		idle:     make(chan struct{}),
		upgrader: ws.HTTPUpgrader{Timeout: cfg.HandshakeTimeout},
	}
	s.resumeKey = cfg.ResumeKey
	if len(s.resumeKey) == 0 {
		s.resumeKey = make([]byte, 32)
		_, _ = rand.Read(s.resumeKey) // never fails
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.groups.init()
	s.router.init(s)
	s.bg.Add(2)
	go s.router.run()
	go s.statsLoop()
	return s
}

// Stats returns the Server's counters. It costs a few atomic loads.
func (s *Server) Stats() Stats {
	st := Stats{
		Connections:    s.st.conns.Load(),
		Accepted:       s.st.accepted.Load(),
		Rejected:       s.st.rejected.Load(),
		MessagesIn:     s.st.messagesIn.Load(),
		MessagesOut:    s.st.messagesOut.Load(),
		SlowConsumers:  s.st.slow.Load(),
		Errors:         s.st.errors.Load(),
		ProtocolErrors: s.st.protocolErrors.Load(),
		Timeouts:       s.st.timeouts.Load(),
		EventsLost:     s.st.eventsLost.Load(),
		QuotaRefused:   s.st.quota.Load(),
		Paused:         s.st.paused.Load(),
	}
	st.EventsDropped = s.router.dropped()
	return st
}

func (s *Server) reportError(err error) {
	if f := s.cfg.OnError; f != nil && err != nil {
		f(err)
	}
}

// ServeHTTP upgrades a WebSocket request after checking its Host
// (Config.Hosts) and Origin (Config.AllowedOrigins), both refused with 403,
// and Config.Authenticate (401 or 403), and serves the connection on a
// goroutine of its own; it returns once the upgrade is done. The first
// message on the connection is a `welcome` with its principal. Requests
// that are not upgrades go to Config.Fallback (426 without one); after
// Shutdown, upgrades get 503.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		if s.cfg.Fallback != nil {
			s.cfg.Fallback.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "wsbridge: this endpoint speaks WebSocket only", http.StatusUpgradeRequired)
		return
	}
	if s.isClosed() {
		s.refuse(w, r, http.StatusServiceUnavailable, ErrClosed)
		return
	}
	if err := s.checkHost(r); err != nil {
		s.refuse(w, r, http.StatusForbidden, err)
		return
	}
	if err := s.checkOrigin(r); err != nil {
		s.refuse(w, r, http.StatusForbidden, err)
		return
	}
	p, status, err := s.principal(r)
	if err != nil {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsbridge"`)
		}
		s.refuse(w, r, status, err)
		return
	}
	nc, rw, _, err := s.upgrader.Upgrade(r, w)
	if err != nil {
		s.st.rejected.Add(1)
		err = fmt.Errorf("wsbridge: upgrade: %w", err)
		s.reportError(err)
		s.logRefused(r, http.StatusBadRequest, err)
		if nc != nil {
			nc.Close()
		}
		return
	}
	// The hijacked reader is 4 KiB; keep it only if the client already sent
	// frames into it, and read through a small one otherwise.
	var br *bufio.Reader
	if rw.Reader.Buffered() > 0 {
		br = rw.Reader
	} else {
		br = bufio.NewReaderSize(nc, s.cfg.ReadBufferSize)
	}
	remote := clientAddr(r, s.cfg.TrustedProxies)
	g := s.joinGroup(p, remote)
	c := newConn(s, nc, br, p, g, remote)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.st.rejected.Add(1)
		s.groups.leave(g)
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.st.accepted.Add(1)
	s.st.conns.Add(1)
	if s.logs(slog.LevelInfo) {
		s.log(slog.LevelInfo, "wsbridge: connection opened", c.connAttrs()...)
	}
	c.send(s.welcome(c))
	go c.serve()
}

// refuse answers an upgrade request with status and err's text.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	s.st.rejected.Add(1)
	if status != http.StatusServiceUnavailable {
		s.reportError(err)
	}
	s.logRefused(r, status, err)
	http.Error(w, err.Error(), status)
}

// joinGroup returns the group whose quota the connection of p from
// remote counts against: p's own, or for an anonymous p its address's.
func (s *Server) joinGroup(p Principal, remote string) *group {
	if p.anonymous() {
		key := addressKey(remote)
		return s.groups.join(key, func() *group { return newGroup(key, s.cfg.Quota, true) })
	}
	key := "principal:" + p.Name
	return s.groups.join(key, func() *group { return newGroup(key, s.cfg.quotaFor(p), false) })
}

// welcome encodes the `welcome` message of c.
func (s *Server) welcome(c *conn) []byte {
	m := welcomeMsg{Type: msgWelcome, Principal: c.p.Name, Operator: c.p.Operator, Quota: wireQuota(c.g.quota)}
	if c.p.anonymous() {
		m.Resume = s.resumeCredential(c.p.Name)
	}
	return encode(m)
}

// logRefused logs an upgrade refused with HTTP status.
func (s *Server) logRefused(r *http.Request, status int, err error) {
	if s.logs(slog.LevelWarn) {
		s.log(slog.LevelWarn, "wsbridge: handshake refused", slog.String("remote", clientAddr(r, s.cfg.TrustedProxies)),
			slog.Int("status", status), slog.Any("err", err))
	}
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		if strings.EqualFold(strings.TrimSpace(v), "websocket") {
			return true
		}
	}
	return false
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// removeConn forgets a connection whose reader has finished.
func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	delete(s.watchers, c)
	if s.closed && len(s.conns) == 0 {
		closeOnce(s.idle)
	}
	s.mu.Unlock()
	s.groups.leave(c.g)
	s.st.conns.Add(-1)
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// Shutdown stops the Server: new upgrades get 503, every client gets a
// close frame 1001 (going away) after the messages already queued to it,
// and Shutdown waits for the clients' replies and for every goroutine of the
// Server. If ctx ends first, it closes the remaining connections at once,
// waits for their goroutines (which then exit promptly) and returns
// ctx.Err(). Shutdown does not touch the queue. It is idempotent and safe
// to call concurrently.
func (s *Server) Shutdown(ctx context.Context) error {
	s.begin.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		if len(s.conns) == 0 {
			closeOnce(s.idle)
		}
		s.mu.Unlock()
		s.cancel()
		for _, c := range conns {
			c.closeWith(errGoingAway, false)
		}
	})
	var err error
	select {
	case <-s.idle:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-s.idle
	}
	s.wg.Wait()
	s.stopOnce.Do(s.router.stop)
	s.bg.Wait()
	return err
}

// statsLoop pushes `stats` messages to the connections watching them.
func (s *Server) statsLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		watchers := make([]*conn, 0, len(s.watchers))
		for c := range s.watchers {
			watchers = append(watchers, c)
		}
		s.mu.Unlock()
		if len(watchers) == 0 {
			continue
		}
		if f := s.cfg.SystemStats; f != nil {
			v, err := f(s.ctx)
			if err == nil {
				if b, err := json.Marshal(v); err == nil {
					s.system.Store(&b)
				}
			} else if !errors.Is(err, context.Canceled) {
				s.reportError(fmt.Errorf("wsbridge: SystemStats: %w", err))
				if s.logs(slog.LevelWarn) {
					s.log(slog.LevelWarn, "wsbridge: SystemStats failed", slog.Any("err", err))
				}
			}
		}
		msg := s.statsMessage(nil)
		for _, c := range watchers {
			c.send(msg)
		}
	}
}

// statsMessage encodes a `stats` message with the latest system value.
func (s *Server) statsMessage(id json.RawMessage) []byte {
	m := statsMsg{Type: msgStats, ID: id, Bridge: s.Stats(), Queue: s.q.Stats()}
	if b := s.system.Load(); b != nil {
		m.System = *b
	}
	return encode(m)
}

// watchStats turns the periodic `stats` messages on or off for c.
func (s *Server) watchStats(c *conn, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, live := s.conns[c]; !live {
		return
	}
	if on {
		s.watchers[c] = struct{}{}
	} else {
		delete(s.watchers, c)
	}
}

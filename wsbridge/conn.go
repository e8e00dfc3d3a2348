package wsbridge

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

// errPeerClosed ends the read loop when the client sent a close frame.
var errPeerClosed = errors.New("wsbridge: closed by client")

// conn is one client connection on the server. Its reader goroutine (serve)
// reads and handles the client's messages in order; everything it sends
// goes through out, whose writer goroutine exists only while there is
// something to write. An idle conn costs its reader's small stack, its read
// buffer, this struct and the socket.
type conn struct {
	s      *Server
	nc     net.Conn
	rd     msgReader
	out    sender
	id     uint64    // unique in s, for the log
	remote string    // the client's address (see Config.TrustedProxies)
	p      Principal // who the connection acts for
	g      *group    // the quota it counts against
	budget sendBudget

	// Reader goroutine only.
	extended time.Time // when the read deadline was last pushed back
	peer     *closeErr // the client's close frame, when it closed first

	closing atomic.Bool // a close frame is queued: no deadline extension, data ignored
	ping    atomic.Pointer[time.Timer]

	// Guarded by s.router.mu.
	watchAll bool
	watching map[string]struct{} // each holds one of g's watches
}

func newConn(s *Server, nc net.Conn, br *bufio.Reader, p Principal, g *group, remote string) *conn {
	c := &conn{s: s, nc: nc, id: s.nextConn.Add(1), p: p, g: g, remote: remote}
	c.rd = msgReader{r: br, state: ws.StateServerSide, max: s.cfg.MaxMessageSize, owner: c}
	c.budget = sendBudget{g: g, pushLimit: int64(s.cfg.SendQueueBytes)}
	c.out.init(nc, false, s.cfg.WriteTimeout, math.MaxInt, &s.wg, c)
	c.out.budget = &c.budget
	if d := s.cfg.PingInterval; d > 0 {
		c.extended = time.Now()
		_ = nc.SetReadDeadline(c.extended.Add(d + s.cfg.PongTimeout))
		c.ping.Store(time.AfterFunc(d, c.sendPing))
	}
	return c
}

// serve runs the connection until it ends, then releases it.
func (c *conn) serve() {
	defer c.s.wg.Done()
	err := c.readLoop()
	c.teardown(err)
}

// readLoop reads and handles the client's messages in order. Each command
// takes one of its principal's in-flight slots while it is handled (its
// replies take their own until written): when the principal has
// Quota.MaxInFlight commands in flight, or Quota.MaxQueuedBytes queued, the
// loop waits before handling the next, which stops reading the socket and
// lets TCP slow the client down.
func (c *conn) readLoop() error {
	for {
		_, bp, err := c.rd.next()
		if err != nil {
			return err
		}
		if !c.closing.Load() {
			c.s.st.messagesIn.Add(1)
			if c.acquire() {
				c.handle(*bp)
				c.g.release(1, 0)
			}
		}
		putBuf(bp)
	}
}

// acquire takes an in-flight slot for a command, waiting for one if it
// must; it returns false if the connection closes meanwhile.
func (c *conn) acquire() bool {
	d := c.g.held()
	if d == 0 && c.g.tryAcquire() {
		return true
	}
	c.s.st.paused.Add(1)
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.out.done:
			t.Stop()
			return false
		}
	}
	ok := c.g.acquire(c.out.done)
	// The client may have been silent while we did not read: restart its
	// grace period.
	if d := c.s.cfg.PingInterval; d > 0 && !c.closing.Load() {
		c.extended = time.Now()
		_ = c.nc.SetReadDeadline(c.extended.Add(d + c.s.cfg.PongTimeout))
	}
	return ok
}

// teardown finishes the close handshake as err requires, closes the socket
// and forgets the connection.
func (c *conn) teardown(err error) {
	var ce *closeErr
	var cause error // what ended c abnormally, for the log
	switch {
	case errors.Is(err, errPeerClosed):
		// The echo (or our own close frame) is queued or written.
		c.waitClose()
	case errors.As(err, &ce):
		c.s.st.protocolErrors.Add(1)
		c.s.reportError(err)
		cause = err
		c.closing.Store(true)
		c.out.close(ce.code, ce.reason, false)
		c.waitClose()
	case c.closing.Load():
		// We sent a close frame and the client did not answer in time, or
		// its connection broke meanwhile: both end the handshake.
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.s.st.timeouts.Add(1)
		cause = fmt.Errorf("wsbridge: client silent for %v: %w", c.s.cfg.PingInterval+c.s.cfg.PongTimeout, err)
		c.s.reportError(cause)
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		cause = fmt.Errorf("wsbridge: read: %w", err)
		c.s.reportError(cause)
	}
	if t := c.ping.Load(); t != nil {
		t.Stop()
	}
	c.out.kill()
	c.nc.Close()
	c.s.router.dropConn(c)
	c.s.removeConn(c)
	c.logClosed(cause)
}

// waitClose waits until the queued close frame is written, at most
// CloseTimeout.
func (c *conn) waitClose() {
	t := time.NewTimer(c.s.cfg.CloseTimeout)
	defer t.Stop()
	select {
	case <-c.out.done:
	case <-t.C:
	}
}

// closeWith starts a server-initiated close: the close frame goes after the
// queued messages, or instead of them with drop. The reader then waits for
// the client's close frame, at most CloseTimeout after ours is written.
func (c *conn) closeWith(e *closeErr, drop bool) bool {
	c.closing.Store(true)
	return c.out.close(e.code, e.reason, drop)
}

// send queues a pushed message (an event, stats); a full queue closes the
// connection as a slow consumer. It never blocks.
func (c *conn) send(msg []byte) {
	if c.sendFrame(ws.OpText, msg) {
		c.s.st.messagesOut.Add(1)
	}
}

// reply queues a reply to a command. Replies are never refused for space:
// they pace the reading of commands instead (see readLoop). It never
// blocks.
func (c *conn) reply(msg []byte) {
	if c.out.reply(msg) == nil {
		c.s.st.messagesOut.Add(1)
	}
}

// sendFrame queues a frame and reports whether it did; a full queue closes
// the connection as a slow consumer.
func (c *conn) sendFrame(op ws.OpCode, data []byte) bool {
	err := c.out.send(op, data)
	if errors.Is(err, errQueueFull) {
		queued := c.out.pushedBytes()
		if c.closeWith(errSlow, true) {
			c.s.st.slow.Add(1)
			c.s.reportError(fmt.Errorf("%w: %s: %d bytes queued", ErrSlowConsumer, c.remote, queued))
			if c.s.logs(slog.LevelWarn) {
				c.s.log(slog.LevelWarn, "wsbridge: slow consumer dropped",
					c.connAttrs(slog.Int("code", int(CloseSlowConsumer)), slog.Int64("queued", queued))...)
			}
		}
	}
	return err == nil
}

// sendPing is the ping timer's function.
func (c *conn) sendPing() {
	if c.sendFrame(ws.OpPing, nil) {
		if t := c.ping.Load(); t != nil {
			t.Reset(c.s.cfg.PingInterval)
		}
	}
}

// frameRead pushes the read deadline back: any frame shows the client is
// alive. To keep the cost off the hot path it does so at most every
// PongTimeout/4 (and every second at most), which shortens a client's grace
// by that much at worst.
func (c *conn) frameRead() {
	d := c.s.cfg.PingInterval
	if d <= 0 || c.closing.Load() {
		return
	}
	if now := time.Now(); now.Sub(c.extended) >= min(time.Second, c.s.cfg.PongTimeout/4) {
		c.extended = now
		_ = c.nc.SetReadDeadline(now.Add(d + c.s.cfg.PongTimeout))
	}
}

// control answers pings, and close frames with the close handshake.
func (c *conn) control(h ws.Header, p []byte) error {
	switch h.OpCode {
	case ws.OpPing:
		c.sendFrame(ws.OpPong, append([]byte(nil), p...))
	case ws.OpClose:
		if c.closing.Load() {
			return errPeerClosed // the reply to our close frame
		}
		code, reason := ws.ParseCloseFrameData(p)
		switch {
		case len(p) == 1:
			return protocolErr(errors.New("close frame with a one-byte payload"))
		case len(p) == 0:
			code = ws.StatusNormalClosure
		default:
			if err := ws.CheckCloseFrameData(code, reason); err != nil {
				return protocolErr(err)
			}
		}
		c.peer = &closeErr{code, reason}
		c.closing.Store(true)
		c.out.close(code, "", false)
		return errPeerClosed
	}
	return nil
}

// writeFailed closes the socket so that the reader ends too.
func (c *conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.s.st.timeouts.Add(1)
	}
	if !errors.Is(err, net.ErrClosed) {
		c.s.reportError(fmt.Errorf("wsbridge: write to %s: %w", c.remote, err))
		if c.s.logs(slog.LevelWarn) {
			c.s.log(slog.LevelWarn, "wsbridge: write failed", c.connAttrs(slog.Any("err", err))...)
		}
	}
	c.nc.Close()
}

// closeWritten bounds the wait for the client's reply to our close frame.
func (c *conn) closeWritten() {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.CloseTimeout))
}

// handle runs one client command.
func (c *conn) handle(data []byte) {
	cmd, err := decodeCommand(data)
	if err != nil {
		var ce *cmdError
		if errors.As(err, &ce) {
			c.sendError(ce.id, ce.command, ce.code, ce.message)
		}
		return
	}
	cmd.spec.run(c, cmd)
}

// follow makes c watch job id, with a watch of its group the caller has
// reserved, and closes the gap with the events routed before the watch
// began: if the job is final already, its final event is sent from its
// snapshot (once; see router.deliverFinal).
func (c *conn) follow(id string) {
	s := c.s
	if !s.router.watch(c, id) {
		c.g.releaseWatch() // watched already
		return
	}
	info, err := s.q.Get(s.ctx, id)
	switch {
	case err == nil && info.State.Final():
		s.router.deliverFinal(c, &info)
	case errors.Is(err, jobqueue.ErrNotFound):
		// The job ended and retention dropped it before the watch began
		// (more than Retention.MaxJobs jobs ended meanwhile): its outcome
		// is gone. Say so rather than leave the client waiting.
		if s.router.forget(c, id) {
			c.s.st.errors.Add(1)
			c.reply(encode(errorMsg{Type: msgError, Command: cmdSubscribe, JobID: id, Code: CodeNotFound,
				Message: "the job ended and was dropped by the queue's retention before its outcome could be sent"}))
		}
	}
}

func (c *conn) watchesAll() bool {
	c.s.router.mu.RLock()
	defer c.s.router.mu.RUnlock()
	return c.watchAll
}

func (c *conn) sendError(id json.RawMessage, command, code, message string) {
	c.s.st.errors.Add(1)
	if code == CodeQuota {
		c.s.st.quota.Add(1)
		c.g.refused()
	}
	if c.s.logs(slog.LevelDebug) {
		c.s.log(slog.LevelDebug, "wsbridge: command refused", c.connAttrs(slog.String("command", command),
			slog.String("error_code", code), slog.String("message", message))...)
	}
	c.reply(encode(errorMsg{Type: msgError, ID: id, Command: command, Code: code, Message: message}))
}

func (c *conn) sendQueueError(cmd *command, err error) {
	c.sendError(cmd.id, cmd.name, errorCode(err), err.Error())
}

// sendQuota refuses cmd for a quota the Server enforces.
func (c *conn) sendQuota(cmd *command, message string) {
	c.sendError(cmd.id, cmd.name, CodeQuota, message)
}

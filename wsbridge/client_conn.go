package wsbridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

// This file holds a Client's connections: dialing and the welcome message,
// the reader loop, reconnection, and the routing of the server's messages.

// clientConn is one connection of a Client.
type clientConn struct {
	c       *Client
	nc      net.Conn
	rd      msgReader
	out     sender
	closing atomic.Bool
	peer    *CloseError // close frame received; reader goroutine only
}

// welcome is a `welcome` message as a Client reads it.
type welcome struct {
	Principal string    `json:"principal"`
	Operator  bool      `json:"operator"`
	Resume    string    `json:"resume"`
	Quota     quotaWire `json:"quota"`
}

// connect dials the server, presenting the Client's resume credential if
// it has one, and reads the welcome message.
func (c *Client) connect(ctx context.Context) (*clientConn, welcome, error) {
	start := time.Now()
	h := c.o.header.Clone()
	c.mu.Lock()
	if c.cred != "" {
		h.Set(resumeHeader, c.cred)
	}
	c.mu.Unlock()
	d := ws.Dialer{Timeout: c.o.dialTimeout, TLSConfig: c.o.tlsConfig}
	if len(h) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(h)
	}
	nc, br, _, err := d.Dial(ctx, c.url)
	if err != nil {
		return nil, welcome{}, fmt.Errorf("wsbridge: dial %s: %w", c.url, err)
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	cc := &clientConn{c: c, nc: nc}
	cc.rd = msgReader{r: br, state: ws.StateClientSide, max: c.o.maxMessage, owner: cc}
	cc.out.init(nc, true, c.o.writeTimeout, 1<<16, &c.wg, cc)
	w, err := cc.readWelcome(ctx, start)
	if err != nil {
		cc.teardown(err)
		if cc.peer != nil {
			err = cc.peer
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, welcome{}, fmt.Errorf("wsbridge: dial %s: reading the welcome message: %w", c.url, err)
	}
	return cc, w, nil
}

// readWelcome reads the server's first message, which must be a welcome,
// within the dial timeout counted from start and ctx.
func (cc *clientConn) readWelcome(ctx context.Context, start time.Time) (welcome, error) {
	var w welcome
	deadline := time.Time{}
	if d := cc.c.o.dialTimeout; d > 0 {
		deadline = start.Add(d)
	}
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	_ = cc.nc.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = cc.nc.SetReadDeadline(time.Unix(1, 0)) })
	_, bp, err := cc.rd.next()
	if !stop() && err == nil {
		err = ctx.Err() // the deadline may be in the past now
	}
	if err != nil {
		if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
			err = context.DeadlineExceeded // ctx's deadline, which may not have fired yet
		}
		return w, err
	}
	defer putBuf(bp)
	_ = cc.nc.SetReadDeadline(time.Time{})
	if t := msgType(*bp); t != msgWelcome {
		return w, fmt.Errorf("the first message is %q, not a welcome", t)
	}
	if err := json.Unmarshal(*bp, &w); err != nil {
		return w, err
	}
	return w, nil
}

// adopt records what welcome w says of the Client's principal and returns
// the principal of the connection before.
func (c *Client) adopt(w *welcome) (was string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was = c.principal
	c.principal = w.Principal
	if w.Resume != "" {
		c.cred = w.Resume
	}
	return was
}

// loop reads from cc, and from each connection that replaces it, until the
// Client is closed or a connection is lost without reconnection.
func (c *Client) loop(cc *clientConn) {
	defer c.wg.Done()
	defer close(c.done)
	defer close(c.events)
	for {
		err := cc.readLoop()
		cc.teardown(err)
		if cc.peer != nil {
			err = cc.peer
		}
		c.lost(cc, err)
		c.logLost(err)
		if cc = c.reconnect(err); cc == nil {
			return
		}
	}
}

// lost fails the calls in flight on cc, which frees their places in the
// window; those that may be repeated are sent again on the next
// connection (see Client.do).
func (c *Client) lost(cc *clientConn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == cc {
		c.cur = nil
		c.ready = make(chan struct{})
	}
	for id, cl := range c.pending {
		cl.ch <- inMsg{err: fmt.Errorf("%w: %w", ErrConnectionLost, err)}
		delete(c.pending, id)
		c.release()
	}
}

// reconnect dials again with backoff until it succeeds or the Client is
// closed, then resumes the watches. It returns nil when the loop must end.
func (c *Client) reconnect(cause error) *clientConn {
	c.mu.Lock()
	if c.closed || !c.o.reconnect {
		if c.stopErr == nil {
			c.stopErr = fmt.Errorf("%w: %w", ErrConnectionLost, cause)
			if c.closed {
				c.stopErr = ErrClosed
			}
		}
		c.failWaitersLocked()
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	delay := c.o.minBackoff
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-c.ctx.Done():
			t.Stop()
			return c.reconnect(cause)
		case <-t.C:
		}
		cc, w, err := c.connect(c.ctx)
		if err == nil {
			was := c.adopt(&w)
			watched := c.resume(cc)
			if l := c.o.logger; l != nil {
				if was != w.Principal {
					l.LogAttrs(context.Background(), slog.LevelWarn, "wsbridge: reconnected as another principal",
						slog.String("url", c.url), slog.String("was", was), slog.String("principal", w.Principal))
				}
				l.LogAttrs(context.Background(), slog.LevelInfo, "wsbridge: reconnected",
					slog.String("url", c.url), slog.Int("attempts", attempt), slog.Int("watched", watched),
					slog.String("principal", w.Principal))
			}
			return cc
		}
		delay = min(2*delay, c.o.maxBackoff)
		if l := c.o.logger; l != nil && c.ctx.Err() == nil {
			l.LogAttrs(context.Background(), slog.LevelDebug, "wsbridge: reconnection failed",
				slog.String("url", c.url), slog.Int("attempt", attempt), slog.Any("err", err),
				slog.Duration("retry_in", delay))
		}
	}
}

// logLost logs a lost connection, unless Close ended it.
func (c *Client) logLost(err error) {
	l := c.o.logger
	if l == nil {
		return
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return
	}
	attrs := []slog.Attr{slog.String("url", c.url)}
	if ce, ok := errors.AsType[*CloseError](err); ok {
		attrs = append(attrs, slog.Int("code", int(ce.Code)), slog.String("reason", ce.Reason))
	} else {
		attrs = append(attrs, slog.Any("err", err))
	}
	l.LogAttrs(context.Background(), slog.LevelWarn, "wsbridge: connection lost", attrs...)
}

// resume makes cc current and subscribes again to the watched jobs, whose
// number it returns.
func (c *Client) resume(cc *clientConn) int {
	c.mu.Lock()
	c.cur = cc
	close(c.ready)
	all := c.watchAll
	ids := make([]string, 0, len(c.watched))
	for id := range c.watched {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	c.resubscribe(cc, all, ids)
	return len(ids)
}

// resync subscribes again to every watched job, so that jobs that ended
// meanwhile deliver their final event: after the server reported lost
// events, and after Unsubscribe of every job.
func (c *Client) resync() {
	c.mu.Lock()
	cc := c.cur
	ids := make([]string, 0, len(c.watched))
	for id := range c.watched {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	if cc != nil {
		c.resubscribe(cc, false, ids)
	}
}

// resubscribe sends, on a goroutine of its own, a subscribe to every job
// (with all) and to each of ids on cc, each when the window has room for
// it. It stops when cc is lost: the next connection subscribes again. The
// replies are handled by the reader (an error for a job fails its
// waiters).
func (c *Client) resubscribe(cc *clientConn, all bool, ids []string) {
	if !all && len(ids) == 0 {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		if all && !c.sendAsync(cc, &request{Command: cmdSubscribe}, "") {
			return
		}
		for _, id := range ids {
			if !c.sendAsync(cc, &request{Command: cmdSubscribe, JobID: id}, id) {
				return
			}
		}
	}()
}

// sendAsync sends r on cc once the window has room, with a request id
// whose reply the reader handles. It reports whether r was sent.
func (c *Client) sendAsync(cc *clientConn, r *request, jobID string) bool {
	if c.acquire(c.ctx) != nil {
		return false
	}
	return c.send(cc, r, &call{ch: make(chan inMsg, 1), jobID: jobID}) == nil
}

func (c *Client) failWaitersLocked() {
	for id := range c.waiters {
		c.failWaitLocked(id, c.stopErr)
	}
}

// failWaitLocked ends the Waits of job id with err.
func (c *Client) failWaitLocked(id string, err error) {
	for _, ch := range c.waiters[id] {
		ch <- waitResult{err: err}
	}
	delete(c.waiters, id)
}

// readLoop handles the server's messages until the connection ends.
func (cc *clientConn) readLoop() error {
	for {
		_, bp, err := cc.rd.next()
		if err != nil {
			return err
		}
		cc.c.handleRaw(*bp)
		putBuf(bp)
	}
}

func (cc *clientConn) teardown(err error) {
	var ce *closeErr
	switch {
	case errors.Is(err, errPeerClosed):
		cc.waitClose()
	case errors.As(err, &ce):
		cc.closing.Store(true)
		cc.out.close(ce.code, ce.reason, false)
		cc.waitClose()
	}
	cc.out.kill()
	cc.nc.Close()
}

func (cc *clientConn) waitClose() {
	t := time.NewTimer(DefaultCloseTimeout)
	defer t.Stop()
	select {
	case <-cc.out.done:
	case <-t.C:
	}
}

func (cc *clientConn) frameRead() {}

func (cc *clientConn) control(h ws.Header, p []byte) error {
	switch h.OpCode {
	case ws.OpPing:
		_ = cc.out.send(ws.OpPong, append([]byte(nil), p...))
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		if code.Empty() {
			code = ws.StatusNoStatusRcvd
		}
		cc.peer = &CloseError{Code: code, Reason: reason}
		if !cc.closing.Load() {
			cc.closing.Store(true)
			echo := code
			if code == ws.StatusNoStatusRcvd {
				echo = ws.StatusNormalClosure
			}
			cc.out.close(echo, "", false)
		}
		return errPeerClosed
	}
	return nil
}

func (cc *clientConn) writeFailed(error) { cc.nc.Close() }

func (cc *clientConn) closeWritten() {
	if cc.closing.Load() {
		_ = cc.nc.SetReadDeadline(time.Now().Add(DefaultCloseTimeout))
	}
}

// msgType returns the "type" of a server message, which the server always
// encodes first, without decoding the message.
func msgType(b []byte) string {
	const prefix = `{"type":"`
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return ""
	}
	b = b[len(prefix):]
	if i := bytes.IndexByte(b, '"'); i > 0 {
		return string(b[:i])
	}
	return ""
}

// handleRaw decodes one server message and handles it. Events, the bulk of
// the traffic, decode into their own small struct.
func (c *Client) handleRaw(b []byte) {
	var kind jobqueue.EventKind
	if kind.UnmarshalText([]byte(msgType(b))) == nil {
		var ev jobqueue.Event
		if decodeEvent(b, &ev) == nil {
			c.handleEvent(ev)
		}
		return
	}
	var m inMsg
	if msgType(b) == msgAck && fastAck(b, &m) {
		c.handle(&m)
		return
	}
	m = inMsg{}
	if json.Unmarshal(b, &m) != nil {
		return // not ours to fix; the server only sends JSON objects
	}
	c.handle(&m)
}

// handle routes one server message: replies to their calls, events to the
// watch bookkeeping, Wait and Events. A reply frees its call's place in
// the window, whether its caller still waits or not.
func (c *Client) handle(m *inMsg) {
	switch m.Type {
	case msgAck, msgError, msgStatus, msgJobs, msgStats, msgPong:
		if len(m.ID) == 0 {
			switch {
			case m.Type == msgError && m.Code == CodeEventsLost:
				c.resync()
			case m.Type == msgError && m.JobID != "":
				// A watched job whose outcome the server cannot send.
				c.mu.Lock()
				delete(c.watched, m.JobID)
				c.failWaitLocked(m.JobID, &ServerError{Code: m.Code, Message: m.Message})
				c.mu.Unlock()
			}
			return
		}
		c.mu.Lock()
		cl := c.pending[string(m.ID)]
		if cl != nil {
			delete(c.pending, string(m.ID))
			c.release()
			switch {
			case cl.submit && m.Type == msgAck && m.JobID != "":
				c.watched[m.JobID] = struct{}{}
			case cl.jobID != "" && m.Type == msgError:
				// A watched job the server no longer knows: its waiters
				// will never see it end.
				delete(c.watched, cl.jobID)
				c.failWaitLocked(cl.jobID, &ServerError{Code: m.Code, Message: m.Message})
			}
		}
		c.mu.Unlock()
		if cl != nil {
			cl.ch <- *m
		}
		return
	}
	// A message type this client does not know (or a second welcome):
	// ignore it.
}

// handleEvent records a final event for Wait and passes every event to
// Events.
func (c *Client) handleEvent(ev jobqueue.Event) {
	if ev.Kind.Final() {
		c.mu.Lock()
		delete(c.watched, ev.JobID)
		if _, seen := c.finals[ev.JobID]; !seen {
			if len(c.order) >= maxFinals {
				delete(c.finals, c.order[0])
				c.order = c.order[1:]
			}
			c.order = append(c.order, ev.JobID)
		}
		c.finals[ev.JobID] = ev
		ws := c.waiters[ev.JobID]
		delete(c.waiters, ev.JobID)
		c.mu.Unlock()
		for _, ch := range ws {
			ch <- waitResult{ev: ev}
		}
	}
	select {
	case c.events <- ev:
		if c.dropping.Load() {
			c.dropping.Store(false)
		}
	default:
		n := c.dropped.Add(1)
		if !c.dropping.Swap(true) && c.o.logger != nil {
			c.o.logger.LogAttrs(context.Background(), slog.LevelWarn, "wsbridge: events dropped: Events is full",
				slog.String("url", c.url), slog.Uint64("dropped", n))
		}
	}
}

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
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

// Option configures a Client.
type Option func(*options)

type options struct {
	header       http.Header
	reconnect    bool
	minBackoff   time.Duration
	maxBackoff   time.Duration
	eventBuffer  int
	maxMessage   int
	writeTimeout time.Duration
	dialTimeout  time.Duration
	logger       *slog.Logger
}

// WithHeader adds header to the handshake request (an Authorization header,
// say). The default sends none.
func WithHeader(header http.Header) Option {
	return func(o *options) {
		for k, vs := range header {
			for _, v := range vs {
				o.header.Add(k, v)
			}
		}
	}
}

// WithToken sends "Authorization: Bearer token" with the handshake, as
// TokenAuth expects.
func WithToken(token string) Option {
	return func(o *options) { o.header.Set("Authorization", "Bearer "+token) }
}

// WithReconnect sets the delays between reconnection attempts: the first
// waits min, each next one twice the previous, at most max (at least min),
// with jitter. The default is 100 ms to 5 s. A min <= 0 turns reconnecting
// off (WithReconnect(0, 0)): the Client stops at the first lost connection,
// and its pending and later calls fail with ErrConnectionLost, Wait
// included.
func WithReconnect(min, max time.Duration) Option {
	return func(o *options) {
		o.reconnect = min > 0
		o.minBackoff = min
		o.maxBackoff = max
	}
}

// WithEventBuffer sets the capacity of the channel returned by Events. The
// default is 1024.
func WithEventBuffer(n int) Option {
	return func(o *options) { o.eventBuffer = n }
}

// WithMaxMessageSize bounds a message from the server; a bigger one closes
// the connection. The default is 16 MiB.
func WithMaxMessageSize(n int) Option {
	return func(o *options) { o.maxMessage = n }
}

// WithDialTimeout bounds each connection attempt, handshake included. The
// default is 10 seconds.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) { o.dialTimeout = d }
}

// WithLogger makes the Client log to l, as structured records with the
// attribute "url": a lost connection (Warn, with "code" and "reason" when
// the server sent a close frame, "err" otherwise), each failed reconnection
// attempt (Debug, with "attempt", "err" and "retry_in"), a reconnection
// (Info, with "attempts" and "watched") and the first event of each run of
// events dropped because Events was full (Warn, with "dropped", the total
// so far). The default, like a nil l, logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// maxFinals bounds the final events a Client keeps for Wait.
const maxFinals = 4096

// Client is a Go client of a Server. It sends commands, matches replies to
// them by request id, and follows the jobs it submits or subscribes to: their
// events arrive on Events, and Wait returns their final state. When the
// connection drops it reconnects (see WithReconnect) and subscribes again to
// the jobs it was watching, so that Wait still returns the result of a job
// that finished meanwhile (within the server's retention).
//
// Every method that talks to the server blocks until the server's reply
// arrives or ctx ends, and then returns ctx.Err() (the command may have
// reached the server already); while the Client reconnects, it waits for the
// new connection. Each call costs one JSON message each way.
//
// A Client runs one reader goroutine, and a writer goroutine while it has
// something to send; Close stops them. Its methods are safe for concurrent
// use.
type Client struct {
	url string
	o   options

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // loop and writers
	done   chan struct{}  // closed when loop has exited

	mu       sync.Mutex
	cur      *clientConn   // nil while disconnected
	ready    chan struct{} // closed while cur is set
	closed   bool
	stopErr  error // why loop stopped
	pending  map[string]*call
	watched  map[string]struct{}
	watchAll bool
	finals   map[string]jobqueue.Event
	order    []string // finals in arrival order, for eviction
	waiters  map[string][]chan waitResult

	nextID   atomic.Uint64
	events   chan jobqueue.Event
	dropped  atomic.Uint64
	dropping atomic.Bool // the last event was dropped; logged once per run
}

// waitResult ends a Wait: the final event, or why there will be none.
type waitResult struct {
	ev  jobqueue.Event
	err error
}

// call is a request waiting for its reply.
type call struct {
	ch     chan inMsg // buffered 1
	submit bool       // an ack makes the client watch the job
	jobID  string     // job watched through a subscribe
}

// inMsg is any server message but an event, decoded once.
type inMsg struct {
	Type    string             `json:"type"`
	ID      json.RawMessage    `json:"id"`
	Command string             `json:"command"`
	JobID   string             `json:"job_id"`
	Code    string             `json:"code"`
	Message string             `json:"message"`
	Job     *jobqueue.JobInfo  `json:"job"`
	Jobs    []jobqueue.JobInfo `json:"jobs"`
	Bridge  *Stats             `json:"bridge"`
	Queue   *jobqueue.Stats    `json:"queue"`
	System  json.RawMessage    `json:"system"`

	err error // set locally: the connection was lost
}

// ServerStats is the content of a `stats` message.
type ServerStats struct {
	Bridge Stats           `json:"bridge"`
	Queue  jobqueue.Stats  `json:"queue"`
	System json.RawMessage `json:"system,omitempty"` // Config.SystemStats's value, if any
}

// Dial connects to the Server at url (ws://host:port/path) and returns a
// Client. It blocks until the handshake is done or ctx ends, and fails if
// the first connection fails; later connection losses are repaired in the
// background (see WithReconnect). A refused upgrade (origin, token) is an
// error carrying the HTTP status.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	o := options{
		header:       make(http.Header),
		reconnect:    true,
		minBackoff:   100 * time.Millisecond,
		maxBackoff:   5 * time.Second,
		eventBuffer:  1024,
		maxMessage:   16 << 20,
		writeTimeout: DefaultWriteTimeout,
		dialTimeout:  10 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.reconnect {
		o.minBackoff = max(o.minBackoff, time.Millisecond)
		o.maxBackoff = max(o.maxBackoff, o.minBackoff)
	}
	c := &Client{
		url:     url,
		o:       o,
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
		pending: make(map[string]*call),
		watched: make(map[string]struct{}),
		finals:  make(map[string]jobqueue.Event),
		waiters: make(map[string][]chan waitResult),
		events:  make(chan jobqueue.Event, max(o.eventBuffer, 0)),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cc, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.cur = cc
	close(c.ready)
	c.wg.Add(1)
	go c.loop(cc)
	return c, nil
}

// clientConn is one connection of a Client.
type clientConn struct {
	c       *Client
	nc      net.Conn
	rd      msgReader
	out     sender
	closing atomic.Bool
	peer    *CloseError // close frame received; reader goroutine only
}

func (c *Client) connect(ctx context.Context) (*clientConn, error) {
	d := ws.Dialer{Timeout: c.o.dialTimeout}
	if len(c.o.header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(c.o.header)
	}
	nc, br, _, err := d.Dial(ctx, c.url)
	if err != nil {
		return nil, fmt.Errorf("wsbridge: dial %s: %w", c.url, err)
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	cc := &clientConn{c: c, nc: nc}
	cc.rd = msgReader{r: br, state: ws.StateClientSide, max: c.o.maxMessage, owner: cc}
	cc.out.init(nc, true, c.o.writeTimeout, 1<<16, &c.wg, cc)
	return cc, nil
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

// lost fails the calls in flight on cc.
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
		cc, err := c.connect(c.ctx)
		if err == nil {
			watched := c.resume(cc)
			if l := c.o.logger; l != nil {
				l.LogAttrs(context.Background(), slog.LevelInfo, "wsbridge: reconnected",
					slog.String("url", c.url), slog.Int("attempts", attempt), slog.Int("watched", watched))
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
	if all {
		c.sendAsync(&request{Command: cmdSubscribe}, "")
	}
	for _, id := range ids {
		c.sendAsync(&request{Command: cmdSubscribe, JobID: id}, id)
	}
	return len(ids)
}

// sendAsync sends r on the current connection with a request id whose
// reply the reader handles (an error for a subscribed job fails its
// waiters).
func (c *Client) sendAsync(r *request, jobID string) {
	cl := &call{ch: make(chan inMsg, 1), jobID: jobID}
	_ = c.send(r, cl)
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

// send registers cl (if not nil) under a fresh request id and queues r on
// the current connection. It does not wait for a connection.
func (c *Client) send(r *request, cl *call) error {
	c.mu.Lock()
	cc := c.cur
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if cc == nil {
		c.mu.Unlock()
		return ErrConnectionLost
	}
	var key string
	if cl != nil {
		key = `"c` + strconv.FormatUint(c.nextID.Add(1), 10) + `"`
		r.ID = json.RawMessage(key)
		c.pending[key] = cl
	}
	c.mu.Unlock()
	b, err := json.Marshal(r)
	if err == nil {
		err = cc.out.send(ws.OpText, b)
	}
	if err != nil {
		if cl != nil {
			c.mu.Lock()
			delete(c.pending, key)
			c.mu.Unlock()
		}
		if errors.Is(err, errSendClosed) || errors.Is(err, errQueueFull) {
			err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
		}
		return err
	}
	return nil
}

// do sends r and waits for its reply. While the Client is reconnecting it
// waits for the connection, until ctx ends.
func (c *Client) do(ctx context.Context, r *request, cl *call) (inMsg, error) {
	for {
		c.mu.Lock()
		ready, closed, stop := c.ready, c.closed, c.stopErr
		c.mu.Unlock()
		if closed {
			return inMsg{}, ErrClosed
		}
		if stop != nil {
			return inMsg{}, stop
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return inMsg{}, ctx.Err()
		case <-c.done:
			continue
		}
		err := c.send(r, cl)
		if errors.Is(err, ErrConnectionLost) && !c.o.reconnect {
			return inMsg{}, err
		}
		if errors.Is(err, ErrConnectionLost) {
			continue // lost before sending: nothing reached the server
		}
		if err != nil {
			return inMsg{}, err
		}
		break
	}
	select {
	case m := <-cl.ch:
		if m.err != nil {
			return m, m.err
		}
		if m.Type == msgError {
			return m, &ServerError{Code: m.Code, Message: m.Message}
		}
		return m, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, string(r.ID))
		c.mu.Unlock()
		return inMsg{}, ctx.Err()
	}
}

// Submit submits a job and returns its ID once the server has queued it.
// The Client then watches the job: its events arrive on Events and Wait
// returns its end. req.Payload is sent as the command's data; a negative
// req.Timeout (no timeout) cannot be expressed in the protocol and is
// refused with an error wrapping ErrProtocol. Errors from the queue are
// *ServerError values matching the jobqueue sentinels (ErrQueueFull,
// ErrNoHandler, ErrInvalidJob); ErrConnectionLost means the reply was lost
// and the job may or may not be queued.
func (c *Client) Submit(ctx context.Context, req jobqueue.JobRequest) (string, error) {
	if req.Timeout < 0 {
		return "", fmt.Errorf("%w: negative timeout", ErrProtocol)
	}
	r := &request{
		Command:     cmdSubmit,
		TaskType:    req.Type,
		Data:        req.Payload,
		MaxAttempts: req.MaxAttempts,
		UniqueKey:   req.UniqueKey,
		Metadata:    req.Metadata,
	}
	if req.Priority != 0 {
		r.Priority = json.RawMessage(strconv.Itoa(int(req.Priority)))
	}
	if req.Timeout > 0 {
		r.Timeout = json.RawMessage(strconv.Quote(req.Timeout.String()))
	}
	if !req.RunAt.IsZero() {
		r.RunAt = &req.RunAt
	}
	m, err := c.do(ctx, r, &call{ch: make(chan inMsg, 1), submit: true})
	if err != nil {
		return "", err
	}
	return m.JobID, nil
}

// Wait blocks until job id reaches a final state or ctx ends, and returns
// its final snapshot, like jobqueue.Queue.Wait. The error is nil for a
// succeeded job, a *jobqueue.JobError (matching jobqueue.ErrFailed or
// jobqueue.ErrCanceled with errors.Is) beside the snapshot for a failed or
// canceled one, ctx.Err() if ctx ends first, a *ServerError matching
// jobqueue.ErrNotFound for an unknown job (or one the server's retention
// dropped), ErrClosed after Close, and ErrConnectionLost once a connection
// is lost without reconnection (see WithReconnect).
//
// The snapshot is built from the job's final event, so that Wait costs no
// request beyond the subscription: it fills ID, Type, Priority, State,
// Attempts, Result (succeeded), LastError (failed, canceled) and
// FinishedAt, and leaves the rest zero (Payload, Metadata, SubmittedAt,
// Progress...); Get returns them while the server's retention keeps the
// job. A job the Client does not watch yet is subscribed to first; one that
// ended already returns at once, from the Client's memory of its last 4096
// final events or from the server.
func (c *Client) Wait(ctx context.Context, id string) (jobqueue.JobInfo, error) {
	c.mu.Lock()
	if ev, ok := c.finals[id]; ok {
		c.mu.Unlock()
		return finalInfo(&ev)
	}
	if c.stopErr != nil {
		err := c.stopErr
		c.mu.Unlock()
		return jobqueue.JobInfo{}, err
	}
	ch := make(chan waitResult, 1)
	c.waiters[id] = append(c.waiters[id], ch)
	_, watched := c.watched[id]
	c.mu.Unlock()
	if !watched {
		// A reply lost with the connection is not fatal: the job stays
		// watched and the reconnection subscribes to it again.
		err := c.subscribeJob(ctx, id)
		if err != nil && !(errors.Is(err, ErrConnectionLost) && c.o.reconnect) {
			c.dropWaiter(id, ch)
			return jobqueue.JobInfo{}, err
		}
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return jobqueue.JobInfo{}, r.err
		}
		return finalInfo(&r.ev)
	case <-ctx.Done():
		c.dropWaiter(id, ch)
		return jobqueue.JobInfo{}, ctx.Err()
	}
}

func (c *Client) dropWaiter(id string, ch chan waitResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[id]
	for i, x := range ws {
		if x == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, id)
	} else {
		c.waiters[id] = ws
	}
}

// finalInfo returns the snapshot that the final event ev describes, and the
// error Wait returns with it.
func finalInfo(ev *jobqueue.Event) (jobqueue.JobInfo, error) {
	info := jobqueue.JobInfo{
		Job:        jobqueue.Job{ID: ev.JobID, Type: ev.Type, Priority: ev.Priority},
		State:      ev.State,
		Attempts:   ev.Attempt,
		LastError:  ev.Error,
		Result:     ev.Result,
		FinishedAt: ev.Time,
	}
	switch ev.Kind {
	case jobqueue.EventSucceeded:
		info.State = jobqueue.StateSucceeded
	case jobqueue.EventFailed:
		info.State = jobqueue.StateFailed
	case jobqueue.EventCanceled:
		info.State = jobqueue.StateCanceled
	}
	if info.State == jobqueue.StateFailed || info.State == jobqueue.StateCanceled {
		return info, &jobqueue.JobError{ID: info.ID, State: info.State, Message: info.LastError}
	}
	return info, nil
}

// Cancel cancels job id (see jobqueue.Queue.Cancel). It returns once the
// server has accepted the request; the canceled event follows.
func (c *Client) Cancel(ctx context.Context, id string) error {
	_, err := c.do(ctx, &request{Command: cmdCancel, JobID: id}, &call{ch: make(chan inMsg, 1)})
	return err
}

// Get returns a snapshot of job id, every field filled (see
// jobqueue.Queue.Get). An unknown job, or one the server's retention
// dropped, is a *ServerError matching jobqueue.ErrNotFound.
func (c *Client) Get(ctx context.Context, id string) (jobqueue.JobInfo, error) {
	m, err := c.do(ctx, &request{Command: cmdStatus, JobID: id}, &call{ch: make(chan inMsg, 1)})
	if err != nil || m.Job == nil {
		return jobqueue.JobInfo{}, err
	}
	return *m.Job, nil
}

// List returns snapshots of the jobs matching f, newest first (at most
// 1000).
func (c *Client) List(ctx context.Context, f jobqueue.ListFilter) ([]jobqueue.JobInfo, error) {
	r := &request{Command: cmdList, TaskType: f.Type, Limit: f.Limit}
	if f.State != jobqueue.StateUnknown {
		r.State = f.State.String()
	}
	m, err := c.do(ctx, r, &call{ch: make(chan inMsg, 1)})
	return m.Jobs, err
}

// Subscribe watches job id, or every job if id is empty: its events arrive
// on Events, and the subscription is renewed after a reconnection. For one
// job it returns once the server has answered; a job that ended already
// delivers its final event at once.
func (c *Client) Subscribe(ctx context.Context, id string) error {
	if id != "" {
		return c.subscribeJob(ctx, id)
	}
	c.mu.Lock()
	c.watchAll = true
	c.mu.Unlock()
	_, err := c.do(ctx, &request{Command: cmdSubscribe}, &call{ch: make(chan inMsg, 1)})
	return err
}

func (c *Client) subscribeJob(ctx context.Context, id string) error {
	c.mu.Lock()
	c.watched[id] = struct{}{}
	c.mu.Unlock()
	_, err := c.do(ctx, &request{Command: cmdSubscribe, JobID: id}, &call{ch: make(chan inMsg, 1), jobID: id})
	if err != nil && !errors.Is(err, ErrConnectionLost) {
		c.mu.Lock()
		delete(c.watched, id)
		c.mu.Unlock()
	}
	return err
}

// Unsubscribe stops watching job id, or every job if id is empty (the jobs
// this Client submitted or subscribed to one by one stay watched: it
// subscribes to each of them again, since the server does not follow jobs
// one by one for a client that watches them all).
func (c *Client) Unsubscribe(ctx context.Context, id string) error {
	c.mu.Lock()
	if id == "" {
		c.watchAll = false
	} else {
		delete(c.watched, id)
	}
	c.mu.Unlock()
	_, err := c.do(ctx, &request{Command: cmdUnsubscribe, JobID: id}, &call{ch: make(chan inMsg, 1)})
	if err == nil && id == "" {
		c.resync()
	}
	return err
}

// Stats returns the server's statistics.
func (c *Client) Stats(ctx context.Context) (ServerStats, error) {
	m, err := c.do(ctx, &request{Command: cmdStats}, &call{ch: make(chan inMsg, 1)})
	var st ServerStats
	if m.Bridge != nil {
		st.Bridge = *m.Bridge
	}
	if m.Queue != nil {
		st.Queue = *m.Queue
	}
	st.System = m.System
	return st, err
}

// Ping sends a ping command and returns the round-trip time.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := c.do(ctx, &request{Command: cmdPing}, &call{ch: make(chan inMsg, 1)})
	return time.Since(start), err
}

// Events returns the channel of the events of the watched jobs. The Client
// never blocks on it: when it is full, events are dropped and counted by
// Dropped (Wait does not depend on it). It is closed when the Client stops.
func (c *Client) Events() <-chan jobqueue.Event { return c.events }

// Dropped returns the number of events dropped because Events was full
// (WithLogger logs the first of each run of them).
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// Close sends a close frame, waits for the server's reply (at most two
// seconds after the frame is written, and the write itself at most 10
// seconds), and stops the Client's goroutines; pending calls fail with
// ErrConnectionLost or ErrClosed. It is idempotent and always returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	cc := c.cur
	c.mu.Unlock()
	c.cancel()
	if cc != nil {
		cc.closing.Store(true)
		if !cc.out.close(ws.StatusNormalClosure, "", false) {
			cc.nc.Close()
		}
	}
	<-c.done
	c.wg.Wait()
	return nil
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
// watch bookkeeping, Wait and Events.
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
		delete(c.pending, string(m.ID))
		if cl != nil {
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
	// A message type this client does not know: ignore it.
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

// resync subscribes again to every watched job, so that jobs that ended
// meanwhile deliver their final event: after the server reported lost
// events, and after Unsubscribe of every job.
func (c *Client) resync() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.watched))
	for id := range c.watched {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.sendAsync(&request{Command: cmdSubscribe, JobID: id}, id)
	}
}

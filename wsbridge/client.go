package wsbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
	"golang.org/x/sync/semaphore"
)

// maxFinals bounds the final events a Client keeps for Wait.
const maxFinals = 4096

// defaultWindow is a Client's bound on its commands in flight when neither
// WithMaxInFlight nor the server's welcome sets one.
const defaultWindow = 32

// Client is a Go client of a Server. It sends commands, matches replies to
// them by request id, and follows the jobs it submits or subscribes to: their
// events arrive on Events, and Wait returns their final state.
//
// A Client acts for the principal the server admitted it as (Principal):
// the one its token names (WithToken), or an anonymous principal of its
// own. It sees and acts on that principal's jobs only; another's job is
// not found, exactly like an unknown one. An anonymous principal keeps its
// jobs across connections through the resume credential of the server's
// welcome message, which the Client presents on every reconnection, and
// across restarts of the program through WithResume.
//
// Flow control: a Client has at most a window of commands in flight (sent
// and not yet answered), by default the server's own limit (see
// WithMaxInFlight); every call beyond it blocks until a reply frees a
// place or its ctx ends, and the calls waiting go in the order they came.
// (A Wait for a job the Client watches already sends nothing and takes no
// place.)
// So any number of goroutines may share one Client: the server, which
// stops reading a principal's connections at its limit, never has to slow
// this one down, and its replies never pile up.
//
// Every method that talks to the server blocks until the server's reply
// arrives or ctx ends, and then returns ctx.Err() (the command may have
// reached the server already); while the Client reconnects, it waits for
// the new connection. Each call costs one JSON message each way.
//
// When the connection drops, the Client reconnects (see WithReconnect) as
// the same principal and subscribes again to the jobs it was watching, so
// that Wait still returns the result of a job that finished meanwhile
// (within the server's retention). A call whose command was sent and whose
// reply was lost with the connection sends it again on the next
// connection, within its ctx, since every command may be repeated: Submit
// names its job (see Submit) so that a repeat returns the job the first
// created, Cancel of a job canceled meanwhile returns nil, and Get, List,
// Subscribe, Unsubscribe, Stats and Ping change nothing or set a state.
// With reconnecting off, such a call fails with ErrConnectionLost.
//
// A Client runs one reader goroutine, a writer goroutine while it has
// something to send, and one after each reconnection while it subscribes
// again; Close stops them. Its methods are safe for concurrent use.
type Client struct {
	url string
	o   options

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // loop, writers and resubscribers
	done   chan struct{}  // closed when loop has exited

	// window holds a place for each command in flight: taken before it is
	// sent, given back when its reply arrives or its connection is lost
	// (each entry of pending holds one). Set by Dial.
	window  *semaphore.Weighted
	waiting atomic.Int64 // calls waiting for a place

	mu        sync.Mutex
	cur       *clientConn   // nil while disconnected
	ready     chan struct{} // closed while cur is set
	closed    bool
	stopErr   error  // why loop stopped
	principal string // of the latest welcome
	cred      string // resume credential presented on each connection
	pending   map[string]*call
	watched   map[string]struct{}
	watchAll  bool
	finals    map[string]jobqueue.Event
	order     []string // finals in arrival order, for eviction
	waiters   map[string][]chan waitResult

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
	ch      chan inMsg // buffered 1
	submit  bool       // an ack makes the client watch the job
	jobID   string     // job watched through a subscribe
	sent    time.Time  // when the command was last sent; zero if never
	resends int        // times it was sent again after a lost connection
}

// inMsg is any server message but an event, decoded once.
type inMsg struct {
	Type       string             `json:"type"`
	ID         json.RawMessage    `json:"id"`
	Command    string             `json:"command"`
	JobID      string             `json:"job_id"`
	Code       string             `json:"code"`
	Message    string             `json:"message"`
	Job        *jobqueue.JobInfo  `json:"job"`
	Jobs       []jobqueue.JobInfo `json:"jobs"`
	NextCursor string             `json:"next_cursor"`
	Bridge     *Stats             `json:"bridge"`
	Queue      *jobqueue.Stats    `json:"queue"`
	System     json.RawMessage    `json:"system"`

	err error // set locally: the connection was lost
}

// ServerStats is the content of a `stats` message.
type ServerStats struct {
	Bridge Stats           `json:"bridge"`
	Queue  jobqueue.Stats  `json:"queue"`
	System json.RawMessage `json:"system,omitempty"` // Config.SystemStats's value, if any
}

// Dial connects to the Server at url (ws://host:port/path) and returns a
// Client. It blocks until the handshake is done and the server's welcome
// message has arrived, or ctx ends, and fails if the first connection
// fails; later connection losses are repaired in the background (see
// WithReconnect). A refused upgrade (host, origin, token) is an error
// carrying the HTTP status.
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
		cred:    o.resume,
		pending: make(map[string]*call),
		watched: make(map[string]struct{}),
		finals:  make(map[string]jobqueue.Event),
		waiters: make(map[string][]chan waitResult),
		events:  make(chan jobqueue.Event, max(o.eventBuffer, 0)),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cc, w, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		c.wg.Wait()
		return nil, err
	}
	c.adopt(&w)
	n := o.maxInFlight
	if n <= 0 {
		n = w.Quota.MaxInFlight
	}
	if n <= 0 {
		n = defaultWindow
	}
	c.window = semaphore.NewWeighted(int64(n))
	c.cur = cc
	close(c.ready)
	c.wg.Add(1)
	go c.loop(cc)
	return c, nil
}

// Principal returns the name of the principal the server admitted the
// Client as, from the welcome message of its latest connection: the owner
// of the jobs it submits (jobqueue.Job.Owner), the one to pass to
// jobqueue.ListFilter.Owner on the server's side.
func (c *Client) Principal() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.principal
}

// ResumeCredential returns the credential the Client presents when it
// connects: the one the server issued to its anonymous principal, or
// WithResume's until the server issued one. It is empty for a principal
// named by a token, which needs none. Pass it to WithResume to come back
// as the same principal from another Client, in this process or a later
// one; keep it secret, like a token.
func (c *Client) ResumeCredential() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cred
}

// acquire takes a place in the window, waiting in line while there is
// none, until ctx ends (it returns ctx.Err()) or the Client is closed
// (ErrClosed).
func (c *Client) acquire(ctx context.Context) error {
	if c.window.TryAcquire(1) {
		return nil
	}
	c.waiting.Add(1)
	defer c.waiting.Add(-1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	if err := c.window.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrClosed
	}
	return nil
}

// release gives back a place in the window. (A Client built by hand for a
// test of message handling has no window.)
func (c *Client) release() {
	if c.window != nil {
		c.window.Release(1)
	}
}

// conn returns the current connection, waiting for one while the Client
// reconnects, until ctx ends.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	for {
		c.mu.Lock()
		cc, ready, closed, stop := c.cur, c.ready, c.closed, c.stopErr
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case stop != nil:
			return nil, stop
		case cc != nil:
			return cc, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
		}
	}
}

// send registers cl, which holds a place in the window, under a fresh
// request id and queues r on cc; if cc is not the current connection
// any more, or r cannot be queued, it gives the place back and returns an
// error wrapping ErrConnectionLost (nothing was sent). It does not wait.
func (c *Client) send(cc *clientConn, r *request, cl *call) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		c.release()
		return ErrClosed
	case c.cur != cc:
		c.mu.Unlock()
		c.release()
		return ErrConnectionLost
	}
	key := `"c` + strconv.FormatUint(c.nextID.Add(1), 10) + `"`
	r.ID = json.RawMessage(key)
	c.pending[key] = cl
	c.mu.Unlock()
	b, err := json.Marshal(r)
	if err == nil {
		err = cc.out.send(ws.OpText, b)
	}
	if err != nil {
		c.mu.Lock()
		if c.pending[key] == cl {
			delete(c.pending, key)
			c.release()
		}
		c.mu.Unlock()
		if errors.Is(err, errSendClosed) || errors.Is(err, errQueueFull) {
			err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
		}
		return err
	}
	cl.sent = time.Now()
	return nil
}

// do sends r once the window has room and a connection is up, and waits
// for its reply. A reply lost with the connection sends r again on the
// next one, unless reconnecting is off. If ctx ends first, the command's
// place in the window stays taken until its reply arrives, since the
// server counts it until then.
func (c *Client) do(ctx context.Context, r *request, cl *call) (inMsg, error) {
	for {
		if err := c.acquire(ctx); err != nil {
			return inMsg{}, err
		}
		cc, err := c.conn(ctx)
		if err != nil {
			c.release()
			return inMsg{}, err
		}
		if err := c.send(cc, r, cl); err != nil {
			if errors.Is(err, ErrConnectionLost) && c.o.reconnect {
				continue // lost before sending: nothing reached the server
			}
			return inMsg{}, err
		}
		select {
		case m := <-cl.ch:
			if m.err != nil {
				if errors.Is(m.err, ErrConnectionLost) && c.o.reconnect {
					cl.resends++
					continue
				}
				return m, m.err
			}
			if m.Type == msgError {
				return m, &ServerError{Code: m.Code, Message: m.Message}
			}
			return m, nil
		case <-ctx.Done():
			return inMsg{}, ctx.Err()
		}
	}
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
// seconds), and stops the Client's goroutines; pending calls, and calls
// waiting for a place in the window, fail with ErrClosed or
// ErrConnectionLost. It is idempotent and always returns nil.
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

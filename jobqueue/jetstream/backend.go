package jetstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Sentinel errors of this package; match them with errors.Is.
var (
	// ErrLeaseLost is returned when settling a lease whose job JetStream
	// has meanwhile delivered to another worker (the lease expired: the
	// process stalled longer than AckWait). The other delivery owns the
	// job; this attempt's outcome is dropped.
	ErrLeaseLost = errors.New("jetstream: lease lost")
	// ErrBadMessage is the cause of a job whose stored message does not
	// decode: it is dead-lettered and terminated instead of delivered.
	ErrBadMessage = errors.New("jetstream: undecodable job message")
	// ErrNotConnected is returned by Get, List, Stats and DeadLetters while
	// the connection to the server is down (the client reconnects on its
	// own), rather than waiting for the request timeout, and by a read whose
	// connection dropped under it. It matches jobqueue.ErrUnavailable too.
	ErrNotConnected error = notConnected{}
)

// notConnected is ErrNotConnected: a jobqueue.ErrUnavailable.
type notConnected struct{}

func (notConnected) Error() string { return "jetstream: not connected to the server" }

// Is reports that ErrNotConnected is a jobqueue.ErrUnavailable.
func (notConnected) Is(target error) bool { return target == jobqueue.ErrUnavailable }

// doneEnvelope is the room the DONE stream gives, beyond MaxBytes, to the
// envelope of a record: everything but its payload and result.
const doneEnvelope = 512

// How long final records stay in the state bucket (the dedicated DONE
// stream keeps them for retention); cancels of jobs that were never leased
// keep theirs longer, so a delivery already in flight sees the cancel.
const (
	settleTTL = time.Second
	cancelTTL = time.Minute
)

// Backend is the jobqueue.Backend on NATS JetStream. Create it with
// Embedded, Connect or Server.Backend and pass it as jobqueue.Config.Backend;
// the Queue opens and closes it. It also implements jobqueue.Notifier
// (cancels and events cross processes), jobqueue.LeaseKeeper (leases
// expire after AckWait unless extended) and jobqueue.UsageReporter (the
// owners' usage counters, see the package comment).
//
// It runs four goroutines from Open to Close: the dispatcher that pulls
// jobs for waiting workers, the signal sender, the event sender, and the
// scheduler that releases delayed jobs; plus the NATS client's own.
type Backend struct {
	o      options
	n      names
	srv    *Server // owned server (Embedded), shut down by Close
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *slog.Logger // o.logger
	watch  *connWatch   // nil without WithLogger
	events *connEvents  // disconnects and reconnects of nc

	mu     sync.Mutex
	opened bool
	closed bool
	cfg    jobqueue.BackendConfig
	hooks  atomic.Pointer[jobqueue.Hooks]

	st     *store // the live handles, set by Open
	schedC jetstream.Consumer
	dial   func() (*nats.Conn, error) // a new connection, for reads after Close
	subs   []*nats.Subscription

	ctx     context.Context // canceled by Close
	stop    context.CancelFunc
	closing chan struct{}
	wg      sync.WaitGroup

	disp      dispatcher
	fin       finisher
	led       ledger
	enqueuing sync.Map // job ID -> chan struct{} closed once OnQueued ran
	remote    atomic.Uint32
	ring      chan struct{}
	evMu      sync.Mutex
	evBuf     []byte // encoded events waiting for the event sender, one per line
	evKick    chan struct{}
	evDrop    atomic.Bool // events are being dropped (buffer full); logged once
}

var (
	_ jobqueue.Backend       = (*Backend)(nil)
	_ jobqueue.Notifier      = (*Backend)(nil)
	_ jobqueue.LeaseKeeper   = (*Backend)(nil)
	_ jobqueue.UsageReporter = (*Backend)(nil)
	_ jobqueue.Resyncer      = (*Backend)(nil)
)

func newBackend(nc *nats.Conn, o options, dial func() (*nats.Conn, error), watch *connWatch, events *connEvents) (*Backend, error) {
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.timeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b := &Backend{o: o, n: newNames(o.name), nc: nc, js: js, log: o.logger, watch: watch, events: events, dial: dial,
		closing: make(chan struct{}), ring: make(chan struct{}, 1)}
	b.ctx, b.stop = context.WithCancel(context.Background())
	b.disp.init(b)
	b.led.init(b)
	b.evKick = make(chan struct{}, 1)
	return b, nil
}

// ClientURL returns the URL of the server the backend is connected to, for
// other processes to Connect to; for an embedded server that does not
// listen (no WithListen) it returns "".
func (b *Backend) ClientURL() string {
	if b.srv != nil {
		return b.srv.ClientURL()
	}
	return b.nc.ConnectedUrl()
}

// LeaseDuration implements jobqueue.LeaseKeeper: the consumers' AckWait.
func (b *Backend) LeaseDuration() time.Duration { return b.o.ackWait }

// Resync implements jobqueue.Resyncer: the channel closes when the
// connection to the server comes back after a disconnect (a restart or a
// failover), when events published meanwhile may have been lost.
func (b *Backend) Resync() <-chan struct{} { return b.events.reconnected() }

// ResyncInterval implements jobqueue.Resyncer: a waiter re-reads its job's
// state every AckWait, clamped to between 1 s and 5 s (a lost event is
// noticed within that; a job whose lost acknowledgement makes it run
// again ends at most AckWait later anyway).
func (b *Backend) ResyncInterval() time.Duration {
	return min(max(b.o.ackWait, time.Second), 5*time.Second)
}

// Notify implements jobqueue.Notifier.
func (b *Backend) Notify(h jobqueue.Hooks) { b.hooks.Store(&h) }

// Open implements jobqueue.Backend: it creates or updates the streams, the
// state bucket and the consumers (idempotent, so every process of a queue
// runs it), subscribes to the cancel, event and signal subjects and starts
// the backend's goroutines. It blocks for a few requests to the server.
func (b *Backend) Open(cfg jobqueue.BackendConfig) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return jobqueue.ErrClosed
	}
	if b.opened {
		return fmt.Errorf("jetstream: backend opened twice")
	}
	if !validID(cfg.WorkerTag) {
		return fmt.Errorf("jetstream: invalid worker tag %q", cfg.WorkerTag)
	}
	b.cfg = cfg
	ctx, cancel := context.WithTimeout(b.ctx, 4*b.o.timeout)
	defer cancel()
	if err := b.provision(ctx); err != nil {
		return fmt.Errorf("jetstream: provisioning %s: %w", b.o.name, err)
	}
	if err := b.fin.start(b); err != nil {
		return fmt.Errorf("jetstream: subscribing: %w", err)
	}
	if err := b.subscribe(); err != nil {
		_ = b.fin.sub.Unsubscribe()
		for _, s := range b.subs {
			_ = s.Unsubscribe()
		}
		return fmt.Errorf("jetstream: subscribing: %w", err)
	}
	b.opened = true
	b.wg.Add(4)
	go b.disp.loop()
	go b.ringer()
	go b.scheduler()
	go b.eventSender()
	b.log.Info("jetstream backend opened", "url", b.nc.ConnectedUrlRedacted(), "worker", cfg.WorkerTag)
	return nil
}

func (b *Backend) provision(ctx context.Context) error {
	r := b.o.replicas
	// Direct gets are answered by any replica, a follower that has not yet
	// applied the latest writes included: on a replicated cluster a Get
	// right after Submit could say ErrNotFound, and a compare-and-set
	// could start from an old revision. With one replica the only copy
	// answers; with more, reads go through the stream leader's API, which
	// sees every write it acknowledged.
	direct := r == 1
	st := &store{n: b.n, nc: b.nc, js: b.js}
	var err error
	st.jobs, err = b.createStream(ctx, jetstream.StreamConfig{
		Name:        b.n.jobs,
		Description: "corework jobs ready or leased, one subject per priority level and job",
		Subjects:    []string{b.n.prefix + ".q.*.*"},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     int64(b.cfg.Capacity),
		Storage:     jetstream.FileStorage,
		Replicas:    r,
		AllowDirect: direct,
		Duplicates:  2 * time.Minute,
	})
	if err != nil {
		return err
	}
	st.sched, err = b.createStream(ctx, jetstream.StreamConfig{
		Name:        b.n.sched,
		Description: "corework delayed jobs waiting for their RunAt",
		Subjects:    []string{b.n.prefix + ".s.*"},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     int64(b.cfg.Capacity),
		Storage:     jetstream.FileStorage,
		Replicas:    r,
		AllowDirect: direct,
	})
	if err != nil {
		return err
	}
	// The Queue passes the configuration complete (jobqueue applies the
	// defaults); a zero bound, which only a direct Open can pass, is no
	// bound.
	maxJobs, maxAge := int64(b.cfg.Retention.MaxJobs), b.cfg.Retention.MaxAge
	switch {
	case maxAge < 0:
		maxAge = 0 // no age limit
	case maxAge > 0 && maxAge < 100*time.Millisecond:
		maxAge = 100 * time.Millisecond // JetStream's smallest MaxAge
	}
	st.keepDone = maxJobs >= 0
	switch {
	case maxJobs == 0:
		maxJobs = -1 // no bound
	case maxJobs < 0:
		maxJobs = 1 // none kept: the stream is not used
	}
	// The finished jobs' records are bounded in bytes by MaxBytes, plus
	// room for one record's envelope (its fields other than the payload
	// and the result), so that the newest record is kept whenever its
	// payload and result fit; JetStream drops the oldest records to stay
	// under it.
	doneBytes := int64(-1)
	if b.cfg.MaxBytes > 0 {
		doneBytes = b.cfg.MaxBytes + doneEnvelope
	}
	st.done, err = b.createStream(ctx, jetstream.StreamConfig{
		Name:              b.n.done,
		Description:       "corework finished jobs kept for Get, List and Wait",
		Subjects:          []string{b.n.prefix + ".done.*"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgs:           maxJobs,
		MaxBytes:          doneBytes,
		MaxAge:            maxAge,
		MaxMsgsPerSubject: 1,
		Storage:           jetstream.FileStorage,
		Replicas:          r,
		AllowDirect:       direct,
	})
	if err != nil {
		return err
	}
	st.dead, err = b.createStream(ctx, jetstream.StreamConfig{
		Name:        b.n.dead,
		Description: "corework dead letters: jobs that failed for good",
		Subjects:    []string{b.n.prefix + ".dead.*"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     int64(b.o.deadMax),
		MaxAge:      b.o.deadAge,
		Storage:     jetstream.FileStorage,
		Replicas:    r,
		AllowDirect: direct,
	})
	if err != nil {
		return err
	}
	// The state bucket is a KV bucket whose stream is made here rather
	// than by CreateKeyValue: per-message TTLs on, but no marker left when
	// one expires (the bucket's only deletions are expiries and purges of
	// keys nobody watches), which saves two writes per finished job.
	st.kvs, err = b.createStream(ctx, jetstream.StreamConfig{
		Name:              b.n.kvStream(),
		Description:       "corework state of leased jobs and unique keys (KV bucket " + b.n.bucket + ")",
		Subjects:          []string{"$KV." + b.n.bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          r,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		AllowDirect:       direct,
		Discard:           jetstream.DiscardNew,
		AllowMsgTTL:       true,
	})
	if err != nil {
		return err
	}
	if err = retrying(ctx, b.attemptTimeout(), func(ctx context.Context) error {
		_, err := b.js.KeyValue(ctx, b.n.bucket)
		return err
	}); err != nil {
		return err
	}
	for p := range st.levels {
		st.levels[p], err = b.createConsumer(ctx, st.jobs, jetstream.ConsumerConfig{
			Durable:       levelConsumer(p),
			Description:   fmt.Sprintf("corework workers, priority level %d", p),
			FilterSubject: b.n.levelFilter(p),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       b.o.ackWait,
			MaxDeliver:    -1,
			MaxAckPending: -1,
			Replicas:      r,
		})
		if err != nil {
			return err
		}
	}
	b.schedC, err = b.createConsumer(ctx, st.sched, jetstream.ConsumerConfig{
		Durable:       "scheduler",
		Description:   "corework scheduler releasing delayed jobs",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.o.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: -1,
		Replicas:      r,
	})
	if err != nil {
		return err
	}
	b.st = st
	return nil
}

func levelConsumer(p int) string { return fmt.Sprintf("level%d", p) }

// view returns the store to read from: the live one, or after Close one on
// a new connection, so Get, List and Stats still answer while the server
// runs. The context it returns is ctx, ended too when the live connection
// changes: a request in flight when the connection drops has lost its reply
// and would otherwise wait for ctx's deadline (a Wait polling its job would
// then outlive the outage by that much). done releases what view took and
// turns the error of a read cut that way into one wrapping ErrNotConnected.
func (b *Backend) view(ctx context.Context) (context.Context, *store, func(*error), error) {
	b.mu.Lock()
	closed, st := b.closed, b.st
	b.mu.Unlock()
	if st == nil {
		return ctx, nil, nil, jobqueue.ErrClosed
	}
	if !closed {
		if !b.nc.IsConnected() {
			return ctx, nil, nil, ErrNotConnected
		}
		rctx, cancel := context.WithCancelCause(ctx)
		stop := context.AfterFunc(b.events.current(), func() { cancel(ErrNotConnected) })
		return rctx, st, func(err *error) {
			stop()
			if *err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), ErrNotConnected) {
				*err = fmt.Errorf("%w: the connection changed during the read (%v)", ErrNotConnected, *err)
			}
			cancel(nil)
		}, nil
	}
	nc, err := b.dial()
	if err != nil {
		return ctx, nil, nil, fmt.Errorf("%w: reconnecting to read: %v", jobqueue.ErrClosed, err)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(b.o.timeout))
	if err == nil {
		st, err = lookupStore(ctx, nc, js, b.n, st.keepDone)
	}
	if err != nil {
		nc.Close()
		return ctx, nil, nil, fmt.Errorf("jetstream: reading after close: %w", err)
	}
	return ctx, st, func(*error) { nc.Close() }, nil
}

// lookupStore binds the handles of existing streams and consumers.
func lookupStore(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, n names, keepDone bool) (*store, error) {
	st := &store{n: n, nc: nc, js: js, keepDone: keepDone}
	var err error
	for _, x := range []struct {
		s    *jetstream.Stream
		name string
	}{{&st.jobs, n.jobs}, {&st.sched, n.sched}, {&st.done, n.done}, {&st.dead, n.dead}, {&st.kvs, n.kvStream()}} {
		if *x.s, err = js.Stream(ctx, x.name); err != nil {
			return nil, err
		}
	}
	for p := range st.levels {
		if st.levels[p], err = st.jobs.Consumer(ctx, levelConsumer(p)); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (b *Backend) subscribe() error {
	s, err := b.nc.Subscribe(b.n.cancelSubject(b.cfg.WorkerTag), func(m *nats.Msg) {
		if h := b.hooks.Load(); h != nil && h.CancelRunning != nil && validID(string(m.Data)) {
			h.CancelRunning(string(m.Data))
		}
	})
	if err != nil {
		return err
	}
	b.subs = append(b.subs, s)
	s, err = b.nc.Subscribe(b.n.eventSubject(), func(m *nats.Msg) {
		h := b.hooks.Load()
		if h == nil || h.Publish == nil {
			return
		}
		for data := m.Data; len(data) > 0; {
			line := data
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				line, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			if ev, err := decodeEvent(line); err == nil {
				h.Publish(ev)
			}
		}
	})
	if err != nil {
		return err
	}
	b.subs = append(b.subs, s)
	s, err = b.nc.Subscribe(b.n.bellSubject(), func(m *nats.Msg) {
		if len(m.Data) == 2 {
			b.disp.bell(binary.LittleEndian.Uint16(m.Data))
		}
	})
	if err != nil {
		return err
	}
	b.subs = append(b.subs, s)
	return b.nc.Flush()
}

// Close implements jobqueue.Backend. It stops the backend's goroutines and
// waits for them, fails blocked Fetch and Enqueue calls with
// jobqueue.ErrClosed, closes the connection and, for Embedded, shuts the
// server down. Leases not settled by then are redelivered after AckWait.
// It is idempotent.
func (b *Backend) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	opened := b.opened
	close(b.closing)
	b.stop()
	b.mu.Unlock()
	if opened {
		b.wg.Wait() // the goroutines stop within one request timeout
		b.fin.drain(ctx)
	}
	for _, s := range b.subs {
		_ = s.Unsubscribe()
	}
	if b.nc.IsConnected() {
		_ = b.nc.FlushTimeout(time.Second)
	}
	b.watch.closingConn()
	b.nc.Close()
	if b.srv != nil {
		b.srv.Shutdown()
	}
	return nil
}

func (b *Backend) isClosed() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

// reqCtx bounds a request made for a caller: the caller's context with the
// request timeout, or the backend's own for settling (leases must settle
// even when the caller's context is done).
func (b *Backend) reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(b.ctx), b.o.timeout)
}

// ringer sends the new-job signal to the other processes: one small
// message carrying a mask of levels, however many jobs were stored since
// the last one. Once a second it also resends unconfirmed final records.
func (b *Backend) ringer() {
	defer b.wg.Done()
	var buf [2]byte
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-b.ring:
		case <-tick.C:
			b.fin.expire()
			continue
		case <-b.closing:
			return
		}
		if m := uint16(b.remote.Swap(0)); m != 0 {
			binary.LittleEndian.PutUint16(buf[:], m)
			_ = b.nc.Publish(b.n.bellSubject(), buf[:])
		}
	}
}

// signal tells this process's dispatcher and every other process that
// levels in mask may have jobs ready.
func (b *Backend) signal(mask uint16) {
	b.disp.bell(mask)
	if uint16(b.remote.Or(uint32(mask)))&mask != mask {
		select {
		case b.ring <- struct{}{}:
		default:
		}
	}
}

// emit sends an event to the Queues of other processes.
// Events for other processes are sent in batches: each message on the
// event subject holds the events of up to a millisecond, one JSON object
// per line, in the order they happened. One message per event would cost
// the server about a tenth of the work of a job.
const (
	eventLinger   = time.Millisecond
	eventBatchMax = 256 << 10 // bytes per message
	eventBufMax   = 8 << 20   // bytes waiting; more are dropped (the server is away)
)

func (b *Backend) emit(ev *jobqueue.Event) {
	b.evMu.Lock()
	n0 := len(b.evBuf)
	first := n0 == 0
	buf, err := appendEvent(b.evBuf, ev)
	dropped := false
	switch {
	case err != nil:
		buf = buf[:n0]
	case len(buf) < eventBufMax:
		buf = append(buf, '\n')
	default:
		buf, dropped = buf[:n0], true
	}
	b.evBuf = buf
	b.evMu.Unlock()
	switch {
	case err != nil:
		b.log.Error("an event does not encode; other processes do not see it", "job", ev.JobID, "event", ev.Kind.String(), "err", err)
	case dropped && !b.evDrop.Swap(true):
		b.log.Warn("dropping events for other processes: buffer full while the server is away", "buffer_bytes", eventBufMax)
	case !dropped && b.evDrop.Load():
		b.evDrop.Store(false)
	}
	if first && len(buf) > 0 {
		select {
		case b.evKick <- struct{}{}:
		default:
		}
	}
}

// eventSender publishes the buffered events, lingering a moment after the
// first so that one message carries many.
func (b *Backend) eventSender() {
	defer b.wg.Done()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	var spare []byte
	for {
		select {
		case <-b.evKick:
		case <-b.closing:
			b.sendEvents(nil)
			return
		}
		linger.Reset(eventLinger)
		select {
		case <-linger.C:
		case <-b.closing:
		}
		spare = b.sendEvents(spare)
	}
}

// sendEvents publishes what is buffered and returns the emptied buffer
// for reuse.
func (b *Backend) sendEvents(spare []byte) []byte {
	b.evMu.Lock()
	batch := b.evBuf
	b.evBuf = spare[:0]
	b.evMu.Unlock()
	for len(batch) > 0 {
		n := len(batch)
		if n > eventBatchMax {
			n = bytes.LastIndexByte(batch[:eventBatchMax], '\n') + 1
			if n <= 0 {
				n = bytes.IndexByte(batch, '\n') + 1
			}
		}
		_ = b.nc.Publish(b.n.eventSubject(), batch[:n])
		batch = batch[n:]
	}
	if cap(batch) > eventBufMax/4 {
		return nil
	}
	return batch[:0]
}

// emitAll sends an event produced by the backend itself (not through a
// lease the Queue holds) to this Queue and to the others.
func (b *Backend) emitAll(ev *jobqueue.Event) {
	if h := b.hooks.Load(); h != nil && h.Publish != nil {
		h.Publish(*ev)
	}
	b.emit(ev)
}

// apiCode returns the JetStream error code of err, or 0.
func apiCode(err error) jetstream.ErrorCode {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode
	}
	return 0
}

func isWrongSeq(err error) bool {
	c := apiCode(err)
	return c == jetstream.JSErrCodeStreamWrongLastSequence || c == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// isFull reports a store refused for the stream's MaxMsgs (the capacity).
func isFull(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && strings.Contains(ae.Description, "maximum messages")
}

func isJobNotFound(err error) bool { return errors.Is(err, jobqueue.ErrNotFound) }

func isNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrKeyNotFound) ||
		apiCode(err) == jetstream.JSErrCodeMessageNotFound
}

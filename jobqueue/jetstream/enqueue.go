package jetstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Enqueue implements jobqueue.Backend. It stores the job as one message:
// on its priority level's subject of the jobs stream, or on the scheduled
// subject if RunAt is in the future, with the job ID as Nats-Msg-Id so a
// repeated store is dropped by the server. The streams' MaxMsgs is the
// queue's Capacity (scheduled jobs have a capacity of their own): a full
// stream refuses the store, which is ErrQueueFull, or with BlockOnFull a
// retry every few milliseconds until ctx ends.
//
// In the order jobqueue.Backend documents: an ID that names a job still
// kept returns that ID (same owner) or ErrInvalidJob (another owner); a
// UniqueKey is claimed with a compare-and-set on the key's entry in the
// state bucket (per owner), which holds the ID of the job that owns it
// until that job finishes; then the job's room is reserved on the usage
// counters (see ledger.go): its owner's, checked against quota, and the
// byte budget (BackendConfig.MaxBytes) for a job with a payload, which
// like Capacity is ErrQueueFull or, with BlockOnFull, a wait. A store
// whose reply does not come is repeated (the ID makes that harmless) until
// the request timeout, and one cut off by a disconnect is sent again as
// soon as the connection is back (see store); if the reply never comes the
// error says the outcome is unknown, and the job's reservations are kept
// (see the package comment on the counters' consistency).
//
// Costs: one request to store the job, plus one for a UniqueKey, one
// shared write of the owner's counter for a job with an Owner, and one of
// the byte budget for a job with a payload (writes made at the same time
// in one process are shared), plus a signal to idle workers. An ID the
// Queue made for this very submission is new by construction and is not
// looked up; any other (a caller's, or one from Queue.NewID) costs a
// lookup of four reads first.
func (b *Backend) Enqueue(ctx context.Context, job *jobqueue.Job, quota jobqueue.Quota) (string, error) {
	if b.isClosed() {
		return "", jobqueue.ErrClosed
	}
	if !validID(job.ID) {
		return "", fmt.Errorf("%w: id %q is not a subject token", jobqueue.ErrInvalidJob, job.ID)
	}
	if !job.Priority.Valid() || job.Type == "" {
		return "", fmt.Errorf("%w: type %q priority %d", jobqueue.ErrInvalidJob, job.Type, job.Priority)
	}
	lookedUp := !freshID(job.ID, job.SubmittedAt)
	if lookedUp {
		if id, done, err := b.kept(ctx, job, false); done {
			return id, err
		}
	}
	data, err := json.Marshal(job)
	if err != nil {
		return "", fmt.Errorf("%w: %v", jobqueue.ErrInvalidJob, err)
	}
	var uniqueRev uint64
	if job.UniqueKey != "" {
		other, rev, err := b.claimUnique(ctx, job)
		if err != nil || other != "" {
			return other, err
		}
		uniqueRev = rev
	}
	var gate chan struct{}
	if b.cfg.OnQueued != nil {
		// Workers of this process that receive the job wait for OnQueued.
		gate = make(chan struct{})
		b.enqueuing.Store(job.ID, gate)
	}
	openGate := func() {
		if gate != nil {
			b.enqueuing.Delete(job.ID)
			close(gate)
		}
	}
	seq, st, dup, err := b.admit(ctx, job, quota, data)
	switch {
	case errors.Is(err, errUnknownOutcome):
		// The job may be stored: keep its reservations and its unique
		// key (both heal if it is not).
		openGate()
		return "", err
	case err != nil || dup:
		openGate()
		if uniqueRev != 0 {
			b.releaseUnique(job, uniqueRev)
		}
		if err != nil {
			if !lookedUp && (errors.Is(err, jobqueue.ErrQuotaExceeded) || errors.Is(err, jobqueue.ErrQueueFull)) {
				// An ID from Queue.NewID repeated within the millisecond it
				// was made looks fresh; the job it names, already stored,
				// may be what fills the quota.
				if id, done, kerr := b.kept(ctx, job, false); done && kerr == nil {
					return id, nil
				}
			}
			return "", err
		}
		// The ID was stored before: a repeated submission, or an ID that
		// another submission stored first.
		id, _, err := b.kept(ctx, job, true)
		return id, err
	}
	if b.cfg.OnQueued != nil {
		b.cfg.OnQueued(job, st)
	}
	openGate()
	if st == jobqueue.StatePending {
		b.signal(1 << job.Priority)
	}
	b.emit(fromJob(job, st, seq, nil).event(jobqueue.EventQueued))
	return job.ID, nil
}

// admit reserves job's room on the usage counters and stores it, pending
// or scheduled (st). With BlockOnFull it waits for room (ErrQueueFull from
// either) until ctx ends, taking the reservations again on every try so
// that a waiting Submit holds none. dup reports an ID the server already
// holds (nothing stored, nothing kept reserved). After an error wrapping
// errUnknownOutcome the reservations are kept: the job may be stored.
func (b *Backend) admit(ctx context.Context, job *jobqueue.Job, quota jobqueue.Quota, data []byte) (seq uint64, st jobqueue.State, dup bool, err error) {
	size := int64(len(job.Payload))
	wait := 2 * time.Millisecond
	for {
		now := time.Now()
		scheduled := job.RunAt.After(now)
		subj, st := b.n.jobSubject(int(job.Priority), job.ID), jobqueue.StatePending
		if scheduled {
			subj, st = b.n.schedSubject(job.ID), jobqueue.StateScheduled
		}
		res, err := b.reserve(job, quota, now, scheduled)
		if err == nil {
			var h nats.Header
			if res.bytes {
				h = nats.Header{countedHeader: {"bytes"}}
			}
			seq, dup, err = b.store(ctx, subj, job.ID, data, h)
			if err != nil && !errors.Is(err, errUnknownOutcome) || dup {
				b.unreserve(job, res)
			}
			if err == nil || errors.Is(err, errUnknownOutcome) {
				return seq, st, dup, err
			}
		}
		if !errors.Is(err, jobqueue.ErrQueueFull) || !b.cfg.BlockOnFull || b.cfg.MaxBytes > 0 && size > b.cfg.MaxBytes {
			return 0, st, false, err // a payload that can never fit is not waited for
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, st, false, ctx.Err()
		case <-b.closing:
			t.Stop()
			return 0, st, false, jobqueue.ErrClosed
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// kept looks up a job stored under job.ID: with the same owner it returns
// the ID (a repeated submission: nothing is stored or counted); with
// another owner, an error wrapping jobqueue.ErrInvalidJob. done is false
// if no job with the ID is kept. stored says the server has just refused
// the ID as a duplicate: a job gone already (retention dropped it within
// the server's two-minute duplicate window) still holds the ID then.
func (b *Backend) kept(ctx context.Context, job *jobqueue.Job, stored bool) (id string, done bool, err error) {
	r, _, _, err := b.st.locate(ctx, job.ID)
	switch {
	case err == nil && r.Owner == job.Owner:
		return job.ID, true, nil
	case err == nil || stored && isJobNotFound(err):
		return "", true, fmt.Errorf("%w: ID in use", jobqueue.ErrInvalidJob)
	case isJobNotFound(err):
		return "", false, nil
	}
	return "", true, fmt.Errorf("jetstream: looking up id %s: %w", job.ID, err)
}

// errCodeDuplicateInProcess is the server's answer to a message whose ID
// another send of the same message is still storing (409, 10158).
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// errUnknownOutcome marks a store whose reply never came, even to the
// repeats: the job may be stored.
var errUnknownOutcome = errors.New("outcome unknown")

// store publishes a job message once and waits for the server's
// acknowledgement; dup reports that the server already holds the ID.
// Without a reply within resendEvery it sends the same message again (the
// ID makes a repeat harmless, within the server's two-minute duplicate
// window) until it gives up: at ctx's deadline, or, for a ctx without one,
// when the request timeout has passed. If no reply ever comes the error
// wraps errUnknownOutcome, and the job may or may not be stored. A full
// stream is an error wrapping jobqueue.ErrQueueFull, unless jobs this
// process finished are still leaving it (their acks in flight): then the
// message is sent again for up to settleLag, so a Submit right after a
// Wait finds the room the finished jobs freed.
//
// Across a disconnect (a server restart, or a failover to another node of
// a cluster): a request in flight when the connection drops has lost its
// reply, so it is abandoned at once rather than waited for; while the
// connection is down nothing is sent; once it is back the message is sent
// again, and the request timeout counts afresh from the reconnect. A "no
// responders" reply (JetStream still starting, or a stream electing a
// leader: nothing was stored) and a "duplicate message id is in process"
// reply are retried too. A message sent while its stream has no leader
// gets no reply even after one is elected; the resend finds the new
// leader. So a Submit made during a failover returns soon after the client
// reconnects and the stream has a leader, with the job stored once.
// Beyond the first send it gives up when ctx ends (an unknown outcome,
// like the timeout; seen within resendEvery), and at Close.
func (b *Backend) store(ctx context.Context, subj, id string, data []byte, h nats.Header) (uint64, bool, error) {
	if h == nil {
		h = nats.Header{}
	}
	h[jetstream.MsgIDHeader] = []string{id}
	deadline := b.giveUpAt(ctx)
	sent := false
	var fullSince time.Time // when the stream first said full, if it did
	for {
		epoch := b.events.current() // canceled when the connection changes
		change := epoch.Done()
		if !b.nc.IsConnected() {
			if b.isClosed() {
				return 0, false, jobqueue.ErrClosed
			}
			if b.nc.IsClosed() {
				err := fmt.Errorf("jetstream: storing job %s: %w", id, nats.ErrConnectionClosed)
				if sent {
					err = fmt.Errorf("%w (%w)", err, errUnknownOutcome)
				}
				return 0, false, err
			}
			if err := b.awaitConn(ctx, change, deadline, sent); err != nil {
				return 0, false, fmt.Errorf("jetstream: storing job %s: %w", id, err)
			}
			deadline = b.giveUpAt(ctx) // reconnected: the timeout counts afresh
			continue
		}
		// A disconnect loses the reply: the epoch's end abandons the
		// request. A message sent while a stream has no leader gets no
		// reply at all, even once one is elected: without a reply within
		// resendEvery, the message is sent again.
		tryEnd := time.Now().Add(resendEvery)
		if deadline.Before(tryEnd) {
			tryEnd = deadline
		}
		rctx, cancel := context.WithDeadline(epoch, tryEnd)
		seq, dup, err := b.st.publish(rctx, subj, data, h)
		cancel()
		first := !sent
		sent = true
		select {
		case <-change:
			if err != nil && !isFull(err) && apiCode(err) == 0 {
				// The connection changed under the request: send it again
				// once it is up, with the timeout counted afresh.
				deadline = b.giveUpAt(ctx)
				continue
			}
		default:
		}
		switch {
		case err == nil:
			// A duplicate on a repeat is this call's own store.
			return seq, dup && first, nil
		case isFull(err) && b.fin.settling() && time.Now().Before(fullUntil(&fullSince)):
			// Jobs this process finished may still hold the room the
			// stream counts (their acks in flight): send again shortly.
		case isFull(err):
			return 0, false, fmt.Errorf("%w: %v", jobqueue.ErrQueueFull, err)
		case b.isClosed():
			return 0, false, jobqueue.ErrClosed
		case (errors.Is(err, jetstream.ErrNoStreamResponse) || apiCode(err) == errCodeDuplicateInProcess) && time.Now().Before(deadline):
			// No stream leader took the message (JetStream starting after a
			// reconnect, or a cluster electing a new leader): nothing was
			// stored. Or an earlier send of this very message is still
			// being stored: the next send gets "duplicate". Send again.
		case apiCode(err) != 0 || errors.Is(err, jetstream.ErrNoStreamResponse):
			return 0, false, fmt.Errorf("jetstream: storing job %s: %w", id, err)
		case time.Now().After(deadline):
			return 0, false, fmt.Errorf("jetstream: storing job %s: %w (%w)", id, err, errUnknownOutcome)
		case ctx.Err() != nil:
			return 0, false, fmt.Errorf("jetstream: storing job %s: %w (%w)", id, ctx.Err(), errUnknownOutcome)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// fullUntil returns how long a store that found the stream full at
// *since (set now if zero) may wait for settling jobs to free room:
// settleLag from then.
func fullUntil(since *time.Time) time.Time {
	if since.IsZero() {
		*since = time.Now()
	}
	return since.Add(settleLag)
}

// resendEvery is how long store waits for the reply to one send of a job
// before sending it again (the message ID makes a repeat harmless).
const resendEvery = time.Second

// giveUpAt is when a store that starts (or starts again after a reconnect)
// now stops trying: ctx's deadline, or the request timeout from now for a
// ctx without one.
func (b *Backend) giveUpAt(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(b.o.timeout)
}

// awaitConn waits for the connection to come back (change closes) until
// deadline or ctx ends; sent says a store was sent already, which makes
// giving up an unknown outcome.
func (b *Backend) awaitConn(ctx context.Context, change <-chan struct{}, deadline time.Time, sent bool) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	unknown := func(err error) error {
		if sent {
			return fmt.Errorf("%w (%w)", err, errUnknownOutcome)
		}
		return err
	}
	select {
	case <-change:
		return nil
	case <-t.C:
		return unknown(ErrNotConnected)
	case <-ctx.Done():
		return unknown(ctx.Err())
	case <-b.closing:
		return jobqueue.ErrClosed
	}
}

// freshID reports whether id has the form of the IDs a Queue makes (see
// jobqueue.IDTime) and its time is not before submitted, the job's
// SubmittedAt, to the millisecond: an ID that Submit made for this very
// job, which no job can hold yet. An ID from Queue.NewID or jobqueue.NewID,
// made before the Submit that uses it, may be a repeated submission and is
// looked up. (One made in the same millisecond as its Submit counts as
// fresh: a repeat that quick is still caught by the server's two-minute
// duplicate window on the same stream.)
func freshID(id string, submitted time.Time) bool {
	t, ok := jobqueue.IDTime(id)
	return ok && !t.Before(submitted.Truncate(time.Millisecond))
}

// uniqueKey is the state bucket key of owner's UniqueKey key: keys are per
// owner.
func uniqueKey(owner, key string) string {
	h := sha256.New()
	h.Write([]byte(owner))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return "u." + hex.EncodeToString(h.Sum(nil)[:16])
}

// claimUnique makes job the owner of its UniqueKey and returns the entry's
// revision, or returns the ID of the active job that owns it.
func (b *Backend) claimUnique(ctx context.Context, job *jobqueue.Job) (string, uint64, error) {
	key := uniqueKey(job.Owner, job.UniqueKey)
	for try := 0; try < 16; try++ {
		rctx, cancel := b.reqCtx()
		e, err := b.st.readKV(rctx, key)
		cancel()
		if err != nil {
			return "", 0, fmt.Errorf("jetstream: unique key: %w", err)
		}
		if other := string(e.val); e.ok && other != "" && other != job.ID {
			info, err := b.Get(ctx, other)
			switch {
			case err == nil && !info.State.Final():
				return other, 0, nil
			case err != nil && !isJobNotFound(err):
				return "", 0, err
			case err != nil && time.Since(e.at) < 2*b.o.timeout:
				// The owner is being stored right now.
				return other, 0, nil
			}
		}
		rctx, cancel = b.reqCtx()
		nrev, err := b.st.putKV(rctx, key, []byte(job.ID), e.rev, 0)
		cancel()
		if err == nil {
			return "", nrev, nil
		}
		if !isWrongSeq(err) {
			return "", 0, fmt.Errorf("jetstream: unique key: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
	}
	return "", 0, fmt.Errorf("jetstream: unique key %q: too much contention", job.UniqueKey)
}

// releaseUnique frees job's UniqueKey if job still owns it (rev is the
// owner's revision if known, else 0 to look it up). The entry becomes a
// marker that the server removes after a second.
func (b *Backend) releaseUnique(job *jobqueue.Job, rev uint64) {
	if job.UniqueKey == "" {
		return
	}
	key := uniqueKey(job.Owner, job.UniqueKey)
	ctx, cancel := b.reqCtx()
	defer cancel()
	if rev == 0 {
		e, err := b.st.readKV(ctx, key)
		if err != nil || !e.ok || string(e.val) != job.ID {
			return
		}
		rev = e.rev
	}
	// A purge marker that expires: the key's history goes, and so does
	// the marker a second later.
	m := nats.NewMsg(b.n.kvSubject(key))
	m.Header.Set("KV-Operation", "PURGE")
	m.Header.Set("Nats-Rollup", "sub")
	_, _ = b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(time.Second))
}

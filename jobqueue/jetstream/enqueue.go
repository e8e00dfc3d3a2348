package jetstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
// A UniqueKey is claimed first with a compare-and-set on the key's entry in
// the state bucket, which holds the ID of the job that owns it until that
// job finishes. It costs one request (two with a UniqueKey) plus a signal to
// idle workers.
//
// It does not check quota (Quota.MaxDelay is checked by the Queue) or
// BackendConfig.MaxBytes yet.
func (b *Backend) Enqueue(ctx context.Context, job *jobqueue.Job, _ jobqueue.Quota) (string, error) {
	if b.isClosed() {
		return "", jobqueue.ErrClosed
	}
	if !validID(job.ID) {
		return "", fmt.Errorf("%w: id %q is not a subject token", jobqueue.ErrInvalidJob, job.ID)
	}
	if !job.Priority.Valid() || job.Type == "" {
		return "", fmt.Errorf("%w: type %q priority %d", jobqueue.ErrInvalidJob, job.Type, job.Priority)
	}
	if !generatedID(job.ID) {
		// A caller-chosen ID: refuse one that names a job still kept.
		// (IDs the Queue makes are unique by construction; a repeat within
		// two minutes is still caught by the stream's Nats-Msg-Id check.)
		if _, err := b.Get(ctx, job.ID); err == nil {
			return "", fmt.Errorf("%w: duplicate id %q", jobqueue.ErrInvalidJob, job.ID)
		} else if !isJobNotFound(err) {
			return "", err
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
	scheduled := job.RunAt.After(time.Now())
	subj, st := b.n.jobSubject(int(job.Priority), job.ID), jobqueue.StatePending
	if scheduled {
		subj, st = b.n.schedSubject(job.ID), jobqueue.StateScheduled
	}
	var gate chan struct{}
	if !scheduled && b.cfg.OnQueued != nil {
		gate = make(chan struct{})
		b.enqueuing.Store(job.ID, gate)
	}
	seq, err := b.store(ctx, subj, job.ID, data)
	if err != nil {
		if gate != nil {
			b.enqueuing.Delete(job.ID)
			close(gate)
		}
		if uniqueRev != 0 {
			b.releaseUnique(job, uniqueRev)
		}
		return "", err
	}
	if b.cfg.OnQueued != nil {
		b.cfg.OnQueued(job, st)
	}
	if gate != nil {
		b.enqueuing.Delete(job.ID)
		close(gate)
	}
	if !scheduled {
		b.signal(1 << job.Priority)
	}
	b.emit(fromJob(job, st, seq).event(jobqueue.EventQueued))
	return job.ID, nil
}

// store publishes a job message and waits for the server's acknowledgement.
// The request itself is not canceled by ctx (it is short and its outcome
// would be unknown); only the wait for room is.
func (b *Backend) store(ctx context.Context, subj, id string, data []byte) (uint64, error) {
	wait := 2 * time.Millisecond
	for {
		rctx, cancel := b.reqCtx()
		seq, dup, err := b.st.publish(rctx, subj, data, nats.Header{jetstream.MsgIDHeader: {id}})
		cancel()
		switch {
		case err == nil && dup:
			return 0, fmt.Errorf("%w: duplicate id %q", jobqueue.ErrInvalidJob, id)
		case err == nil:
			return seq, nil
		case !isFull(err):
			if b.isClosed() {
				return 0, jobqueue.ErrClosed
			}
			return 0, fmt.Errorf("jetstream: storing job %s: %w", id, err)
		case !b.cfg.BlockOnFull:
			return 0, jobqueue.ErrQueueFull
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-b.closing:
			t.Stop()
			return 0, jobqueue.ErrClosed
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// generatedID reports whether id has the form of the IDs Queue makes: 20
// characters of Crockford's lower-case base 32.
func generatedID(id string) bool {
	if len(id) != 20 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' && c != 'i' && c != 'l' && c != 'o' && c != 'u') {
			return false
		}
	}
	return true
}

func uniqueKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return "u." + hex.EncodeToString(h[:16])
}

// claimUnique makes job the owner of its UniqueKey and returns the entry's
// revision, or returns the ID of the active job that owns it.
func (b *Backend) claimUnique(ctx context.Context, job *jobqueue.Job) (string, uint64, error) {
	key := uniqueKey(job.UniqueKey)
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
	key := uniqueKey(job.UniqueKey)
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

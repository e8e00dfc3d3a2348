package jetstream

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// store holds the handles of a queue's streams, bucket and consumers on one
// connection, and the reads and writes every part of the backend shares.
//
// A job moves through the stores in this order, and each move writes the
// next store before it leaves the previous one:
//
//	SCHED stream (scheduled) -> JOBS stream (pending; leased once claimed)
//	  -> state bucket entry (running, retrying; final for a moment)
//	  -> DONE stream (finished) while its JOBS message is removed
//
// so reading them in that order never misses a job.
type store struct {
	n        names
	nc       *nats.Conn
	js       jetstream.JetStream
	keepDone bool // Retention.MaxJobs >= 0: finished jobs are kept in DONE

	jobs, sched, done, dead, kvs jetstream.Stream
	levels                       [jobqueue.NumPriorities]jetstream.Consumer
}

// kvEntry is the latest message of a key in the state bucket.
type kvEntry struct {
	val []byte
	rev uint64    // its sequence; 0 if the key was never written
	ok  bool      // false for a deleted or expired key (rev is the marker's)
	at  time.Time // when it was written
}

// readKV returns the latest entry of key in the state bucket. A key that
// was never written has revision 0; a deleted or expired one has ok false
// and the revision of its marker, to write it with compare-and-set.
func (s *store) readKV(ctx context.Context, key string) (kvEntry, error) {
	m, err := s.kvs.GetLastMsgForSubject(ctx, s.n.kvSubject(key))
	if err != nil {
		if isNotFound(err) {
			return kvEntry{}, nil
		}
		return kvEntry{}, err
	}
	e := kvEntry{rev: m.Sequence, at: m.Time}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" || m.Header.Get("Nats-Marker-Reason") != "" {
		return e, nil
	}
	e.val, e.ok = m.Data, true
	return e, nil
}

// putKV writes key with compare-and-set on revision exp (0: the key must
// never have been written) and, if ttl > 0, a per-message TTL. It returns
// the new revision.
func (s *store) putKV(ctx context.Context, key string, data []byte, exp uint64, ttl time.Duration) (uint64, error) {
	h := nats.Header{jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(exp, 10)}}
	if ttl > 0 {
		h[jetstream.MsgTTLHeader] = []string{ttl.String()}
	}
	seq, _, err := s.publish(ctx, s.n.kvSubject(key), data, h)
	return seq, err
}

// readState returns the state record of job id, its revision and whether
// a live record exists (see readKV).
func (s *store) readState(ctx context.Context, id string) (*record, uint64, bool, error) {
	e, err := s.readKV(ctx, s.n.stateKey(id))
	if err != nil || !e.ok {
		return nil, e.rev, false, err
	}
	r, err := decodeRecord(e.val)
	if err != nil {
		return nil, e.rev, false, fmt.Errorf("jetstream: state of %s: %w", id, err)
	}
	return r, e.rev, true, nil
}

// saveDone stores a finished job's record for retention and dead-letters a
// failed one. data is r encoded.
func (s *store) saveDone(ctx context.Context, r *record, data []byte) error {
	if r.State == jobqueue.StateFailed {
		if _, _, err := s.publish(ctx, s.n.deadSubject(r.ID), data, nil); err != nil {
			return fmt.Errorf("jetstream: dead-lettering %s: %w", r.ID, err)
		}
	}
	if !s.keepDone {
		return nil
	}
	if _, _, err := s.publish(ctx, s.n.doneSubject(r.ID), data, nil); err != nil {
		return fmt.Errorf("jetstream: storing result of %s: %w", r.ID, err)
	}
	return nil
}

// getDone returns the retained final record of job id.
func (s *store) getDone(ctx context.Context, id string) (*record, bool, error) {
	if !s.keepDone {
		return nil, false, nil
	}
	m, err := s.done.GetLastMsgForSubject(ctx, s.n.doneSubject(id))
	if err != nil {
		if isNotFound(err) {
			return nil, false, nil
		}
		return nil, false, err
	}
	r, err := decodeRecord(m.Data)
	if err != nil {
		return nil, false, err
	}
	return r, true, nil
}

// Where a job was found; see store.
type place uint8

const (
	nowhere place = iota
	inSched
	inJobs
	inState
	inDone
)

// locate finds job id by reading the stores in the order jobs move
// through them; the last one that has it holds its latest state. A final
// state entry counts only while the job's message still exists (the
// moment between the entry and the DONE record); after that DONE speaks,
// or retention has dropped the job. For inSched and inJobs, rev is the
// revision of the job's state entry marker (to create the entry with
// compare-and-set) and r.Seq the message's sequence.
func (s *store) locate(ctx context.Context, id string) (*record, place, uint64, error) {
	if !validID(id) {
		return nil, nowhere, 0, fmt.Errorf("%w: %q", jobqueue.ErrNotFound, id)
	}
	var found *record
	where := nowhere
	if m, err := s.sched.GetLastMsgForSubject(ctx, s.n.schedSubject(id)); err == nil {
		if j, err := decodeJob(m.Data); err == nil {
			found, where = fromJob(j, jobqueue.StateScheduled, m.Sequence), inSched
		}
	} else if !isNotFound(err) {
		return nil, nowhere, 0, err
	}
	if m, err := s.jobs.GetLastMsgForSubject(ctx, s.n.prefix+".q.*."+id); err == nil {
		if j, err := decodeJob(m.Data); err == nil {
			found, where = fromJob(j, jobqueue.StatePending, m.Sequence), inJobs
		}
	} else if !isNotFound(err) {
		return nil, nowhere, 0, err
	}
	cur, rev, ok, err := s.readState(ctx, id)
	if err != nil {
		return nil, nowhere, 0, err
	}
	if ok && (!cur.State.Final() || where != nowhere) {
		found, where = cur, inState
	}
	if done, ok, err := s.getDone(ctx, id); err != nil {
		return nil, nowhere, 0, err
	} else if ok {
		found, where = done, inDone
	}
	if where == nowhere {
		return nil, nowhere, 0, fmt.Errorf("%w: %q", jobqueue.ErrNotFound, id)
	}
	return found, where, rev, nil
}

// snapshot is what Get reports for a record: a retrying job whose delay is
// over is pending.
func snapshot(r *record, now time.Time) jobqueue.JobInfo {
	info := r.JobInfo
	if info.State == jobqueue.StateRetrying && !info.NextRunAt.After(now) {
		info.State, info.NextRunAt = jobqueue.StatePending, time.Time{}
	}
	return info
}

// scan reads the messages of a stream matching filter (the last one per
// subject if last) with an ordered consumer, until none is left, and
// deletes the consumer.
func (s *store) scan(ctx context.Context, stream, filter string, last bool, fn func(jetstream.Msg)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, InactiveThreshold: 30 * time.Second}
	if last {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	}
	c, err := s.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("jetstream: scanning %s: %w", stream, err)
	}
	ci := c.CachedInfo()
	if ci == nil {
		return nil
	}
	defer func() { _ = s.js.DeleteConsumer(context.WithoutCancel(ctx), stream, ci.Name) }()
	for pending := ci.NumPending; pending > 0; {
		batch, err := c.Fetch(int(min(pending, 512)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("jetstream: scanning %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			fn(m)
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("jetstream: scanning %s: %w", stream, err)
		}
		if n == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// scanState calls fn with every live job entry of the state bucket.
func (s *store) scanState(ctx context.Context, fn func(*record)) error {
	return s.scan(ctx, s.n.kvStream(), "$KV."+s.n.bucket+".j.>", true, func(m jetstream.Msg) {
		h := m.Headers()
		if h.Get("KV-Operation") != "" || h.Get("Nats-Marker-Reason") != "" {
			return
		}
		if r, err := decodeRecord(m.Data()); err == nil {
			fn(r)
		}
	})
}

// subjectIDs returns the last token of every subject of st matching filter,
// mapped to the token before it.
func (s *store) subjectIDs(ctx context.Context, st jetstream.Stream, filter string) (map[string]string, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	ids := make(map[string]string, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		toks := strings.Split(subj, ".")
		if len(toks) >= 2 {
			ids[toks[len(toks)-1]] = toks[len(toks)-2]
		}
	}
	return ids, nil
}

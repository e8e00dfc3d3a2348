package jetstream

import (
	"context"
	"encoding/json"
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

// putKVOnce is putKV with a message ID: a write repeated with the same ID
// within the bucket's duplicate window (two minutes) is not applied again,
// and reports dup true. The server checks exp before the ID, so a repeat
// after a lost reply must carry the current revision to be recognized.
func (s *store) putKVOnce(ctx context.Context, key string, data []byte, exp uint64, ttl time.Duration, id string) (uint64, bool, error) {
	h := nats.Header{jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(exp, 10)}, jetstream.MsgIDHeader: {id}}
	if ttl > 0 {
		h[jetstream.MsgTTLHeader] = []string{ttl.String()}
	}
	return s.publish(ctx, s.n.kvSubject(key), data, h)
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
			found, where = fromJob(j, jobqueue.StateScheduled, m.Sequence, m.Header), inSched
		}
	} else if !isNotFound(err) {
		return nil, nowhere, 0, err
	}
	if m, err := s.jobs.GetLastMsgForSubject(ctx, s.n.prefix+".q.*."+id); err == nil {
		if j, err := decodeJob(m.Data); err == nil {
			found, where = fromJob(j, jobqueue.StatePending, m.Sequence, m.Header), inJobs
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

// directMsg is a message read with a direct get: its subject, sequence,
// body and stored headers.
type directMsg struct {
	subj string
	seq  uint64
	data []byte
	hdr  nats.Header
}

// directBatch is the most messages one direct get request asks for, and
// directBytes about the most bytes (the server stops after the message
// that passes it), well within a subscription's pending limit.
const (
	directBatch = 256
	directBytes = 8 << 20
)

// readAll calls fn with every message of stream whose subject matches
// filter (wildcards allowed), in stream order: batched direct gets of
// directBatch messages each, so a stream of n messages costs n/directBatch
// requests.
func (s *store) readAll(ctx context.Context, stream, filter string, fn func(directMsg)) error {
	var seq uint64
	for {
		req := struct {
			Seq      uint64 `json:"seq,omitempty"`
			NextFor  string `json:"next_by_subj"`
			Batch    int    `json:"batch"`
			MaxBytes int    `json:"max_bytes"`
		}{seq, filter, directBatch, directBytes}
		n, last, more, err := s.direct(ctx, stream, &req, fn)
		if err != nil || n == 0 || !more {
			return err
		}
		seq = last + 1
	}
}

// readLast calls fn with the last message of each of subjects (no
// wildcards) that stream holds: one request per directBatch subjects (or
// directBytes of messages).
func (s *store) readLast(ctx context.Context, stream string, subjects []string, fn func(directMsg)) error {
	for len(subjects) > 0 {
		n := min(len(subjects), directBatch)
		req := struct {
			Multi    []string `json:"multi_last"`
			Batch    int      `json:"batch"`
			MaxBytes int      `json:"max_bytes"`
		}{subjects[:n], n, directBytes}
		seen := make(map[string]bool, n)
		_, _, more, err := s.direct(ctx, stream, &req, func(m directMsg) {
			seen[m.subj] = true
			fn(m)
		})
		if err != nil {
			return err
		}
		rest := subjects[n:]
		if more {
			// The byte limit cut the answer: ask again for the others.
			var again []string
			for _, subj := range subjects[:n] {
				if !seen[subj] {
					again = append(again, subj)
				}
			}
			if len(again) < n {
				rest = append(again, rest...)
			}
		}
		subjects = rest
	}
	return nil
}

// direct sends one direct get request for a batch of messages, calls fn
// with each, and returns how many came, the last one's sequence and
// whether more match than came (the batch or the server's byte limit cut
// the answer short).
func (s *store) direct(ctx context.Context, stream string, req any, fn func(directMsg)) (n int, last uint64, more bool, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, 0, false, err
	}
	inbox := nats.NewInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, 0, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
		return 0, 0, false, err
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return n, last, false, fmt.Errorf("jetstream: reading %s: %w", stream, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of batch
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return n, last, pending > 0, nil
		case "404": // nothing (more) matches
			return n, last, false, nil
		default:
			return n, last, false, fmt.Errorf("jetstream: reading %s: status %s %s", stream, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return n, last, false, fmt.Errorf("jetstream: reading %s: message without sequence", stream)
		}
		n++
		last = seq
		fn(directMsg{subj: m.Header.Get("Nats-Subject"), seq: seq, data: m.Data, hdr: m.Header})
	}
}

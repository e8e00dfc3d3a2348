package jetstream

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// healer resets stale counters. A counter is stale when the queue has no
// job at all (JOBS and SCHED empty) yet the counter is above zero: a
// process died between a store and its counter write. Checks run every
// settle (three request timeouts); a counter is reset only if the queue
// was idle at three checks in a row and the counter's revision did not
// change across them. Every counter write follows the store it accounts
// for by less than settle (or never: the crash this repairs), so such a
// counter has no write on its way, and a job submitted meanwhile makes the
// reset's compare-and-set fail.
type healer struct {
	next time.Time
	seen map[string]healSeen
}

type healSeen struct {
	rev uint64
	n   int // consecutive idle checks with this revision
}

// maybeHeal runs a check if one is due; the scheduler goroutine calls it.
func (l *ledger) maybeHeal(now time.Time) {
	h := &l.heal
	if now.Before(h.next) {
		return
	}
	h.next = now.Add(l.settle)
	ctx, cancel := l.b.reqCtx()
	defer cancel()
	idle, err := l.b.st.idle(ctx)
	if err != nil || !idle {
		h.seen = nil
		return
	}
	entries, err := l.b.st.counters(ctx)
	if err != nil {
		h.seen = nil
		return
	}
	seen := make(map[string]healSeen, len(entries))
	for key, e := range entries {
		s := healSeen{rev: e.rev, n: 1}
		if old, ok := h.seen[key]; ok && old.rev == e.rev {
			s.n = old.n + 1
		}
		seen[key] = s
		if s.n < 3 {
			continue
		}
		z := usage{Owner: e.u.Owner}
		data, _ := json.Marshal(&z)
		if _, err := l.b.st.putKV(ctx, key, data, e.rev, idleTTL); err == nil {
			l.b.log.Warn("usage counter reset: the queue is idle but the counter was not (a process died between a store and its counter write)",
				"key", key, "owner", e.u.Owner, "active", e.u.Active, "delayed", e.u.Delayed, "bytes", e.u.Bytes)
			delete(seen, key)
		}
	}
	h.seen = seen
}

// idle reports whether no job is stored: JOBS and SCHED hold no message.
func (s *store) idle(ctx context.Context) (bool, error) {
	for _, st := range []jetstream.Stream{s.jobs, s.sched} {
		info, err := st.Info(ctx)
		if err != nil {
			return false, err
		}
		if info.State.Msgs > 0 {
			return false, nil
		}
	}
	return true, nil
}

type counterEntry struct {
	rev uint64
	u   usage
}

// counters returns the counter entries above zero, by key.
func (s *store) counters(ctx context.Context) (map[string]counterEntry, error) {
	out := map[string]counterEntry{}
	e, err := s.readKV(ctx, bytesKey)
	if err != nil {
		return nil, err
	}
	if e.ok {
		if u, err := decodeUsage(e.val); err == nil && !u.zero() {
			out[bytesKey] = counterEntry{rev: e.rev, u: u}
		}
	}
	pre := "$KV." + s.n.bucket + "."
	err = s.scan(ctx, s.n.kvStream(), pre+ownerPre+">", true, func(m jetstream.Msg) {
		h := m.Headers()
		if h.Get("KV-Operation") != "" || h.Get("Nats-Marker-Reason") != "" {
			return
		}
		md, err := m.Metadata()
		if err != nil {
			return
		}
		if u, err := decodeUsage(m.Data()); err == nil && !u.zero() {
			out[m.Subject()[len(pre):]] = counterEntry{rev: md.Sequence.Stream, u: u}
		}
	})
	return out, err
}

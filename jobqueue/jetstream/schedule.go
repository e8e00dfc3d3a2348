package jetstream

import (
	"context"
	"fmt"
	"time"
)

// schedKey is the state bucket key of a schedule's latest tick; job IDs
// hold no '.', so it cannot meet a job's key.
func (n *names) schedKey(name string) string { return "sched." + name }

// LastTick implements jobqueue.ScheduleStore: the latest tick of the
// schedule named name, kept in the state bucket (replicated like it, and
// never dropped by retention).
func (b *Backend) LastTick(ctx context.Context, name string) (_ time.Time, _ bool, err error) {
	ctx, st, done, err := b.view(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	defer done(&err)
	e, err := st.readKV(ctx, b.n.schedKey(name))
	if err != nil || !e.ok {
		return time.Time{}, false, err
	}
	t, err := time.Parse(time.RFC3339Nano, string(e.val))
	if err != nil {
		return time.Time{}, false, fmt.Errorf("jetstream: last tick of schedule %s: %w", name, err)
	}
	return t, true, nil
}

// MarkTick implements jobqueue.ScheduleStore: it records t unless a later
// tick is recorded, with compare-and-set, so processes marking ticks at
// once keep the latest.
func (b *Backend) MarkTick(ctx context.Context, name string, t time.Time) (err error) {
	ctx, st, done, err := b.view(ctx)
	if err != nil {
		return err
	}
	defer done(&err)
	key := b.n.schedKey(name)
	for range 16 {
		e, err := st.readKV(ctx, key)
		if err != nil {
			return err
		}
		if e.ok {
			if last, err := time.Parse(time.RFC3339Nano, string(e.val)); err == nil && !t.After(last) {
				return nil
			}
		}
		_, err = st.putKV(ctx, key, []byte(t.UTC().Format(time.RFC3339Nano)), e.rev, 0)
		if err == nil || !isWrongSeq(err) {
			return err
		}
	}
	return fmt.Errorf("jetstream: marking a tick of schedule %s: too many concurrent writers", name)
}

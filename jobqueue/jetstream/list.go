package jetstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// List implements jobqueue.Backend. It gathers the IDs of every store
// (subject listings of the scheduled and ready streams, scans of the state
// bucket and of the finished records), keeping only IDs before f.Cursor
// and finished records of f's type and owner, then walks them newest
// first, reading the jobs known only by their messages in batches of a few
// hundred (direct gets of the last message of each subject), until f's
// limit is reached. It costs O(jobs kept) work plus one request per batch
// of messages read: it is meant for inspection rather than polling. With
// f.Summary the records are stripped as they are read, so a listing does
// not hold the jobs' payloads and results.
func (b *Backend) List(ctx context.Context, f jobqueue.ListFilter) (_ []jobqueue.JobInfo, err error) {
	ctx, st, done, err := b.view(ctx)
	if err != nil {
		return nil, err
	}
	defer done(&err)
	l := listing{b: b, st: st, f: f}
	if err := l.gather(ctx); err != nil {
		return nil, err
	}
	return l.walk(ctx)
}

// listing is one List call: the candidates found in the stores, by ID.
type listing struct {
	b   *Backend
	st  *store
	f   jobqueue.ListFilter
	all map[string]*cand
	ids []string // of all, newest first
}

// cand is a job List may return: its record, or only its message's place.
type cand struct {
	where place
	rec   *record
	subj  string // of its message, while only the message is known
	tried bool   // its message was read (or looked for)
}

// before reports whether id passes the filter's cursor.
func (l *listing) before(id string) bool { return l.f.Cursor == "" || id < l.f.Cursor }

// kind reports whether a job's type and owner, which never change, pass
// the filter.
func (l *listing) kind(j *jobqueue.Job) bool {
	return (l.f.Type == "" || l.f.Type == j.Type) && (l.f.Owner == "" || l.f.Owner == j.Owner)
}

// stateOK reports whether a job known only by its message may pass the
// filter's state, which follows from where the message is.
func (l *listing) stateOK(c *cand) bool {
	s := jobqueue.StatePending
	if c.where == inSched {
		s = jobqueue.StateScheduled
	}
	return l.f.State == jobqueue.StateUnknown || l.f.State == s
}

// gather collects the candidates from the stores, in the order jobs move
// through them (see store), so that none is missed and the last store to
// speak for a job has its latest state.
func (l *listing) gather(ctx context.Context) error {
	st, n := l.st, l.b.n
	l.all = map[string]*cand{}
	sched, err := st.subjectIDs(ctx, st.sched, n.prefix+".s.>")
	if err != nil {
		return fmt.Errorf("jetstream: list: %w", err)
	}
	for id := range sched {
		if l.before(id) {
			l.all[id] = &cand{where: inSched, subj: n.schedSubject(id)}
		}
	}
	ready, err := st.subjectIDs(ctx, st.jobs, n.prefix+".q.>")
	if err != nil {
		return fmt.Errorf("jetstream: list: %w", err)
	}
	for id, level := range ready {
		if l.before(id) {
			l.all[id] = &cand{where: inJobs, subj: n.prefix + ".q." + level + "." + id}
		}
	}
	// finished holds every finished job that a store speaks for, whatever
	// the filter, by ID: the count bound applies to all of them.
	finished := map[string]time.Time{}
	err = st.scanState(ctx, func(r *record) {
		_, msg := ready[r.ID]
		if r.State.Final() && msg {
			finished[r.ID] = r.FinishedAt
		}
		if _, msg := l.all[r.ID]; l.before(r.ID) && (msg || !r.State.Final()) {
			l.all[r.ID] = &cand{where: inState, rec: r}
		}
	})
	if err != nil {
		return err
	}
	if st.keepDone && (l.f.State == jobqueue.StateUnknown || l.f.State.Final()) {
		err := st.scan(ctx, n.done, n.prefix+".done.>", false, func(m jetstream.Msg) {
			r, err := decodeRecord(m.Data())
			if err == nil {
				finished[r.ID] = r.FinishedAt
			}
			switch {
			case err != nil || !l.before(r.ID):
			case !l.kind(&r.Job):
				delete(l.all, r.ID) // finished: no earlier store speaks for it
			default:
				if l.f.Summary {
					summarize(&r.JobInfo)
				}
				l.all[r.ID] = &cand{where: inDone, rec: r}
			}
		})
		if err != nil {
			return err
		}
	}
	l.dropRetained(finished)
	l.ids = make([]string, 0, len(l.all))
	for id := range l.all {
		l.ids = append(l.ids, id)
	}
	slices.SortFunc(l.ids, func(x, y string) int { return cmp.Compare(y, x) })
	return nil
}

// dropRetained applies Retention.MaxJobs to the finished jobs found, by
// ID with their finish times: only the newest MaxJobs stay candidates.
// DONE's MaxMsgs alone does not bound them. A job's final state entry
// speaks for it while its message is still in JOBS, and the finisher
// removes the message (an asynchronous ack) only after DONE has stored the
// record; on a loaded machine the acks of several jobs can still be in
// flight when DONE already holds MaxJobs newer records and has dropped
// theirs, and the finished jobs whose records are not stored yet are not
// counted by DONE at all. Both are counted here, as DONE will count them.
func (l *listing) dropRetained(finished map[string]time.Time) {
	maxJobs := l.b.cfg.Retention.MaxJobs
	if maxJobs <= 0 || len(finished) <= maxJobs {
		return
	}
	ids := make([]string, 0, len(finished))
	for id := range finished {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(x, y string) int { // newest first
		return cmp.Or(finished[y].Compare(finished[x]), cmp.Compare(y, x))
	})
	for _, id := range ids[maxJobs:] {
		if c := l.all[id]; c != nil && c.rec != nil && c.rec.State.Final() {
			delete(l.all, id)
		}
	}
}

// walk returns the candidates that match, newest first, up to the limit,
// reading the messages of those known only by them as it goes.
func (l *listing) walk(ctx context.Context) ([]jobqueue.JobInfo, error) {
	limit := l.f.Limit
	if limit == 0 {
		limit = 100
	}
	now := time.Now()
	var out []jobqueue.JobInfo
	for i, id := range l.ids {
		if limit >= 0 && len(out) >= limit {
			break
		}
		c := l.all[id]
		if c.rec == nil {
			if !l.stateOK(c) {
				continue
			}
			if !c.tried {
				if err := l.load(ctx, i); err != nil {
					return nil, err
				}
			}
			if c.rec == nil {
				// The message moved on since the listing: find the job
				// where it went.
				r, _, _, err := l.st.locate(ctx, id)
				if err != nil {
					if errors.Is(err, jobqueue.ErrNotFound) {
						continue
					}
					return nil, err
				}
				c.rec = r
			}
		}
		info := snapshot(c.rec, now)
		if l.f.Match(&info) {
			if l.f.Summary {
				summarize(&info)
			}
			out = append(out, info)
		}
	}
	return out, nil
}

// load reads the messages of the next candidates known only by them, from
// l.ids[i] on, up to directBatch of them, in one request per stream.
func (l *listing) load(ctx context.Context, i int) error {
	var subs [2][]string // SCHED, JOBS
	for ; i < len(l.ids) && len(subs[0])+len(subs[1]) < directBatch; i++ {
		c := l.all[l.ids[i]]
		if c.rec != nil || c.tried || !l.stateOK(c) {
			continue
		}
		c.tried = true
		if c.where == inSched {
			subs[0] = append(subs[0], c.subj)
		} else {
			subs[1] = append(subs[1], c.subj)
		}
	}
	for k, stream := range [2]string{l.b.n.sched, l.b.n.jobs} {
		s := jobqueue.StateScheduled
		if k == 1 {
			s = jobqueue.StatePending
		}
		err := l.st.readLast(ctx, stream, subs[k], func(m directMsg) {
			j, err := decodeJob(m.data)
			if err != nil {
				return
			}
			if c := l.all[j.ID]; c != nil && c.rec == nil {
				c.rec = fromJob(j, s, m.seq, m.hdr)
				if l.f.Summary {
					summarize(&c.rec.JobInfo)
				}
			}
		})
		if err != nil {
			return fmt.Errorf("jetstream: list: %w", err)
		}
	}
	return nil
}

// summarize strips info as ListFilter.Summary says: no payload, result or
// metadata, and the first line of the last error.
func summarize(info *jobqueue.JobInfo) {
	info.Payload, info.Result, info.Metadata = nil, nil, nil
	if i := strings.IndexByte(info.LastError, '\n'); i >= 0 {
		info.LastError = info.LastError[:i]
	}
}

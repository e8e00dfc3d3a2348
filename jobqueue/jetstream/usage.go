package jetstream

import (
	"context"
	"fmt"
	"time"

	"github.com/corework/corework/jobqueue"
)

// reservation records what Enqueue took for a job, to give back.
type reservation struct {
	owner   bool // the owner's counter: one active job, its bytes, delayed if scheduled
	bytes   bool // the byte budget: its payload bytes
	delayed bool
}

// reserve takes job's room before it is stored: its owner's counter
// (checking quota; the first error Enqueue reports) and the queue's byte
// budget (ErrQueueFull). It takes nothing for a job with no owner and no
// payload, or when nothing bounds it.
func (b *Backend) reserve(job *jobqueue.Job, quota jobqueue.Quota, now time.Time, delayed bool) (reservation, error) {
	var res reservation
	size := int64(len(job.Payload))
	if job.Owner != "" {
		d := usage{Active: 1, Bytes: size}
		if delayed {
			d.Delayed = 1
		}
		err := b.led.apply(ownerKey(job.Owner), job.Owner, d, func(u jobqueue.Usage) error {
			return quota.Check(u, job, now)
		})
		if err != nil {
			return res, err
		}
		res.owner, res.delayed = true, delayed
	}
	if limit := b.cfg.MaxBytes; limit > 0 && size > 0 {
		err := b.led.apply(bytesKey, "", usage{Bytes: size}, func(u jobqueue.Usage) error {
			if u.Bytes+size > limit {
				return fmt.Errorf("%w: %d payload bytes stored, %d more would exceed %d", jobqueue.ErrQueueFull, u.Bytes, size, limit)
			}
			return nil
		})
		if err != nil {
			b.unreserve(job, res)
			return reservation{}, err
		}
		res.bytes = true
	}
	return res, nil
}

// unreserve gives back what reserve took for a job that was not stored.
func (b *Backend) unreserve(job *jobqueue.Job, res reservation) {
	b.uncount(job, res.owner, res.bytes, res.delayed)
}

// uncount takes a job off the counters: its owner's (if owner, and its
// delay too if delayed) and the byte budget (if bytes, the job's payload
// was counted there). A failure is logged: the counter stays high.
func (b *Backend) uncount(job *jobqueue.Job, owner, bytes, delayed bool) {
	size := int64(len(job.Payload))
	if owner && job.Owner != "" {
		d := usage{Active: -1, Bytes: -size}
		if delayed {
			d.Delayed = -1
		}
		if err := b.led.apply(ownerKey(job.Owner), job.Owner, d, nil); err != nil {
			b.log.Error("usage counter not updated; it stays high until the queue idles", "job", job.ID, "owner", job.Owner, "err", err)
		}
	}
	if bytes && size > 0 {
		if err := b.led.apply(bytesKey, "", usage{Bytes: -size}, nil); err != nil {
			b.log.Error("byte budget not updated; it stays high until the queue idles", "job", job.ID, "err", err)
		}
	}
}

// undelay records that a delayed job left SCHED (released or canceled), for
// its owner's delayed count.
func (b *Backend) undelay(job *jobqueue.Job) {
	if job.Owner == "" {
		return
	}
	if err := b.led.apply(ownerKey(job.Owner), job.Owner, usage{Delayed: -1}, nil); err != nil {
		b.log.Error("usage counter not updated; it stays high until the queue idles", "job", job.ID, "owner", job.Owner, "err", err)
	}
}

// Usage implements jobqueue.UsageReporter. For an owner it reads the
// owner's counter (one request). For the empty owner, whose jobs have no
// counter (so that library callers pay nothing for one), it reads every
// active job: O(active jobs), in batches of a few hundred per request.
func (b *Backend) Usage(ctx context.Context, owner string) (_ jobqueue.Usage, err error) {
	ctx, st, done, err := b.view(ctx)
	if err != nil {
		return jobqueue.Usage{}, err
	}
	defer done(&err)
	if owner == "" {
		return st.countUnowned(ctx)
	}
	e, err := st.readKV(ctx, ownerKey(owner))
	if err != nil || !e.ok {
		return jobqueue.Usage{}, err
	}
	u, err := decodeUsage(e.val)
	return u.public(), err
}

// countUnowned counts the active jobs that have no owner, from their
// messages in SCHED and JOBS, less the ones whose state is already final
// (being settled).
func (s *store) countUnowned(ctx context.Context) (jobqueue.Usage, error) {
	var u jobqueue.Usage
	jobs := map[string]int64{}
	delayed := map[string]bool{}
	each := func(isSched bool) func(directMsg) {
		return func(m directMsg) {
			if j, err := decodeJob(m.data); err == nil && j.Owner == "" {
				jobs[j.ID] = int64(len(j.Payload))
				if isSched {
					delayed[j.ID] = true
				} else {
					delete(delayed, j.ID) // released meanwhile
				}
			}
		}
	}
	if err := s.readAll(ctx, s.n.sched, s.n.prefix+".s.>", each(true)); err != nil {
		return u, err
	}
	if err := s.readAll(ctx, s.n.jobs, s.n.prefix+".q.>", each(false)); err != nil {
		return u, err
	}
	err := s.scanState(ctx, func(r *record) {
		if r.State.Final() {
			delete(jobs, r.ID)
		}
	})
	if err != nil {
		return u, err
	}
	for id, n := range jobs {
		u.Active++
		u.Bytes += n
		if delayed[id] {
			u.Delayed++
		}
	}
	return u, nil
}

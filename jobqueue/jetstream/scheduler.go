package jetstream

import (
	"context"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// scheduler releases delayed jobs. Every process runs one on the shared
// scheduler consumer, so a delayed job is released by whichever process
// gets its message: before RunAt the message is nacked with the time left
// (JetStream keeps it and delivers it again then); at RunAt it is
// republished on its level's subject (the job ID as Nats-Msg-Id makes a
// repeated release harmless) and acknowledged.
//
// JetStream's own message schedules would do this on the server, but they
// cannot be used with DiscardNew, which is how Capacity is enforced.
//
// Between fetches it also runs the usage counters' heal check (see
// heal.go), a few requests every settle period.
func (b *Backend) scheduler() {
	defer b.wg.Done()
	for !b.isClosed() {
		b.led.maybeHeal(time.Now())
		ctx, cancel := context.WithTimeout(b.ctx, max(b.o.poll, time.Second))
		batch, err := b.schedC.Fetch(64, jetstream.FetchContext(ctx))
		if err != nil {
			cancel()
			b.pause(b.o.poll)
			continue
		}
		for m := range batch.Messages() {
			b.release(m)
		}
		cancel()
	}
}

func (b *Backend) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.closing:
	}
}

// release handles one delivery of a scheduled job.
func (b *Backend) release(m jetstream.Msg) {
	job, err := decodeJob(m.Data())
	if err != nil {
		b.deadLetterRaw(m, err)
		return
	}
	if left := time.Until(job.RunAt); left > 0 {
		_ = m.NakWithDelay(left)
		return
	}
	ctx, cancel := b.reqCtx()
	defer cancel()
	if cur, _, ok, err := b.st.readState(ctx, job.ID); err != nil {
		_ = m.NakWithDelay(time.Second)
		return
	} else if ok && cur.State.Final() {
		b.leaveSched(ctx, m, job) // canceled while scheduled
		return
	}
	h := nats.Header{jetstream.MsgIDHeader: {job.ID}}
	if c := m.Headers().Get(countedHeader); c != "" {
		h.Set(countedHeader, c)
	}
	_, _, err = b.st.publish(ctx, b.n.jobSubject(int(job.Priority), job.ID), m.Data(), h)
	if err != nil {
		// Full, or the server is away: try again shortly.
		_ = m.NakWithDelay(min(b.o.poll, time.Second))
		return
	}
	b.leaveSched(ctx, m, job)
	b.signal(1 << job.Priority)
}

// leaveSched removes a released or canceled job's message from SCHED. For
// a job with an owner the message is deleted, and whoever deletes it (this
// or Cancel) ends the job's delay on its owner's counter: the server lets
// only one deletion succeed. Other messages are acknowledged.
func (b *Backend) leaveSched(ctx context.Context, m jetstream.Msg, job *jobqueue.Job) {
	if job.Owner != "" {
		if md, err := m.Metadata(); err == nil {
			if err := b.st.sched.DeleteMsg(ctx, md.Sequence.Stream); err == nil {
				b.undelay(job)
			}
		}
	}
	_ = m.Ack()
}

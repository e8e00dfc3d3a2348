package jetstream

import (
	"container/heap"
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go/jetstream"
)

const allLevels = 1<<jobqueue.NumPriorities - 1

// fetchReq is one Fetch call waiting for messages.
type fetchReq struct {
	max    int
	poll   bool
	after  uint64 // a poll is answered by a round numbered after this one
	msgs   []jetstream.Msg
	served bool
	done   chan struct{}
}

// dispatcher pulls messages for the Fetch calls of this process. It adds up
// their demand and asks the level consumers for that many, highest level
// first, with no-wait pull requests; a level that returned fewer than asked
// is skipped until a signal, a retry coming due or the poll interval says it
// may hold jobs again. One goroutine (loop) does all the pulling, so the
// workers of a process cost one pull request per level per round, however
// many they are.
type dispatcher struct {
	b       *Backend
	mu      sync.Mutex
	reqs    []*fetchReq
	wakes   wakeHeap // retry delays coming due, for the levels they return to
	kick    chan struct{}
	bells   atomic.Uint32
	stopped bool   // the loop has exited; guarded by mu
	round   uint64 // rounds of pulls begun; guarded by mu

	maybe     uint16    // levels that may hold ready jobs; loop only
	heldSince time.Time // since when behind has held polls back; loop only
	heads     [jobqueue.NumPriorities]time.Time
	aged      time.Time // last aging evaluation
}

func (d *dispatcher) init(b *Backend) {
	d.b = b
	d.kick = make(chan struct{}, 1)
	d.maybe = allLevels
}

func (d *dispatcher) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// bell marks levels as possibly holding jobs and wakes the loop.
func (d *dispatcher) bell(mask uint16) {
	if mask&allLevels == 0 {
		return
	}
	d.bells.Or(uint32(mask & allLevels))
	d.poke()
}

// wakeAt re-examines level p at time t (a retry delay ending), and again
// shortly after in case the server's redelivery timer fires a little late.
func (d *dispatcher) wakeAt(p jobqueue.Priority, t time.Time) {
	d.mu.Lock()
	for _, after := range []time.Duration{0, 5 * time.Millisecond, 50 * time.Millisecond} {
		heap.Push(&d.wakes, wake{at: t.Add(after), level: uint16(1) << p})
	}
	first := d.wakes[0].at.Equal(t)
	d.mu.Unlock()
	if first {
		d.poke()
	}
}

func (d *dispatcher) request(max int, poll bool) *fetchReq {
	r := &fetchReq{max: max, poll: poll, done: make(chan struct{})}
	d.mu.Lock()
	r.after = d.round
	if d.stopped {
		r.served = true
		close(r.done)
		d.mu.Unlock()
		return r
	}
	d.reqs = append(d.reqs, r)
	first := len(d.reqs) == 1
	d.mu.Unlock()
	if poll || first {
		d.poke()
	}
	return r
}

// toPoll turns a waiting request into a poll: it is answered after the
// next round of pulls, with or without jobs. A round already under way
// may not look at every level, so it is not the one that answers.
func (d *dispatcher) toPoll(r *fetchReq) {
	d.mu.Lock()
	r.poll, r.after = true, d.round
	d.mu.Unlock()
	d.poke()
}

func (d *dispatcher) loop() {
	defer d.b.wg.Done()
	defer d.failAll()
	poll := time.NewTimer(d.b.o.poll)
	defer poll.Stop()
	wakeT := time.NewTimer(time.Hour)
	defer wakeT.Stop()
	for {
		if d.b.isClosed() {
			return
		}
		d.maybe |= uint16(d.bells.Swap(0))
		now := time.Now()
		d.mu.Lock()
		d.round++
		demand, polls := 0, false
		for _, r := range d.reqs {
			demand += r.max
			polls = polls || r.poll
		}
		for len(d.wakes) > 0 && !d.wakes[0].at.After(now) {
			w := heap.Pop(&d.wakes).(wake)
			d.maybe |= w.level
			d.b.signal(w.level)
		}
		next := time.Hour
		if len(d.wakes) > 0 {
			next = d.wakes[0].at.Sub(now)
		}
		d.mu.Unlock()
		d.maybe |= uint16(d.bells.Swap(0))

		if polls {
			// A poll (a Fetch whose context is done, as when Shutdown
			// drains) answers for every level, signaled or not.
			d.maybe = allLevels
		}
		got := 0
		if demand > 0 {
			msgs := d.sweep(min(demand, d.b.o.batch))
			got = len(msgs)
			if got == 0 && polls && d.behind() {
				// A level's consumer has not counted its newest jobs yet:
				// "nothing left" would be wrong. Pull again shortly.
				select {
				case <-time.After(20 * time.Millisecond):
				case <-d.b.closing:
					return
				}
				continue
			}
			d.heldSince = time.Time{}
			d.distribute(msgs)
		}
		if got > 0 {
			continue
		}
		wakeT.Reset(next)
		select {
		case <-d.kick:
		case <-poll.C:
			d.maybe = allLevels
			poll.Reset(d.b.o.poll)
		case <-wakeT.C:
		case <-d.b.closing:
			return
		}
		wakeT.Stop()
	}
}

// maxHold bounds how long behind may hold polls back: a consumer that
// still lags after that is answered as empty (a drain then leaves the jobs
// in the stream, where the next process finds them).
const maxHold = 5 * time.Second

// behind reports whether a level's newest job in the stream lies past what
// its consumer has delivered. A no-wait pull answers from the consumer's
// count of pending messages, which the server raises asynchronously after
// it stores a message: on a busy server it can say "no messages" for jobs
// already stored (a Shutdown draining right after Start then ran none of
// them). The stream's last sequence per level and the consumer's delivered
// sequence are exact. It says false when it cannot tell, and after polls
// were held back for maxHold.
func (d *dispatcher) behind() bool {
	now := time.Now()
	if d.heldSince.IsZero() {
		d.heldSince = now
	} else if now.Sub(d.heldSince) > maxHold {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.b.o.timeout)
	defer cancel()
	for p := range d.b.st.levels {
		m, err := d.b.st.jobs.GetLastMsgForSubject(ctx, d.b.n.levelFilter(p))
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return false
		}
		ci, err := d.b.st.levels[p].Info(ctx)
		if err != nil {
			return false
		}
		if m.Sequence > ci.Delivered.Stream {
			return true
		}
	}
	return false
}

// distribute hands msgs to the waiting requests in arrival order, answers
// the polls, and gives back what no one waits for any more.
func (d *dispatcher) distribute(msgs []jetstream.Msg) {
	d.mu.Lock()
	i := 0
	keep := d.reqs[:0]
	for _, r := range d.reqs {
		if i < len(msgs) {
			n := min(r.max, len(msgs)-i)
			r.msgs = msgs[i : i+n : i+n]
			i += n
		}
		if len(r.msgs) > 0 || (r.poll && r.after < d.round) {
			r.served = true
			close(r.done)
			continue
		}
		keep = append(keep, r)
	}
	clear(d.reqs[len(keep):])
	d.reqs = keep
	d.mu.Unlock()
	for _, m := range msgs[i:] {
		_ = m.Nak()
	}
}

func (d *dispatcher) failAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	for _, r := range d.reqs {
		r.served = true
		close(r.done)
	}
	d.reqs = nil
}

// sweep pulls up to demand messages, from the highest level down (or in
// aged order) over the levels that may hold jobs.
func (d *dispatcher) sweep(demand int) []jetstream.Msg {
	if !d.b.nc.IsConnected() {
		return nil // a pull would wait out its timeout; the poll retries
	}
	order, aged := d.order()
	var out []jetstream.Msg
	for _, p := range order {
		if d.maybe&(1<<p) == 0 {
			continue
		}
		want := demand - len(out)
		if aged&(1<<p) != 0 {
			want = 1 // an aged level gets its oldest job, then ranks anew
		}
		batch, err := d.b.st.levels[p].FetchNoWait(want)
		if err != nil {
			continue
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if n < want {
			d.maybe &^= 1 << p
		}
		if n > 0 {
			d.heads[p] = time.Time{} // the head moved on
		}
		if len(out) >= demand {
			break
		}
	}
	return out
}

// order returns the levels in the order to pull them and the mask of the
// levels raised by aging. Without aging it is strict priority. With aging,
// the oldest ready job of each level (looked up at most every half
// interval) ranks one level higher per AgingInterval waited, as in the
// memory backend.
func (d *dispatcher) order() ([]int, uint16) {
	order := make([]int, 0, jobqueue.NumPriorities)
	for p := jobqueue.NumPriorities - 1; p >= 0; p-- {
		order = append(order, p)
	}
	iv := d.b.cfg.AgingInterval
	if iv <= 0 {
		return order, 0
	}
	now := time.Now()
	if now.Sub(d.aged) >= max(iv/2, 10*time.Millisecond) {
		d.aged = now
		d.evalHeads()
	}
	rank := func(p int) (int, time.Time) {
		h := d.heads[p]
		if h.IsZero() {
			return p, now
		}
		return min(p+int(now.Sub(h)/iv), int(jobqueue.MaxPriority)), h
	}
	var aged uint16
	sort.SliceStable(order, func(i, j int) bool {
		ri, hi := rank(order[i])
		rj, hj := rank(order[j])
		if ri != rj {
			return ri > rj
		}
		return hi.Before(hj)
	})
	for _, p := range order {
		if r, _ := rank(p); r > p {
			aged |= 1 << p
		}
	}
	return order, aged
}

// evalHeads looks up the time of the oldest undelivered job of each level.
func (d *dispatcher) evalHeads() {
	ctx, cancel := d.b.reqCtx()
	defer cancel()
	for p := range d.heads {
		d.heads[p] = time.Time{}
		ci, err := d.b.st.levels[p].Info(ctx)
		if err != nil || ci.NumPending == 0 {
			continue
		}
		d.maybe |= 1 << p
		m, err := d.b.st.jobs.GetMsg(ctx, ci.Delivered.Stream+1, jetstream.WithGetMsgSubject(d.b.n.levelFilter(p)))
		if err == nil {
			d.heads[p] = m.Time
		}
	}
}

type wake struct {
	at    time.Time
	level uint16
}

type wakeHeap []wake

func (h wakeHeap) Len() int           { return len(h) }
func (h wakeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h wakeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *wakeHeap) Push(x any)        { *h = append(*h, x.(wake)) }
func (h *wakeHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	*h = old[:len(old)-1]
	return w
}

// Fetch implements jobqueue.Backend. The dispatcher pulls messages for it
// (see the package comment); Fetch then claims each one: a compare-and-set
// on the job's entry in the state bucket marks it running with its attempt
// count, which also settles races with Cancel and detects deliveries of
// jobs that already finished. A claimed job's lease lasts AckWait and is
// extended by Lease.Extend. It blocks until a job is leased, ctx ends (then
// it returns ctx.Err()), or the backend closes (jobqueue.ErrClosed); with
// ctx already done it makes one round of pulls, a poll.
func (b *Backend) Fetch(ctx context.Context, dst []jobqueue.Lease, max int) ([]jobqueue.Lease, error) {
	if max <= 0 {
		return dst, nil
	}
	for {
		if b.isClosed() {
			return dst, jobqueue.ErrClosed
		}
		poll := ctx.Err() != nil
		r := b.disp.request(max, poll)
		select {
		case <-r.done:
		case <-ctx.Done():
			// Jobs may be ready but not pulled yet: take what one more
			// round of pulls finds, as a call made with ctx done would.
			b.disp.toPoll(r)
			poll = true
			<-r.done
		}
		n0 := len(dst)
		for _, m := range r.msgs {
			if l := b.claim(m); l != nil {
				dst = append(dst, l)
			}
		}
		if len(dst) > n0 {
			return dst, nil
		}
		// A poll whose jobs all turned out not to run (canceled, say)
		// polls again: more may wait behind them.
		if err := ctx.Err(); err != nil && len(r.msgs) == 0 {
			return dst, err
		}
	}
}

// claim turns a delivered message into a lease, or settles it and returns
// nil if the job must not run (canceled, finished, out of attempts,
// undecodable, or a stale delivery).
func (b *Backend) claim(m jetstream.Msg) *lease {
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return nil
	}
	job, err := decodeJob(m.Data())
	if err != nil {
		b.deadLetterRaw(m, err)
		return nil
	}
	if g, ok := b.enqueuing.Load(job.ID); ok {
		select {
		case <-g.(chan struct{}):
		case <-b.closing:
			return nil
		}
	}
	ctx, cancel := b.reqCtx()
	defer cancel()
	redelivered := md.NumDelivered > 1
	if redelivered {
		if _, ok, err := b.st.getDone(ctx, job.ID); err != nil {
			_ = m.Nak()
			return nil
		} else if ok {
			_ = m.Ack() // finished before its acknowledgement was lost
			return nil
		}
	}
	now := time.Now()
	l := &lease{b: b, m: m, job: job}
	l.rec = record{
		JobInfo:  jobqueue.JobInfo{Job: *job, State: jobqueue.StateRunning, Attempts: 1, StartedAt: now, Worker: b.cfg.WorkerTag},
		Seq:      md.Sequence.Stream,
		Delivery: md.NumDelivered,
		Counted:  m.Headers().Get(countedHeader) != "",
		raw:      jobJSON(job, m.Data()),
	}
	var rev uint64
	for try := 0; try < 8; try++ {
		if try > 0 || redelivered {
			cur, crev, ok, err := b.st.readState(ctx, job.ID)
			if err != nil {
				_ = m.Nak()
				return nil
			}
			rev = crev
			if ok {
				switch {
				case cur.State.Final():
					b.settleFinal(ctx, m, cur)
					return nil
				case cur.State == jobqueue.StateRunning && cur.Delivery >= md.NumDelivered:
					return nil // an older delivery than the one that owns the job
				case cur.Cancel:
					b.finishAside(ctx, m, cur, rev, jobqueue.StateCanceled, jobqueue.ErrCanceled.Error())
					return nil
				case cur.State == jobqueue.StateRunning && cur.Attempts >= job.MaxAttempts:
					b.finishAside(ctx, m, cur, rev, jobqueue.StateFailed,
						fmt.Sprintf("jetstream: lease of attempt %d expired (worker %s lost) and no attempt is left", cur.Attempts, cur.Worker))
					return nil
				}
				if cur.State == jobqueue.StateRunning {
					b.log.Warn("job redelivered: its worker's lease expired", "job", job.ID, "type", job.Type,
						"attempt", cur.Attempts+1, "lost_worker", cur.Worker)
				}
				l.rec.Attempts = cur.Attempts + 1
				l.rec.Progress, l.rec.ProgressMessage = cur.Progress, cur.ProgressMessage
				l.rec.LastError, l.rec.RetriedAt = cur.LastError, cur.RetriedAt
			} else {
				l.rec.Attempts = 1
			}
		}
		nrev, err := b.st.putKV(ctx, b.n.stateKey(job.ID), l.rec.encode(), rev, 0)
		if err == nil {
			l.rev = nrev
			l.attempt = l.rec.Attempts
			b.emit(l.rec.event(jobqueue.EventStarted))
			return l
		}
		if !isWrongSeq(err) {
			_ = m.Nak()
			return nil
		}
	}
	_ = m.Nak()
	return nil
}

// settleFinal removes the message of a job whose state entry is final,
// storing the final record first if it is not in DONE yet (its settler
// stopped between the two).
func (b *Backend) settleFinal(ctx context.Context, m jetstream.Msg, cur *record) {
	if b.st.keepDone {
		_, ok, err := b.st.getDone(ctx, cur.ID)
		if err != nil {
			_ = m.Nak()
			return
		}
		if !ok {
			if _, _, err := b.st.publish(ctx, b.n.doneSubject(cur.ID), cur.encode(), nil); err != nil {
				_ = m.Nak()
				return
			}
		}
	}
	_ = m.Ack()
}

// finishAside ends a job that will not be leased (cancel requested while
// its worker was lost; attempts used up by lost workers).
func (b *Backend) finishAside(ctx context.Context, m jetstream.Msg, cur *record, rev uint64, st jobqueue.State, msg string) {
	r := *cur
	r.State, r.LastError, r.FinishedAt, r.NextRunAt = st, msg, time.Now(), time.Time{}
	data := r.encode()
	if _, err := b.st.putKV(ctx, b.n.stateKey(r.ID), data, rev, settleTTL); err != nil {
		_ = m.Nak()
		return
	}
	// This compare-and-set ended the job: take it off the counters.
	b.uncount(&r.Job, true, r.Counted || m.Headers().Get(countedHeader) != "", false)
	if err := b.st.saveDone(ctx, &r, data); err != nil {
		_ = m.Nak()
		return
	}
	_ = m.Term()
	b.releaseUnique(&r.Job, 0)
	kind := jobqueue.EventFailed
	if st == jobqueue.StateCanceled {
		kind = jobqueue.EventCanceled
	} else {
		b.logDead(&r)
	}
	b.emitAll(r.event(kind))
}

// logDead logs a failed job copied to the dead-letter stream.
func (b *Backend) logDead(r *record) {
	b.log.Warn("job dead-lettered", "job", r.ID, "type", r.Type, "attempt", r.Attempts, "err", r.LastError)
}

// deadLetterRaw terminates a message that does not decode, keeping its
// bytes in the dead-letter stream.
func (b *Backend) deadLetterRaw(m jetstream.Msg, cause error) {
	ctx, cancel := b.reqCtx()
	defer cancel()
	id := "unknown"
	if md, err := m.Metadata(); err == nil {
		id = fmt.Sprintf("seq%d", md.Sequence.Stream)
	}
	if _, _, err := b.st.publish(ctx, b.n.deadSubject(id), m.Data(), nil); err != nil {
		b.log.Error("dead-lettering an undecodable message failed; it stays queued", "message", id, "err", err)
		_ = m.Nak()
		return
	}
	b.log.Error("undecodable job message dead-lettered", "message", id, "err", cause)
	_ = m.TermWithReason(cause.Error())
}

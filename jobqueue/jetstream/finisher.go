package jetstream

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// finisher stores the final records of settled leases in the DONE stream
// without making the worker wait for the store: the record is published
// with a reply subject, and the job's message is acknowledged (removed from
// the work queue) only when the server confirms the record. Until then the
// job's final state entry answers Get, so nothing reads stale. A record the
// server refuses or does not confirm is sent again, up to three times;
// then the message is nacked, and its next delivery finds the final state
// entry and stores the record itself (claim, settleFinal).
type finisher struct {
	b       *Backend
	prefix  string
	sub     *nats.Subscription
	mu      sync.Mutex
	next    uint64
	pending map[uint64]*doneReq
	empty   chan struct{} // closed when pending empties while Close waits
	// ackDelay, in tests, delays each settlement after its record is
	// stored, as a loaded machine does (see listing.dropRetained).
	ackDelay time.Duration
	settled  atomic.Int64 // UnixNano of the last ack or term sent
}

// settling reports whether jobs of this process have finished and may not
// have left the jobs stream yet: records not yet confirmed, or a message
// settled within the last half second (an ack is processed by the server
// after it is sent).
func (f *finisher) settling() bool {
	f.mu.Lock()
	n := len(f.pending)
	f.mu.Unlock()
	return n > 0 || time.Since(time.Unix(0, f.settled.Load())) < settleLag
}

// settleLag is how long after an ack its job may still hold room in the
// jobs stream, as far as a Submit that finds the stream full cares.
const settleLag = 500 * time.Millisecond

type doneReq struct {
	subj  string
	data  []byte
	m     jetstream.Msg
	ack   bool // Ack the message when stored; else Term it with reason
	why   string
	tries int
	sent  time.Time
}

func (f *finisher) start(b *Backend) error {
	f.b = b
	f.pending = make(map[uint64]*doneReq)
	f.prefix = b.nc.NewRespInbox() + "."
	sub, err := b.nc.Subscribe(f.prefix+"*", f.reply)
	if err != nil {
		return err
	}
	f.sub = sub
	return nil
}

// store sends one record and settles m once it is stored.
func (f *finisher) store(subj string, data []byte, m jetstream.Msg, ack bool, why string) {
	f.send(&doneReq{subj: subj, data: data, m: m, ack: ack, why: why})
}

func (f *finisher) send(r *doneReq) {
	f.mu.Lock()
	f.next++
	tok := f.next
	r.tries++
	r.sent = time.Now()
	f.pending[tok] = r
	f.mu.Unlock()
	err := f.b.nc.PublishMsg(&nats.Msg{Subject: r.subj, Reply: f.prefix + strconv.FormatUint(tok, 10), Data: r.data})
	if err != nil {
		f.take(tok)
		f.failed(r)
	}
}

func (f *finisher) take(tok uint64) *doneReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.pending[tok]
	delete(f.pending, tok)
	if len(f.pending) == 0 && f.empty != nil {
		close(f.empty)
		f.empty = nil
	}
	return r
}

// reply handles the server's acknowledgement of a record.
func (f *finisher) reply(m *nats.Msg) {
	tok, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, f.prefix), 10, 64)
	if err != nil {
		return
	}
	r := f.take(tok)
	if r == nil {
		return
	}
	if _, _, err := parsePubAck(m.Data); err != nil {
		f.failed(r)
		return
	}
	if f.ackDelay > 0 {
		time.Sleep(f.ackDelay)
	}
	if r.ack {
		_ = r.m.Ack()
	} else {
		_ = r.m.TermWithReason(r.why)
	}
	f.settled.Store(time.Now().UnixNano())
}

func (f *finisher) failed(r *doneReq) {
	if r.tries < 3 && !f.b.isClosed() {
		f.send(r)
		return
	}
	f.b.log.Warn("storing a final record failed; the job's message is given back and settled on its next delivery",
		"subject", r.subj, "tries", r.tries)
	_ = r.m.Nak()
}

// expire resends the records not confirmed within the request timeout.
func (f *finisher) expire() {
	cutoff := time.Now().Add(-f.b.o.timeout)
	var late []*doneReq
	f.mu.Lock()
	for tok, r := range f.pending {
		if r.sent.Before(cutoff) {
			delete(f.pending, tok)
			late = append(late, r)
		}
	}
	f.mu.Unlock()
	for _, r := range late {
		f.failed(r)
	}
}

// drain waits until every record sent is confirmed (or given up), or ctx
// ends, then stops listening for confirmations.
func (f *finisher) drain(ctx context.Context) {
	if f.sub == nil {
		return
	}
	deadline := time.NewTimer(f.b.o.timeout)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		if len(f.pending) == 0 {
			f.mu.Unlock()
			break
		}
		if f.empty == nil {
			f.empty = make(chan struct{})
		}
		empty := f.empty
		f.mu.Unlock()
		select {
		case <-empty:
			continue
		case <-ctx.Done():
		case <-deadline.C:
		}
		break
	}
	_ = f.sub.Unsubscribe()
}

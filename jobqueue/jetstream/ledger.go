package jetstream

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// The usage counters: what Quota and BackendConfig.MaxBytes are checked
// against. Each is an entry of the state bucket holding a usage:
//
//	o.<32 hex digits of the SHA-256 of the owner>  one owner's active jobs, delayed jobs and payload bytes
//	g.bytes                                        the payload bytes of every active job counted for MaxBytes
//
// An update is a compare-and-set on the entry's revision. Updates of one
// entry made at the same time in one process are applied together (group
// commit: one writes, the others wait for it), so a burst costs a few
// writes rather than one per job and the process does not conflict with
// itself. Each write carries a message ID, so a write repeated after a
// lost reply is not applied twice. An entry that falls to zero is written
// with a TTL and disappears after idleTTL.
//
// Who moves a counter: Enqueue adds a job before storing it (and takes it
// back if the store is refused); the one compare-and-set that makes a
// job's state final (Ack, Term, Cancel, a lost worker's last attempt)
// removes it; removing a delayed job's message from SCHED (its release to
// JOBS, or Cancel) ends its delay. So each move happens once per job while
// processes live. A process that dies, or loses the server for longer than
// its retries, between a store and the counter write leaves the counter too
// high, never too low: the quota and the byte budget get tighter, not
// looser. The heal check (heal.go) resets counters left above zero once
// the queue has been idle long enough to prove them stale. reserve,
// uncount and undelay (usage.go) are the moves.

const (
	bytesKey = "g.bytes"
	ownerPre = "o."
	// idleTTL is how long a counter at zero stays in the bucket.
	idleTTL = 10 * time.Minute
	// ledgerKeysMax bounds the entries whose last revision is cached.
	ledgerKeysMax = 4096
)

// ownerKey is the state bucket key of owner's counter; owner names may hold
// any byte, so the key is a hash.
func ownerKey(owner string) string {
	h := sha256.Sum256([]byte(owner))
	return ownerPre + hex.EncodeToString(h[:16])
}

// usage is the value of a counter entry (and a change to one).
type usage struct {
	Owner   string `json:"owner,omitempty"` // for people reading the bucket
	Active  int    `json:"active,omitempty"`
	Delayed int    `json:"delayed,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
}

func (u usage) zero() bool { return u.Active == 0 && u.Delayed == 0 && u.Bytes == 0 }

func (u usage) public() jobqueue.Usage {
	return jobqueue.Usage{Active: u.Active, Delayed: u.Delayed, Bytes: u.Bytes}
}

// add applies d, never going below zero.
func (u *usage) add(d usage) {
	u.Active = max(u.Active+d.Active, 0)
	u.Delayed = max(u.Delayed+d.Delayed, 0)
	u.Bytes = max(u.Bytes+d.Bytes, 0)
}

func decodeUsage(data []byte) (usage, error) {
	var u usage
	if err := json.Unmarshal(data, &u); err != nil {
		return usage{}, fmt.Errorf("%w: usage counter: %v", ErrBadMessage, err)
	}
	u.Active, u.Delayed, u.Bytes = max(u.Active, 0), max(u.Delayed, 0), max(u.Bytes, 0)
	return u, nil
}

// ledger applies changes to the counters, one group commit per entry.
type ledger struct {
	b      *Backend
	settle time.Duration // the longest a counter write may lag its store (see heal)

	mu   sync.Mutex
	keys map[string]*ledgerKey

	heal healer // the scheduler goroutine's only
}

// ledgerKey is one entry: its cached revision and value, and the changes
// waiting for the writer. rev, cur and known belong to the op leading the
// entry's commit (busy).
type ledgerKey struct {
	name, owner string
	queue       []*ledgerOp
	busy        bool

	known bool
	rev   uint64
	cur   usage
}

// ledgerOp is one change: d is added if check (nil for releases) admits
// it given the entry's value at the time.
type ledgerOp struct {
	d     usage
	check func(jobqueue.Usage) error
	err   error
	lead  bool
	wake  chan struct{}
}

func (l *ledger) init(b *Backend) {
	l.b = b
	l.keys = make(map[string]*ledgerKey)
	l.settle = 3 * b.o.timeout
}

// apply adds d to the entry key (the counter of owner, "" for the byte
// budget) if check admits it, and returns check's error or the error that
// kept the change from being written. It blocks for a write to the server
// (shared with the changes made meanwhile), at most about the request
// timeout.
func (l *ledger) apply(key, owner string, d usage, check func(jobqueue.Usage) error) error {
	op := &ledgerOp{d: d, check: check, wake: make(chan struct{})}
	l.mu.Lock()
	k := l.keys[key]
	if k == nil {
		k = &ledgerKey{name: key, owner: owner}
		l.keys[key] = k
	}
	k.queue = append(k.queue, op)
	if k.busy {
		l.mu.Unlock()
		<-op.wake
		if !op.lead {
			return op.err
		}
		l.mu.Lock()
	}
	k.busy = true
	batch := k.queue
	k.queue = nil
	l.mu.Unlock()

	l.commit(k, batch)

	l.mu.Lock()
	if len(k.queue) > 0 {
		next := k.queue[0]
		next.lead = true
		close(next.wake)
	} else {
		k.busy = false
		if len(l.keys) > ledgerKeysMax {
			delete(l.keys, key)
		}
	}
	l.mu.Unlock()
	for _, o := range batch {
		if o != op {
			close(o.wake)
		}
	}
	return op.err
}

// commit writes the changes of batch to k in one compare-and-set, retrying
// on conflicts with other processes until the request timeout. A write
// whose outcome is unknown (no reply) is sent again with the same message
// ID and the same decisions, so it is applied at most once.
func (l *ledger) commit(k *ledgerKey, batch []*ledgerOp) {
	b := l.b
	var idb [12]byte
	_, _ = crand.Read(idb[:])
	msgID := "u" + hex.EncodeToString(idb[:])
	deadline := time.Now().Add(b.o.timeout)
	frozen := false // an earlier write may have been applied: keep its decisions
	wait := time.Millisecond
	for try := 0; ; try++ {
		wrote, err := l.tryCommit(k, batch, msgID, frozen)
		if err == nil {
			return
		}
		if err == errStale {
			continue
		}
		k.known = false
		// A write without a reply may have been applied.
		frozen = frozen || wrote && apiCode(err) == 0 && !errors.Is(err, jetstream.ErrNoStreamResponse)
		if b.isClosed() || time.Now().After(deadline) {
			for _, op := range batch {
				if op.err == nil {
					op.err = fmt.Errorf("jetstream: usage counter %s: %w", k.name, err)
				}
			}
			return
		}
		if try >= 2 || !isWrongSeq(err) {
			// Conflicts with other processes: back off with jitter so
			// they do not keep colliding.
			t := time.NewTimer(wait/2 + rand.N(wait))
			select {
			case <-t.C:
			case <-b.closing:
				t.Stop()
			}
			wait = min(2*wait, 50*time.Millisecond)
		}
	}
}

// tryCommit makes one attempt; wrote reports that it sent a write (whose
// error is err).
func (l *ledger) tryCommit(k *ledgerKey, batch []*ledgerOp, msgID string, frozen bool) (wrote bool, err error) {
	b := l.b
	ctx, cancel := b.reqCtx()
	defer cancel()
	fresh := !k.known
	if fresh {
		e, err := b.st.readKV(ctx, k.name)
		if err != nil {
			return false, err
		}
		k.rev, k.cur = e.rev, usage{}
		if e.ok {
			if k.cur, err = decodeUsage(e.val); err != nil {
				b.log.Error("overwriting a usage counter that does not decode", "key", k.name, "err", err)
			}
		}
		k.known = true
	}
	next := k.cur
	changed, refused := false, false
	for _, op := range batch {
		if !frozen {
			op.err = nil
			if op.check != nil {
				op.err = op.check(next.public())
				refused = refused || op.err != nil
			}
		}
		if op.err == nil {
			next.add(op.d)
			changed = changed || op.d != usage{}
		}
	}
	if refused && !fresh {
		// Refused on the cached value, which other processes may have
		// lowered since: decide on the server's.
		k.known = false
		return false, errStale
	}
	if !changed {
		return false, nil
	}
	next.Owner = k.owner
	data, err := json.Marshal(&next)
	if err != nil {
		return false, err
	}
	var ttl time.Duration
	if next.zero() {
		ttl = idleTTL
	}
	rev, dup, err := b.st.putKVOnce(ctx, k.name, data, k.rev, ttl, msgID)
	switch {
	case err != nil:
		return true, err
	case dup:
		k.known = false // applied by an earlier try; its revision is unknown
	default:
		k.rev, k.cur = rev, next
	}
	return true, nil
}

// errStale asks commit to read the entry again and decide anew.
var errStale = errors.New("stale usage counter")

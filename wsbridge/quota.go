package wsbridge

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corework/corework/jobqueue"
)

// group is the state one Quota applies to: the connections of one
// authenticated principal, or the anonymous connections of one remote
// address. The queue enforces the job limits of authenticated principals
// (jobqueue.JobRequest.Quota, against all their jobs); for an anonymous
// address, whose principals are many, the group also tallies the active
// jobs its connections submitted through this Server (see groups.jobs).
type group struct {
	key      string
	quota    Quota          // resolved: zero fields mean no limit
	jobQuota jobqueue.Quota // the job limits, for each JobRequest
	anon     bool           // an address: tally its jobs

	// In flight: commands being handled plus reply frames queued and not
	// yet written, across the group's connections.
	inflight atomic.Int64
	queued   atomic.Int64 // bytes queued to the group's connections
	watches  atomic.Int64 // jobs watched by the group's connections

	waiting atomic.Int32 // readers waiting in acquire
	// holdUntil, when not zero, is the time (UnixNano) before which the
	// group's connections read no command: see refused.
	holdUntil atomic.Int64
	refuseMu  sync.Mutex
	window    time.Time // start of the current refusal window
	refusals  int       // refusals in it
	wakeMu    sync.Mutex
	wake      chan struct{} // closed to wake the waiting readers

	// Guarded by groups.mu.
	refs    int   // connections plus tallied jobs
	active  int   // tallied jobs (anon only)
	delayed int   // tallied jobs whose run_at was ahead when submitted and that have not started
	bytes   int64 // payload bytes of the tallied jobs
}

func newGroup(key string, q Quota, anon bool) *group {
	return &group{
		key:   key,
		quota: q,
		anon:  anon,
		jobQuota: jobqueue.Quota{
			MaxActive:  q.MaxActive,
			MaxDelayed: q.MaxDelayed,
			MaxBytes:   q.MaxBytes,
			MaxDelay:   q.MaxDelay,
		},
	}
}

// overQueued reports whether n more bytes queued would take the group over
// MaxQueuedBytes.
func (g *group) overQueued(n int64) bool {
	return g.quota.MaxQueuedBytes > 0 && g.queued.Load()+n > g.quota.MaxQueuedBytes
}

// roomy reports whether the group may start handling one more command.
func (g *group) roomy() bool {
	q := &g.quota
	return (q.MaxInFlight == 0 || g.inflight.Load() < int64(q.MaxInFlight)) &&
		(q.MaxQueuedBytes == 0 || g.queued.Load() < q.MaxQueuedBytes)
}

// Refusals a group may get per window before its reading holds.
const (
	refusalWindow = 100 * time.Millisecond
	refusalBurst  = 10
)

// refused counts a command refused for a quota. Past refusalBurst in a
// refusalWindow, the group's connections read no command until the window
// ends: a client that keeps sending over its quota gets about a hundred
// refusals a second, and costs the server as little, instead of taking a
// core to be refused.
func (g *group) refused() {
	g.refuseMu.Lock()
	defer g.refuseMu.Unlock()
	now := time.Now()
	if now.Sub(g.window) >= refusalWindow {
		g.window, g.refusals = now, 0
	}
	g.refusals++
	if g.refusals > refusalBurst {
		g.holdUntil.Store(g.window.Add(refusalWindow).UnixNano())
	}
}

// held returns how long the group's reading must still wait, or 0.
func (g *group) held() time.Duration {
	until := g.holdUntil.Load()
	if until == 0 {
		return 0
	}
	d := time.Duration(until - time.Now().UnixNano())
	if d <= 0 {
		g.holdUntil.CompareAndSwap(until, 0)
		return 0
	}
	return d
}

// tryAcquire takes an in-flight slot for a command if the group has room
// (see roomy). Release it with release(1, 0) once the command is handled;
// its replies hold slots of their own until written.
func (g *group) tryAcquire() bool {
	for g.roomy() {
		n := g.inflight.Load()
		if g.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
	return false
}

// acquire is tryAcquire that waits for room. It returns false, without a
// slot, if done is closed first.
func (g *group) acquire(done <-chan struct{}) bool {
	for !g.tryAcquire() {
		if !g.wait(done) {
			return false
		}
	}
	return true
}

// wait blocks until a release may have made room, or done is closed (it
// then returns false). A timer guards against a missed wake-up.
func (g *group) wait(done <-chan struct{}) bool {
	g.wakeMu.Lock()
	if g.wake == nil {
		g.wake = make(chan struct{})
	}
	ch := g.wake
	g.waiting.Add(1)
	g.wakeMu.Unlock()
	defer g.waiting.Add(-1)
	if g.roomy() {
		return true
	}
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-done:
		return false
	}
	return true
}

// release returns n in-flight slots and bytes queued bytes, and wakes the
// readers waiting for room.
func (g *group) release(n, bytes int64) {
	if n != 0 {
		g.inflight.Add(-n)
	}
	if bytes != 0 {
		g.queued.Add(-bytes)
	}
	if g.waiting.Load() > 0 {
		g.wakeMu.Lock()
		if g.wake != nil {
			close(g.wake)
			g.wake = nil
		}
		g.wakeMu.Unlock()
	}
}

// reserveWatch takes one of the group's MaxWatches, if one is left.
func (g *group) reserveWatch() bool {
	max := int64(g.quota.MaxWatches)
	for {
		n := g.watches.Load()
		if max > 0 && n >= max {
			return false
		}
		if g.watches.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// releaseWatch returns a watch taken by reserveWatch.
func (g *group) releaseWatch() { g.watches.Add(-1) }

// groups holds the Server's groups, each while a connection or a tallied
// job refers to it, and the tallied jobs of anonymous groups.
type groups struct {
	mu       sync.Mutex
	m        map[string]*group
	jobs     map[string]tallied // by job ID
	nDelayed atomic.Int64       // tallied jobs counted as delayed
}

// tallied is a job of an anonymous group, counted against its quota until
// its final event.
type tallied struct {
	g       *group
	delayed bool
	bytes   int64
}

func (gs *groups) init() {
	gs.m = make(map[string]*group)
	gs.jobs = make(map[string]tallied)
}

// join returns the group of key, made with mk if there is none, and counts
// one more reference to it.
func (gs *groups) join(key string, mk func() *group) *group {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.m[key]
	if g == nil {
		g = mk()
		gs.m[key] = g
	}
	g.refs++
	return g
}

// leave drops a reference to g.
func (gs *groups) leave(g *group) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	gs.unrefLocked(g)
}

func (gs *groups) unrefLocked(g *group) {
	g.refs--
	if g.refs == 0 && gs.m[g.key] == g {
		delete(gs.m, g.key)
	}
}

// tally counts job id, about to be submitted with payload bytes and
// delayed or not, against anonymous group g. It returns false if the job
// is tallied already (a resubmission of it), and a quota error if the job
// does not fit.
func (gs *groups) tally(g *group, id string, bytes int64, delayed bool) (bool, error) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if _, ok := gs.jobs[id]; ok {
		return false, nil
	}
	q := &g.quota
	switch {
	case q.MaxActive > 0 && g.active >= q.MaxActive:
		return false, fmt.Errorf("%w: %d active jobs from this address, the most allowed", jobqueue.ErrQuotaExceeded, q.MaxActive)
	case delayed && q.MaxDelayed > 0 && g.delayed >= q.MaxDelayed:
		return false, fmt.Errorf("%w: %d delayed jobs from this address, the most allowed", jobqueue.ErrQuotaExceeded, q.MaxDelayed)
	case q.MaxBytes > 0 && g.bytes+bytes > q.MaxBytes:
		return false, fmt.Errorf("%w: %d payload bytes stored from this address, %d more would exceed %d",
			jobqueue.ErrQuotaExceeded, g.bytes, bytes, q.MaxBytes)
	}
	gs.jobs[id] = tallied{g: g, delayed: delayed, bytes: bytes}
	g.active++
	g.bytes += bytes
	if delayed {
		g.delayed++
		gs.nDelayed.Add(1)
	}
	g.refs++
	return true, nil
}

// finished ends the tally of job id, if it has one.
func (gs *groups) finished(id string) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	t, ok := gs.jobs[id]
	if !ok {
		return
	}
	delete(gs.jobs, id)
	g := t.g
	g.active--
	g.bytes -= t.bytes
	if t.delayed {
		g.delayed--
		gs.nDelayed.Add(-1)
	}
	gs.unrefLocked(g)
}

// started stops counting job id as delayed. It costs an atomic load when
// no tallied job is delayed.
func (gs *groups) started(id string) {
	if gs.nDelayed.Load() == 0 {
		return
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if t, ok := gs.jobs[id]; ok && t.delayed {
		t.delayed = false
		gs.jobs[id] = t
		t.g.delayed--
		gs.nDelayed.Add(-1)
	}
}

// talliedIDs returns the IDs of the tallied jobs.
func (gs *groups) talliedIDs() []string {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	ids := make([]string, 0, len(gs.jobs))
	for id := range gs.jobs {
		ids = append(ids, id)
	}
	return ids
}

// addressKey returns the key of the group of anonymous connections from
// remote (a RemoteAddr): its IPv4 address, or its IPv6 /64 (one host
// usually holds a whole /64).
func addressKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "addr:" + host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return "addr:" + p.String()
	}
	return "addr:" + ip.String()
}

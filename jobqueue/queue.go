package jobqueue

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Queue is a priority job queue: callers Submit jobs, a fixed set of worker
// goroutines runs them by priority through the registered handlers, and
// events report their progress. Its methods are safe for concurrent use.
//
// The lifecycle is New, Handle (and Use), Start, then Shutdown. Jobs
// submitted before Start wait for it.
type Queue struct {
	cfg     Config
	log     *slog.Logger // cfg.Logger with the queue's tag
	backend Backend
	ids     *idGen
	started time.Time

	hmu      sync.Mutex
	handlers atomic.Pointer[map[string]*entry]
	mws      []Middleware

	life      sync.Mutex
	running   bool
	workers   []*worker
	live      atomic.Int32
	closed    atomic.Bool
	hardStop  atomic.Bool
	fetchCtx  context.Context
	stopFetch context.CancelFunc
	wdone     chan struct{} // closed when every worker has exited
	final     sync.Once
	finalDone chan struct{}
	done      chan struct{} // closed once Shutdown has finished
	keeperEnd chan struct{}
	keeperWG  sync.WaitGroup
	schedules []*scheduled       // registered by Schedule before Start
	schedStop context.CancelFunc // ends runSchedules; nil if it never ran
	schedWG   sync.WaitGroup
	nworkers  atomic.Int32 // active workers: Config.Workers, or the autoscaler's count
	resizes   atomic.Uint64
	autoStop  context.CancelFunc // ends the autoscaler; nil if it never ran
	autoWG    sync.WaitGroup
	wdoneOnce sync.Once
	left      atomic.Int64
	fetchFail atomic.Bool // a worker's fetch failed and none has succeeded since

	subMu sync.Mutex
	subs  atomic.Pointer[[]*Subscription]

	waitMu   sync.Mutex
	waiters  map[string][]chan Event
	nwaiters atomic.Int64

	cancelMu sync.Mutex
	cancels  map[string]time.Time // Cancel requests not yet matched to a local handler
	npending atomic.Int32

	submitted   atomic.Uint64
	interrupted atomic.Int64
	idle        counters // outcomes settled outside workers (Cancel of a waiting job)
	levels      [NumPriorities]counters
	levelWait   [NumPriorities]histogram
}

// Tag returns the random 7-character tag that ends this Queue's job IDs and
// marks the jobs its workers run (JobInfo.Worker).
func (q *Queue) Tag() string { return string(q.ids.tag[:]) }

// backoff returns the delay before the attempt following attempt n.
func (q *Queue) backoff(n int, err error) time.Duration {
	if q.cfg.Backoff != nil {
		return q.cfg.Backoff(n, err)
	}
	d := q.cfg.MaxRetryDelay
	if n < 62 {
		if e := q.cfg.RetryDelay << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
}

func (q *Queue) reportError(job *Job, attempt int, err error) {
	if q.cfg.OnError != nil {
		q.cfg.OnError(job, attempt, err)
	}
}

// logBackendError logs a backend error at Error level, with the job it
// concerns if any.
func (q *Queue) logBackendError(job *Job, attempt int, msg string, err error) {
	if job == nil {
		q.log.Error(msg, "err", err)
		return
	}
	q.log.Error(msg, "job", job.ID, "type", job.Type, "attempt", attempt, "err", err)
}

// count adds an outcome to the worker's (or, outside workers, the
// Queue's), the type's and the level's counters.
func (q *Queue) count(w *worker, e *entry, job *Job, k EventKind) {
	if w != nil {
		w.count(k)
	} else {
		q.idle.count(k)
	}
	if e != nil {
		e.c.count(k)
	}
	if k != EventRetrying {
		q.levels[job.Priority].count(k)
	}
}

// uncount takes back a count made before the lease was settled.
func (q *Queue) uncount(w *worker, e *entry, job *Job, k EventKind) {
	w.uncount(k)
	if e != nil {
		e.c.uncount(k)
	}
	q.levels[job.Priority].uncount(k)
}

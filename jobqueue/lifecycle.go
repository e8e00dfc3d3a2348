package jobqueue

import (
	"context"
	"fmt"
	"time"
)

// New returns a Queue configured by cfg. It opens the backend but starts no
// worker: register handlers, then call Start. It returns an error if cfg is
// invalid or the backend fails to open.
func New(cfg Config) (*Queue, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	q := &Queue{
		cfg:       cfg,
		backend:   cfg.Backend,
		ids:       newIDGen(),
		started:   clockNow(),
		wdone:     make(chan struct{}),
		finalDone: make(chan struct{}),
		done:      make(chan struct{}),
		waiters:   make(map[string][]chan Event),
		cancels:   make(map[string]time.Time),
	}
	q.log = cfg.Logger.With("queue", q.Tag())
	q.nworkers.Store(int32(cfg.Workers))
	q.fetchCtx, q.stopFetch = context.WithCancel(context.Background())
	err = q.backend.Open(q.backendConfig())
	if err != nil {
		q.stopFetch()
		return nil, fmt.Errorf("jobqueue: opening backend: %w", err)
	}
	if n, ok := q.backend.(Notifier); ok {
		n.Notify(Hooks{CancelRunning: q.cancelLocal, Publish: q.publishRemote})
	}
	return q, nil
}

// Start starts the workers. It returns ErrClosed after Shutdown and does
// nothing if the workers already run.
func (q *Queue) Start() error {
	q.life.Lock()
	defer q.life.Unlock()
	if q.closed.Load() {
		return ErrClosed
	}
	if q.running {
		return nil
	}
	q.running = true
	q.workers = make([]*worker, q.cfg.Workers)
	q.live.Store(int32(len(q.workers)))
	if len(q.workers) == 0 {
		q.closeWdone()
	}
	for i := range q.workers {
		w := &worker{q: q}
		q.workers[i] = w
		q.startWorker(w)
	}
	if a := q.cfg.Autoscale; a != nil {
		ctx, cancel := context.WithCancel(context.Background())
		q.autoStop = cancel
		q.autoWG.Add(1)
		go q.autoscale(ctx, a)
	}
	if k, ok := q.backend.(LeaseKeeper); ok && len(q.workers) > 0 {
		if d := k.LeaseDuration(); d > 0 {
			q.keeperEnd = make(chan struct{})
			q.keeperWG.Add(1)
			go q.keepLeases(d / 3)
		}
	}
	if len(q.schedules) > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		q.schedStop = cancel
		q.schedWG.Add(1)
		go q.runSchedules(ctx)
	}
	q.log.Info("queue started", "workers", len(q.workers), "schedules", len(q.schedules), "backend", fmt.Sprintf("%T", q.backend))
	return nil
}

func (q *Queue) workerExited() {
	if q.live.Add(-1) == 0 {
		q.closeWdone()
	}
}

// closeWdone closes wdone once: workers are gone (or none ever ran).
func (q *Queue) closeWdone() { q.wdoneOnce.Do(func() { close(q.wdone) }) }

// keepLeases extends the leases of running jobs every interval.
func (q *Queue) keepLeases(every time.Duration) {
	defer q.keeperWG.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-q.keeperEnd:
			return
		case <-t.C:
		}
		for _, w := range q.runningWorkers() {
			if c := w.cur.Load(); c != nil {
				if err := c.lease.Extend(context.Background()); err != nil {
					err = fmt.Errorf("jobqueue: extending lease: %w", err)
					q.logBackendError(c.job, c.attempt, "extending lease failed", err)
					q.reportError(c.job, c.attempt, err)
				}
			}
		}
	}
}

func (q *Queue) runningWorkers() []*worker {
	q.life.Lock()
	defer q.life.Unlock()
	return q.workers
}

// Shutdown stops the Queue: Submit returns ErrClosed from now on; jobs not
// yet started are drained or left as Config.ShutdownPolicy says; running
// jobs finish. If ctx ends first, Shutdown cancels the running handlers'
// contexts (cause ErrClosed; a job whose handler then fails goes back to
// pending, counted in Stats.Interrupted) and returns an error wrapping
// ctx.Err() without waiting for handlers that ignore their context; call
// Shutdown again to wait for them. Once the workers have exited, it ends
// the subscriptions (after their held final events, waiting at most a
// second for their readers), releases waiters, closes the backend and
// records in Stats.Left the active jobs left behind. Shutdown is idempotent and safe to call
// concurrently; after it returns nil, every goroutine of the Queue has
// exited.
func (q *Queue) Shutdown(ctx context.Context) error {
	q.life.Lock()
	if !q.closed.Load() {
		q.closed.Store(true)
		q.stopFetch()
		if q.schedStop != nil {
			q.schedStop()
		}
		if q.autoStop != nil {
			q.autoStop()
		}
		q.log.Info("queue shutting down", "policy", q.cfg.ShutdownPolicy.name())
		if !q.running {
			q.running = true
			q.closeWdone()
		}
	}
	q.life.Unlock()
	select {
	case <-q.wdone:
	case <-ctx.Done():
		first := !q.hardStop.Swap(true)
		running := 0
		for _, w := range q.runningWorkers() {
			if c := w.cur.Load(); c != nil {
				running++
				c.cancel(ErrClosed)
			}
		}
		if first {
			q.log.Warn("shutdown context ended; canceling running jobs", "running", running, "err", ctx.Err())
		}
		return fmt.Errorf("jobqueue: shutdown: %w", ctx.Err())
	}
	var err error
	q.final.Do(func() { err = q.finish(ctx) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return fmt.Errorf("jobqueue: shutdown: %w", ctx.Err())
	}
	return err
}

// finish runs once, after every worker has exited.
func (q *Queue) finish(ctx context.Context) error {
	q.schedWG.Wait() // it submits no more once Shutdown began
	q.autoWG.Wait()
	if q.keeperEnd != nil {
		close(q.keeperEnd)
		q.keeperWG.Wait()
	}
	if bs, err := q.backend.Stats(ctx); err == nil {
		q.left.Store(int64(bs.Pending + bs.Scheduled + bs.Retrying))
	}
	q.subMu.Lock()
	close(q.finalDone)
	var subs []*Subscription
	if s := q.subs.Load(); s != nil {
		subs = *s
	}
	q.subs.Store(nil)
	q.subMu.Unlock()
	// Subscribers get up to a second (less if ctx ends) to take the final
	// events held for them, so an abandoned subscription cannot hold
	// Shutdown forever.
	grace, cancel := context.WithTimeout(ctx, time.Second)
	for _, s := range subs {
		s.end(grace.Done())
	}
	cancel()
	err := q.backend.Close(ctx)
	close(q.done)
	if err != nil {
		err = fmt.Errorf("jobqueue: closing backend: %w", err)
		q.logBackendError(nil, 0, "closing backend failed", err)
		return err
	}
	q.log.Info("queue stopped", "left", q.left.Load(), "interrupted", q.interrupted.Load())
	return nil
}

package pool

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/corework/corework/panics"
)

// GroupOption configures a Group.
type GroupOption func(*Group)

// WithCollectErrors makes a Group run every task to the end and return all
// their errors joined with errors.Join, instead of cancelling the group's
// context at the first error.
func WithCollectErrors() GroupOption {
	return func(g *Group) { g.collect = true }
}

// WithTaskTimeout gives each task of a Group a context that ends after d. A
// task that overruns gets context.DeadlineExceeded from its context; it is
// not stopped by force, so it must watch its context.
func WithTaskTimeout(d time.Duration) GroupOption {
	return func(g *Group) { g.timeout = d }
}

// Group is a set of tasks run on a Pool whose errors are collected, in the
// manner of golang.org/x/sync/errgroup: by default the first error cancels
// the group's context and is the one Wait returns. Create it with
// Pool.Group. A Group must not be reused after Wait returns.
type Group struct {
	p       *Pool
	ctx     context.Context
	cancel  context.CancelCauseFunc
	collect bool
	timeout time.Duration

	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
	errs []error
}

// Group returns a new Group whose tasks run on p with a context derived
// from ctx.
func (p *Pool) Group(ctx context.Context, opts ...GroupOption) *Group {
	g := &Group{p: p}
	for _, o := range opts {
		o(g)
	}
	g.ctx, g.cancel = context.WithCancelCause(ctx)
	return g
}

// Context returns the group's context: it ends when the parent ends, when
// a task fails (unless WithCollectErrors is set), or when Wait returns.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn on the pool with the group's context. It blocks like Pool.Go
// while the pool is saturated, but gives up when the group's context ends;
// fn then does not run and the context's error becomes the task's error. A
// panic in fn becomes the task's error as a *panics.Error. If the pool is
// closed the task's error is ErrClosed.
func (g *Group) Go(fn func(ctx context.Context) error) {
	g.wg.Add(1)
	err := g.p.Submit(g.ctx, func() {
		defer g.wg.Done()
		g.record(g.runTask(fn))
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			err = context.Cause(g.ctx)
		}
		g.record(err)
		g.wg.Done()
	}
}

func (g *Group) runTask(fn func(ctx context.Context) error) (err error) {
	ctx := g.ctx
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			err = panics.New("pool", "", r)
		}
	}()
	return fn(ctx)
}

func (g *Group) record(err error) {
	if err == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.collect {
		g.errs = append(g.errs, err)
		return
	}
	if g.err == nil {
		g.err = err
		g.cancel(err)
	}
}

// Wait blocks until every task started with Go has returned, then returns
// the first error (or, with WithCollectErrors, all errors joined; nil if
// none).
func (g *Group) Wait() error {
	g.wg.Wait()
	g.cancel(context.Canceled)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.collect {
		return errors.Join(g.errs...)
	}
	return g.err
}

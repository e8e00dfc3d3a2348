package pool

import (
	"context"
	"iter"

	"github.com/corework/corework/panics"
)

// Map calls fn for every item on p and returns the results in input order.
// The first error cancels the context passed to the remaining calls, and
// Map returns it together with the results gathered so far (the slots of
// failed or skipped items hold zero values). A panic in fn is returned as a
// *panics.Error. Map blocks until every call it started has returned.
func Map[T, R any](ctx context.Context, p *Pool, items []T, fn func(context.Context, T) (R, error)) ([]R, error) {
	out := make([]R, len(items))
	g := p.Group(ctx)
	for i := range items {
		if g.ctx.Err() != nil {
			break
		}
		g.Go(func(ctx context.Context) error {
			r, err := fn(ctx, items[i])
			if err == nil {
				out[i] = r
			}
			return err
		})
	}
	return out, g.Wait()
}

// MapOption configures MapSeq.
type MapOption func(*mapOptions)

type mapOptions struct{ inFlight int }

// WithInFlight sets how many items MapSeq keeps in flight at once: the
// bound on its memory. The default is twice the pool's size; n < 1 means 1.
func WithInFlight(n int) MapOption {
	return func(o *mapOptions) { o.inFlight = n }
}

type slot[R any] struct {
	done chan struct{}
	r    R
	err  error
}

// MapSeq calls fn for every item of items on p and yields the results in
// input order. At most WithInFlight items are in flight at any time, so
// memory stays flat however long the input is. Each result comes with its
// own error (a panic in fn is a *panics.Error); an error does not stop the
// sequence. Stopping the iteration early cancels the context of calls still
// in flight and waits for them, so no task outlives the loop. If ctx ends,
// the items not yet started are skipped and the sequence ends after one
// final yield of ctx.Err().
func MapSeq[T, R any](ctx context.Context, p *Pool, items iter.Seq[T], fn func(context.Context, T) (R, error), opts ...MapOption) iter.Seq2[R, error] {
	o := mapOptions{inFlight: 2 * p.Size()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.inFlight < 1 {
		o.inFlight = 1
	}
	return func(yield func(R, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ring := make([]*slot[R], o.inFlight)
		for i := range ring {
			ring[i] = &slot[R]{done: make(chan struct{}, 1)}
		}
		head, n := 0, 0 // oldest in-flight slot, number in flight
		drain := func() {
			for ; n > 0; n-- {
				<-ring[head].done
				head = (head + 1) % len(ring)
			}
		}
		defer func() {
			cancel()
			drain()
		}()
		// next yields the oldest result and frees its slot.
		next := func() bool {
			s := ring[head]
			<-s.done
			head = (head + 1) % len(ring)
			n--
			r, err := s.r, s.err
			var zero R
			s.r, s.err = zero, nil
			return yield(r, err)
		}
		for item := range items {
			if n == len(ring) && !next() {
				return
			}
			s := ring[(head+n)%len(ring)]
			n++
			if err := p.Submit(ctx, func() {
				defer func() {
					if r := recover(); r != nil {
						s.err = panics.New("pool", "", r)
					}
					s.done <- struct{}{}
				}()
				s.r, s.err = fn(ctx, item)
			}); err != nil {
				s.err = err
				s.done <- struct{}{}
				for n > 0 {
					if !next() {
						return
					}
				}
				return
			}
		}
		for n > 0 {
			if !next() {
				return
			}
		}
	}
}

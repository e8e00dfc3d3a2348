package jetstream

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Provisioning requests (creating or updating streams, the bucket and the
// consumers) are idempotent. On a busy three-node cluster one of them was
// seen to get no reply at all (TestClusterSubcommands, under load), and
// it then waited for the whole of Open's deadline. Each is sent in
// attempts of a few seconds instead, and sent again after one that got no
// answer or a "temporarily unavailable", until Open's deadline.

// attemptTimeout is how long one provisioning attempt waits for its reply.
func (b *Backend) attemptTimeout() time.Duration {
	return max(2*time.Second, min(b.o.timeout/2, 5*time.Second))
}

// retrying runs step until it succeeds, fails for a reason another attempt
// would not change, or ctx ends.
func retrying(ctx context.Context, attempt time.Duration, step func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := step(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// transient reports whether err is a provisioning request's lost or
// refused-for-now reply.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	// 503: "JetStream system temporarily unavailable" and the like, the
	// answer of a cluster without a meta leader.
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.Code == 503
}

func (b *Backend) createStream(ctx context.Context, cfg jetstream.StreamConfig) (s jetstream.Stream, err error) {
	err = retrying(ctx, b.attemptTimeout(), func(ctx context.Context) error {
		s, err = b.js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	return s, err
}

func (b *Backend) createConsumer(ctx context.Context, s jetstream.Stream, cfg jetstream.ConsumerConfig) (c jetstream.Consumer, err error) {
	err = retrying(ctx, b.attemptTimeout(), func(ctx context.Context) error {
		c, err = s.CreateOrUpdateConsumer(ctx, cfg)
		return err
	})
	return c, err
}

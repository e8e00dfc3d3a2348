package jetstream

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
)

// connEvents tells the backend when its connection goes down and comes
// back: a request in flight at a disconnect has lost its reply and is sent
// again after the reconnect (store), and a Queue's waiters re-read the state
// of the jobs they wait for after a reconnect (Resync), since the events
// published meanwhile were lost.
type connEvents struct {
	mu     sync.Mutex
	epoch  context.Context    // canceled and replaced at every disconnect, reconnect and close
	end    context.CancelFunc // cancels epoch
	reconn chan struct{}      // closed and replaced at every reconnect
}

func newConnEvents() *connEvents {
	c := &connEvents{reconn: make(chan struct{})}
	c.epoch, c.end = context.WithCancel(context.Background())
	return c
}

// option installs the handlers; it comes after every other option so that
// it sees, and chains, their handlers.
func (c *connEvents) option() nats.Option {
	return func(o *nats.Options) error {
		discErr, disc, recon, closed := o.DisconnectedErrCB, o.DisconnectedCB, o.ReconnectedCB, o.ClosedCB
		o.DisconnectedErrCB = func(nc *nats.Conn, err error) {
			c.changed(false)
			switch { // nats calls DisconnectedCB only when DisconnectedErrCB is unset
			case discErr != nil:
				discErr(nc, err)
			case disc != nil:
				disc(nc)
			}
		}
		o.DisconnectedCB = nil
		o.ReconnectedCB = func(nc *nats.Conn) {
			c.changed(true)
			if recon != nil {
				recon(nc)
			}
		}
		o.ClosedCB = func(nc *nats.Conn) {
			c.changed(false)
			if closed != nil {
				closed(nc)
			}
		}
		return nil
	}
}

func (c *connEvents) changed(reconnected bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.end()
	c.epoch, c.end = context.WithCancel(context.Background())
	if reconnected {
		close(c.reconn)
		c.reconn = make(chan struct{})
	}
}

// current returns a context canceled at the connection's next change, so
// that a request made under it is abandoned when the connection drops.
func (c *connEvents) current() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// reconnected returns a channel closed at the next reconnect.
func (c *connEvents) reconnected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconn
}

// withEvents appends c's option to opts.
func (c *connEvents) withEvents(opts []nats.Option) []nats.Option {
	return append(opts[:len(opts):len(opts)], c.option())
}

package jetstream

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// connEvents tells the backend when its connection goes down and comes
// back: a request in flight at a disconnect has lost its reply and is sent
// again after the reconnect (store), and a Queue's waiters re-read the state
// of the jobs they wait for after a reconnect (Resync), since the events
// published meanwhile were lost.
type connEvents struct {
	mu        sync.Mutex
	change    chan struct{} // closed and replaced at every disconnect, reconnect and close
	reconn    chan struct{} // closed and replaced at every reconnect
	reconnAt  time.Time     // the last reconnect
	reconnect int           // reconnects so far
}

func newConnEvents() *connEvents {
	return &connEvents{change: make(chan struct{}), reconn: make(chan struct{})}
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
	close(c.change)
	c.change = make(chan struct{})
	if reconnected {
		close(c.reconn)
		c.reconn = make(chan struct{})
		c.reconnAt = time.Now()
		c.reconnect++
	}
}

// changes returns a channel closed at the connection's next change.
func (c *connEvents) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.change
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

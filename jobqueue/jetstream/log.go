package jetstream

import (
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// connWatch logs the life of a backend's connection (disconnects,
// reconnects, its close and asynchronous errors) and then calls the
// handlers set through WithNATSOptions, which it chains rather than
// replaces.
type connWatch struct {
	log     *slog.Logger
	closing atomic.Bool // Backend.Close began: the connection's end is expected
}

// newConnWatch returns nil without a logger: the connection's handlers are
// then left exactly as the caller set them.
func newConnWatch(o *options) *connWatch {
	if !o.logging {
		return nil
	}
	return &connWatch{log: o.logger}
}

// option installs the logging handlers; it must come after the caller's
// options so that it sees, and chains, their handlers.
func (w *connWatch) option() nats.Option {
	return func(o *nats.Options) error {
		discErr, disc, recon, closed, async := o.DisconnectedErrCB, o.DisconnectedCB, o.ReconnectedCB, o.ClosedCB, o.AsyncErrorCB
		o.DisconnectedErrCB = func(nc *nats.Conn, err error) {
			if w.closing.Load() {
				w.log.Debug("nats disconnected by Close")
			} else {
				w.log.Warn("nats disconnected; reconnecting", "err", err)
			}
			switch { // nats calls DisconnectedCB only when DisconnectedErrCB is unset
			case discErr != nil:
				discErr(nc, err)
			case disc != nil:
				disc(nc)
			}
		}
		o.ReconnectedCB = func(nc *nats.Conn) {
			w.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
			if recon != nil {
				recon(nc)
			}
		}
		o.ClosedCB = func(nc *nats.Conn) {
			if w.closing.Load() {
				w.log.Debug("nats connection closed")
			} else {
				w.log.Error("nats connection closed; the backend cannot reach the server any more", "err", nc.LastError())
			}
			if closed != nil {
				closed(nc)
			}
		}
		o.AsyncErrorCB = func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				w.log.Error("nats asynchronous error", "subject", sub.Subject, "err", err)
			} else {
				w.log.Error("nats asynchronous error", "err", err)
			}
			if async != nil {
				async(nc, sub, err)
			}
		}
		return nil
	}
}

// withWatch appends w's option to opts, if w is not nil.
func (w *connWatch) withWatch(opts []nats.Option) []nats.Option {
	if w == nil {
		return opts
	}
	return append(opts[:len(opts):len(opts)], w.option())
}

// closingConn tells w that the backend closes its connection on purpose.
func (w *connWatch) closingConn() {
	if w != nil {
		w.closing.Store(true)
	}
}

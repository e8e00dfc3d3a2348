package wsbridge

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// Config configures a Server. The zero value is a working configuration:
// same-host origins, no authentication, 64 KiB messages, pings every 30 s,
// no logging.
type Config struct {
	// AllowedOrigins lists the origins a browser may connect from, as
	// host[:port] patterns ("example.com", "*.example.com:8443") or full
	// origins ("https://example.com"), matched with path.Match and ignoring
	// case; "*" allows every origin. Requests without an Origin header
	// (non-browser clients) are always allowed. Nil means same host only:
	// the Origin's host must equal the request's Host. A refused origin gets
	// HTTP 403 before the upgrade.
	AllowedOrigins []string
	// Authorize, if set, is called with the upgrade request before the
	// upgrade; a non-nil error refuses it with HTTP 403 and the error's text.
	// TokenAuth builds one. Nil means every request is accepted.
	Authorize func(r *http.Request) error
	// MaxMessageSize bounds a client message in bytes, across all its
	// fragments; a bigger one closes the connection with 1009. Zero means
	// 64 KiB.
	MaxMessageSize int
	// SendQueue bounds the messages waiting to be written to one client. A
	// client that lets it overflow (it does not read fast enough) is closed
	// with CloseSlowConsumer (4008); other clients are not slowed. Zero means
	// 1024.
	SendQueue int
	// WriteTimeout bounds each write to a client; a write that times out
	// closes the connection. Zero means 10 seconds.
	WriteTimeout time.Duration
	// PingInterval is how often the server pings each client. Any frame
	// from the client counts as a sign of life; a client silent for
	// PingInterval+PongTimeout is disconnected. Zero means 30 seconds; a
	// negative value sends no pings and sets no read deadline.
	PingInterval time.Duration
	// PongTimeout is how long a client has to answer a ping. Zero means 10
	// seconds.
	PongTimeout time.Duration
	// HandshakeTimeout bounds the writing of the upgrade response. Zero
	// means 10 seconds.
	HandshakeTimeout time.Duration
	// CloseTimeout bounds the wait for the client's reply to a close frame
	// the server sent. Zero means 2 seconds.
	CloseTimeout time.Duration
	// MaxWatches bounds the jobs one connection watches at a time (jobs it
	// submitted and jobs it subscribed to that have not finished). Zero
	// means 10,000.
	MaxWatches int
	// ReadBufferSize is the size of each connection's read buffer, the only
	// buffer an idle connection holds. Zero means 512 bytes.
	ReadBufferSize int
	// EventBuffer is the capacity of the subscription through which the
	// Server receives the queue's events. When the bridge falls that far
	// behind, the queue drops non-final events; see jobqueue.Subscription.
	// Zero means 16,384.
	EventBuffer int
	// SystemStats, if set, is called every StatsInterval while a client
	// watches stats; its value, encoded as JSON, is the "system" field of
	// `stats` messages (the dashboard draws its "cores" as CPU bars, see the
	// package doc). It must return when ctx ends. Nil means `stats`
	// messages carry no system field.
	SystemStats func(ctx context.Context) (any, error)
	// StatsInterval is the period of `stats` messages to clients that asked
	// for them with "watch": true. Zero means one second.
	StatsInterval time.Duration
	// Fallback, if set, serves the requests that are not WebSocket upgrades
	// (Dashboard, say). Nil means they get 426 Upgrade Required.
	Fallback http.Handler
	// OnError, if set, is called with the errors that end connections
	// abnormally (protocol violations, timeouts, failed writes) and with
	// refused upgrades. It must not block. Nil means they are only counted in
	// Stats.
	OnError func(err error)
	// Logger, if set, receives structured records: each connection opened
	// (Info) and closed (Info for codes 1000 and 1001, Warn for the others,
	// 1006 meaning no close frame), with the attributes "conn" (a number
	// unique in this Server), "remote", "code", "reason" and "err" as they
	// apply; a slow consumer closed with 4008 (Warn, "queued"); a failed
	// write (Warn); a refused upgrade (Warn, "status" and "err"); the
	// `error` messages sent to clients, malformed commands among them
	// (Debug, "command", "error_code", "message"); a broken event
	// subscription (Warn) and a failed SystemStats (Warn). It is called
	// from the connections' goroutines and must not block for long. Nil
	// means nothing is logged.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultMaxMessageSize = 64 << 10
	DefaultSendQueue      = 1024
	DefaultWriteTimeout   = 10 * time.Second
	DefaultPingInterval   = 30 * time.Second
	DefaultPongTimeout    = 10 * time.Second
	DefaultCloseTimeout   = 2 * time.Second
	DefaultMaxWatches     = 10_000
	DefaultReadBufferSize = 512
	DefaultEventBuffer    = 16_384
	DefaultStatsInterval  = time.Second
)

func (c Config) withDefaults() Config {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.SendQueue <= 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.MaxWatches <= 0 {
		c.MaxWatches = DefaultMaxWatches
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = DefaultReadBufferSize
	}
	c.ReadBufferSize = max(c.ReadBufferSize, 16)
	if c.EventBuffer <= 0 {
		c.EventBuffer = DefaultEventBuffer
	}
	if c.StatsInterval <= 0 {
		c.StatsInterval = DefaultStatsInterval
	}
	return c
}

// originAllowed applies Config.AllowedOrigins to r.
func originAllowed(allowed []string, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(u.Host)
	if len(allowed) == 0 {
		return host == strings.ToLower(r.Host)
	}
	full := strings.ToLower(u.Scheme) + "://" + host
	for _, p := range allowed {
		p = strings.ToLower(p)
		if p == "*" {
			return true
		}
		target := host
		if strings.Contains(p, "://") {
			target = full
		}
		if ok, _ := path.Match(p, target); ok {
			return true
		}
	}
	return false
}

// TokenAuth returns a Config.Authorize that accepts a request carrying token
// as "Authorization: Bearer <token>" or as the query parameter "token"
// (browsers cannot set headers on a WebSocket), compared in constant time.
// Other requests get an error wrapping ErrUnauthorized. It panics on an
// empty token.
func TokenAuth(token string) func(r *http.Request) error {
	if token == "" {
		panic("wsbridge: TokenAuth with an empty token")
	}
	want := []byte(token)
	return func(r *http.Request) error {
		got := r.URL.Query().Get("token")
		if h := r.Header.Get("Authorization"); got == "" && len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			got = h[7:]
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			return ErrUnauthorized
		}
		return nil
	}
}

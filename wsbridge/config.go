package wsbridge

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"
)

// Config configures a Server. The zero value is a working configuration
// for a server on loopback: loopback Host names and same-host origins only,
// every connection anonymous with the default Quota, 64 KiB messages,
// pings every 30 s, no logging.
type Config struct {
	// Authenticate, if set, is called with each upgrade request, after the
	// Host and Origin checks and before the upgrade, and returns the
	// connection's principal. An error refuses the upgrade: with HTTP 401
	// if it wraps ErrUnauthorized, 403 otherwise, and the error's text. A
	// Principal with an empty Name (and a nil error) admits the connection
	// as anonymous. TokenAuth and OptionalTokenAuth build one from a token
	// table. Nil means every connection is anonymous.
	//
	// An anonymous connection gets a principal of its own, named
	// AnonymousPrefix plus 16 random characters, unless it presents a valid
	// resume credential (the "resume" query parameter or the
	// Wsbridge-Resume header), which gives back the principal that the
	// credential was issued to; an invalid one is ignored. The credential is
	// the "resume" field of the `welcome` message.
	Authenticate func(r *http.Request) (Principal, error)
	// ResumeKey is the HMAC key that signs resume credentials. Servers
	// that share a key accept each other's credentials, and a restarted
	// Server accepts the credentials of the one before. Nil means a random
	// key per Server: credentials are valid for its lifetime only.
	ResumeKey []byte
	// Quota bounds what one principal holds and does at a time (see
	// Quota for its zero values); anonymous connections from one remote
	// address (IPv4 address or IPv6 /64) share one Quota.
	Quota Quota
	// TrustedProxies lists the addresses of the reverse proxies in front
	// of the server: for a proxy on the same machine, 127.0.0.1/32 and
	// ::1/128. A connection from one of them counts, for the anonymous
	// quota and in logs, as coming from the client address the proxy
	// reports in X-Forwarded-For: the rightmost address there that is not
	// itself a trusted proxy (a client can put addresses of its choosing
	// in the header, but they land left of the one its proxy appends). A
	// connection from a trusted proxy without a usable X-Forwarded-For
	// counts as the proxy's. Nil means the header is ignored and every
	// connection counts as the address it arrives from, so that behind a
	// proxy all anonymous clients share the proxy's one quota. Trust only
	// proxies that append to X-Forwarded-For (Caddy does by default; nginx
	// with proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for);
	// a prefix that is not valid makes New panic.
	TrustedProxies []netip.Prefix
	// QuotaFor, if set, returns the quota of an authenticated principal
	// (it is not called for anonymous ones, which get Quota). It is called
	// when the principal's first connection opens and applies to all its
	// connections while one remains; its zero fields take Quota's values.
	// Nil means Quota for every principal, except that operators have no
	// job or watch limits (MaxActive, MaxDelayed, MaxDelay, MaxBytes and
	// MaxWatches are lifted; MaxInFlight and MaxQueuedBytes, which only pace
	// them, still apply).
	QuotaFor func(p Principal) Quota
	// Hosts lists the names the server answers to, as host or host:port
	// patterns matched with path.Match, ignoring case ("jobs.example.com",
	// "*.example.com", "10.0.0.5:8765"); a pattern without a port matches
	// every port. A request whose Host matches none is refused with HTTP
	// 403 before the upgrade; so is an Origin that is neither allowed by
	// AllowedOrigins nor one of these names (or the request's own, checked,
	// Host). This defeats DNS rebinding: an attacker's name that resolves
	// to the server is not one of its names. "*" accepts every Host (only
	// behind a proxy that checks it). Nil means the address the connection
	// arrived on decides: on a loopback address the Host must be localhost,
	// an address of 127.0.0.0/8 or ::1 (any port); on any other address it
	// must be that address as an IP literal. A server reached by a DNS name
	// must list it here.
	Hosts []string
	// AllowedOrigins lists further origins a browser may connect from, as
	// host[:port] patterns ("example.com", "*.example.com:8443") or full
	// origins ("https://example.com"), matched with path.Match and ignoring
	// case; "*" allows every origin. Requests without an Origin header
	// (non-browser clients) are always allowed. Nil means the server's own
	// names only (see Hosts). A refused origin gets HTTP 403 before the
	// upgrade.
	AllowedOrigins []string
	// MaxMessageSize bounds a client message in bytes, across all its
	// fragments; a bigger one closes the connection with 1009. Zero means
	// 64 KiB.
	MaxMessageSize int
	// SendQueueBytes bounds the bytes of pushed messages (events, stats,
	// pongs) waiting to be written to one connection, counting 64 bytes
	// more per message. A client that lets it overflow (it does not read
	// fast enough) is closed with CloseSlowConsumer (4008); other clients
	// are not slowed. Replies to the client's own commands do not count
	// here: they are paced by Quota.MaxInFlight instead. Zero means 4 MiB.
	SendQueueBytes int
	// ListBytes bounds the encoded size of a `jobs` reply: a page that
	// would be bigger ends early, with a next_cursor to read the rest (a
	// page holds at least one job, whatever its size). Zero means 256 KiB.
	ListBytes int
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
	// unique in this Server), "remote", "principal", "code", "reason" and
	// "err" as they apply; a slow consumer closed with 4008 (Warn,
	// "queued"); a failed write (Warn); a refused upgrade (Warn, "status"
	// and "err"); the `error` messages sent to clients, malformed commands
	// and quota refusals among them (Debug, "command", "error_code",
	// "message"); a broken event subscription (Warn) and a failed
	// SystemStats (Warn). It is called from the connections' goroutines and
	// must not block for long. Nil means nothing is logged.
	Logger *slog.Logger
}

// Quota bounds what one principal holds and does at a time, across all its
// connections. In a Config, a zero field means its default below and a
// negative one means no limit. The first four are checked by the queue
// (jobqueue.JobRequest.Quota) against every job of the principal, and for
// anonymous connections also by the Server against the active jobs their
// address submitted through it (counted until their final events); the
// last three by the Server. A submit over a job limit, or a watch over
// MaxWatches, gets an `error` message with code CodeQuota and the
// connection stays open; the in-flight limits never refuse anything: they
// pause reading the principal's connections until replies drain.
type Quota struct {
	// MaxActive bounds the principal's active jobs (pending, scheduled,
	// running, retrying). Default 1000.
	MaxActive int
	// MaxDelayed bounds its jobs waiting for a run_at in the future.
	// Default 100.
	MaxDelayed int
	// MaxDelay is the latest run_at accepted, as a delay from now.
	// Default 24 hours.
	MaxDelay time.Duration
	// MaxBytes bounds the payload bytes of its active jobs. Default 16 MiB.
	MaxBytes int64
	// MaxInFlight bounds its commands read but not yet answered (their
	// replies written), across its connections. At the limit the Server
	// stops reading the principal's connections until a reply is written:
	// a client that sends without pausing is slowed down by TCP, never
	// refused. Default 256.
	MaxInFlight int
	// MaxQueuedBytes bounds the bytes waiting to be written to its
	// connections, replies and pushed messages together: at the limit
	// reading pauses as for MaxInFlight, and a push beyond it closes the
	// connection it was for with 4008. Default 16 MiB.
	MaxQueuedBytes int64
	// MaxWatches bounds the jobs its connections watch at a time (jobs
	// submitted or subscribed to that have not finished; "subscribe" to
	// every job takes none). Default 10,000.
	MaxWatches int
}

// Defaults of Config and Quota.
const (
	DefaultMaxMessageSize = 64 << 10
	DefaultSendQueueBytes = 4 << 20
	DefaultListBytes      = 256 << 10
	DefaultWriteTimeout   = 10 * time.Second
	DefaultPingInterval   = 30 * time.Second
	DefaultPongTimeout    = 10 * time.Second
	DefaultCloseTimeout   = 2 * time.Second
	DefaultReadBufferSize = 512
	DefaultEventBuffer    = 16_384
	DefaultStatsInterval  = time.Second

	DefaultMaxActive      = 1000
	DefaultMaxDelayed     = 100
	DefaultMaxDelay       = 24 * time.Hour
	DefaultMaxBytes       = 16 << 20
	DefaultMaxInFlight    = 256
	DefaultMaxQueuedBytes = 16 << 20
	DefaultMaxWatches     = 10_000
)

func (c Config) withDefaults() Config {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = DefaultSendQueueBytes
	}
	if c.ListBytes <= 0 {
		c.ListBytes = DefaultListBytes
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
	c.Quota = c.Quota.withDefaults()
	return c
}

// defaultQuota holds the defaults of Quota.
var defaultQuota = Quota{
	MaxActive:      DefaultMaxActive,
	MaxDelayed:     DefaultMaxDelayed,
	MaxDelay:       DefaultMaxDelay,
	MaxBytes:       DefaultMaxBytes,
	MaxInFlight:    DefaultMaxInFlight,
	MaxQueuedBytes: DefaultMaxQueuedBytes,
	MaxWatches:     DefaultMaxWatches,
}

// withDefaults resolves q: zero fields get the defaults and negative ones
// 0, which means no limit from then on.
func (q Quota) withDefaults() Quota { return q.over(defaultQuota) }

// over resolves q with base, a resolved Quota, for its zero fields;
// negative fields become 0 (no limit).
func (q Quota) over(base Quota) Quota {
	q.MaxActive = limitOr(q.MaxActive, base.MaxActive)
	q.MaxDelayed = limitOr(q.MaxDelayed, base.MaxDelayed)
	q.MaxDelay = limitOr(q.MaxDelay, base.MaxDelay)
	q.MaxBytes = limitOr(q.MaxBytes, base.MaxBytes)
	q.MaxInFlight = limitOr(q.MaxInFlight, base.MaxInFlight)
	q.MaxQueuedBytes = limitOr(q.MaxQueuedBytes, base.MaxQueuedBytes)
	q.MaxWatches = limitOr(q.MaxWatches, base.MaxWatches)
	return q
}

func limitOr[T int | int64 | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// quotaFor returns the resolved quota of an authenticated principal: zero
// fields mean no limit.
func (c *Config) quotaFor(p Principal) Quota {
	if c.QuotaFor != nil {
		return c.QuotaFor(p).over(c.Quota)
	}
	q := c.Quota
	if p.Operator {
		q.MaxActive, q.MaxDelayed, q.MaxDelay, q.MaxBytes, q.MaxWatches = 0, 0, 0, 0, 0
	}
	return q
}

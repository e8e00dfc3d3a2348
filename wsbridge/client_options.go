package wsbridge

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// Option configures a Client.
type Option func(*options)

type options struct {
	header       http.Header
	reconnect    bool
	minBackoff   time.Duration
	maxBackoff   time.Duration
	eventBuffer  int
	maxMessage   int
	writeTimeout time.Duration
	dialTimeout  time.Duration
	logger       *slog.Logger
	resume       string // credential to present from the first connection
	maxInFlight  int    // 0: the server's max_in_flight
	tlsConfig    *tls.Config
}

// WithHeader adds header to the handshake request (an Authorization header,
// say). The default sends none.
func WithHeader(header http.Header) Option {
	return func(o *options) {
		for k, vs := range header {
			for _, v := range vs {
				o.header.Add(k, v)
			}
		}
	}
}

// WithToken sends "Authorization: Bearer token" with the handshake, as
// TokenAuth expects.
func WithToken(token string) Option {
	return func(o *options) { o.header.Set("Authorization", "Bearer "+token) }
}

// WithResume makes the Client present cred, a resume credential that an
// earlier Client got (Client.ResumeCredential), from its first connection
// on: an anonymous Client then comes back as the principal the credential
// was issued to, and with it finds that principal's jobs (Get, Wait,
// List, Cancel) and resubmits a lost Submit without a second job. This is
// how a program resumes across restarts: save ResumeCredential, and Dial
// WithResume of it on the next run. A Client presents its latest
// credential on every reconnection without this option; WithResume only
// chooses the first.
//
// The Server accepts a credential only if its Config.ResumeKey signed it
// (a Server with no ResumeKey has a random one, so its credentials do not
// outlive it) and the principal is anonymous: a token (WithToken) decides
// the principal first. An invalid credential is not an error: the Server
// admits the Client as a new anonymous principal, which Principal shows.
// The credential is a secret, like a token: whoever holds it acts for the
// principal. The default presents none.
func WithResume(cred string) Option {
	return func(o *options) { o.resume = cred }
}

// WithMaxInFlight bounds the Client's commands in flight (sent and not yet
// answered) to n. Calls beyond it wait, in the order they came, until a
// reply frees a place or their ctx ends (see Client). The default, like an
// n <= 0, is the server's limit (Quota.MaxInFlight, sent in the welcome
// message), or 32 when the server has none: a bigger window than the
// server's gains nothing, since the server then stops reading the
// connection until replies are written.
func WithMaxInFlight(n int) Option {
	return func(o *options) { o.maxInFlight = n }
}

// WithReconnect sets the delays between reconnection attempts: the first
// waits min, each next one twice the previous, at most max (at least min),
// with jitter. The default is 100 ms to 5 s. A min <= 0 turns reconnecting
// off (WithReconnect(0, 0)): the Client stops at the first lost connection,
// and its pending and later calls fail with ErrConnectionLost, Wait
// included.
func WithReconnect(min, max time.Duration) Option {
	return func(o *options) {
		o.reconnect = min > 0
		o.minBackoff = min
		o.maxBackoff = max
	}
}

// WithEventBuffer sets the capacity of the channel returned by Events. The
// default is 1024.
func WithEventBuffer(n int) Option {
	return func(o *options) { o.eventBuffer = n }
}

// WithMaxMessageSize bounds a message from the server; a bigger one closes
// the connection. The default is 16 MiB.
func WithMaxMessageSize(n int) Option {
	return func(o *options) { o.maxMessage = n }
}

// WithTLSConfig sets the TLS configuration of wss:// connections: the
// certificate authorities to trust (RootCAs) for a server whose
// certificate is not signed by one the system trusts, or a client
// certificate. The server name defaults to the URL's host. Without it, a
// wss:// URL is dialed with the system's roots (a ws:// URL never uses
// TLS).
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) { o.tlsConfig = cfg }
}

// WithDialTimeout bounds each connection attempt, handshake and welcome
// message included. The default is 10 seconds.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) { o.dialTimeout = d }
}

// WithLogger makes the Client log to l, as structured records with the
// attribute "url": a lost connection (Warn, with "code" and "reason" when
// the server sent a close frame, "err" otherwise), each failed reconnection
// attempt (Debug, with "attempt", "err" and "retry_in"), a reconnection
// (Info, with "attempts", "watched" and "principal"), a reconnection as
// another principal than before (Warn, with "was" and "principal": the
// server did not accept the resume credential, and the jobs of before are
// out of reach) and the first event of each run of events dropped because
// Events was full (Warn, with "dropped", the total so far). The default,
// like a nil l, logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

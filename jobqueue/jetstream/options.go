package jetstream

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Option configures a Backend (Embedded, Connect, Server.Backend) or an
// embedded Server (NewServer, Embedded). Options that do not apply to a
// constructor are ignored by it.
type Option func(*options)

type options struct {
	name     string
	ackWait  time.Duration
	poll     time.Duration
	replicas int
	batch    int
	listen   string
	server   string   // WithServerName
	cluster  string   // WithCluster: the route listen address
	clname   string   // WithClusterName
	routes   []string // WithRoutes
	token    string   // WithToken
	natsOpts []nats.Option
	deadMax  int
	deadAge  time.Duration
	timeout  time.Duration
	logger   *slog.Logger // never nil after buildOptions
	logging  bool         // a logger was given
}

func buildOptions(opts []Option) (options, error) {
	o := options{
		name:     "corework",
		ackWait:  30 * time.Second,
		poll:     time.Second,
		replicas: 1,
		batch:    256,
		deadMax:  10_000,
		deadAge:  7 * 24 * time.Hour,
		timeout:  10 * time.Second,
		clname:   "corework",
	}
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	o.logging = o.logger != nil
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	o.logger = o.logger.With("jetstream", o.name)
	switch {
	case !validName(o.name):
		return o, fmt.Errorf("jetstream: invalid name %q (letters, digits, '-' and '_' only)", o.name)
	case o.ackWait < 100*time.Millisecond:
		return o, fmt.Errorf("jetstream: AckWait %v below 100ms", o.ackWait)
	case o.poll <= 0:
		return o, fmt.Errorf("jetstream: poll interval %v not positive", o.poll)
	case o.replicas < 1 || o.replicas > 5:
		return o, fmt.Errorf("jetstream: replicas %d out of 1-5", o.replicas)
	case o.batch < 1:
		return o, fmt.Errorf("jetstream: batch %d not positive", o.batch)
	case o.timeout <= 0:
		return o, fmt.Errorf("jetstream: request timeout %v not positive", o.timeout)
	case o.server != "" && !validName(o.server):
		return o, fmt.Errorf("jetstream: invalid server name %q (letters, digits, '-' and '_' only)", o.server)
	case !validName(o.clname):
		return o, fmt.Errorf("jetstream: invalid cluster name %q (letters, digits, '-' and '_' only)", o.clname)
	case o.cluster == "" && len(o.routes) > 0:
		return o, fmt.Errorf("jetstream: WithRoutes needs WithCluster (the address to accept routes on)")
	case o.token != "" && len(o.token) < minTokenLen:
		return o, fmt.Errorf("jetstream: token of %d characters; want at least %d", len(o.token), minTokenLen)
	case o.token != "" && strings.ContainsAny(o.token, " \t\r\n@:/"):
		return o, fmt.Errorf("jetstream: token holds a space, '@', ':' or '/'")
	case o.cluster != "" && o.server == "":
		return o, fmt.Errorf("jetstream: WithCluster needs WithServerName (a name unique in the cluster)")
	}
	return o, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// WithName sets the name that prefixes every stream, bucket and subject of
// the queue, so several independent queues can share one NATS system.
// Every process of one queue must use the same name. The default is
// "corework": streams COREWORK_JOBS, COREWORK_SCHED, COREWORK_DONE,
// COREWORK_DLQ, bucket COREWORK_STATE, subjects "corework.>". A name holds
// letters, digits, '-' and '_', at most 32 of them.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithAckWait sets the lease: how long a job stays with a worker that has
// stopped extending it (a crashed process) before JetStream delivers it
// again. A running handler's lease is extended every third of it, so a
// shorter lease finds crashed workers sooner at the cost of more heartbeats.
// The default is 30 seconds; the minimum is 100ms. The processes of one
// queue should agree: the last one to start sets the consumers' AckWait.
func WithAckWait(d time.Duration) Option { return func(o *options) { o.ackWait = d } }

// WithPollInterval sets how often an idle worker process looks at every
// priority level even though no new-job signal arrived. Signals cover new
// jobs, promoted delayed jobs and retries nacked by a live process; the poll
// finds jobs redelivered after a crashed worker's lease expired. The default
// is one second.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.poll = d } }

// WithReplicas sets the number of replicas of every stream and bucket
// (1, 3 or 5 in a cluster). The default is 1, the only value a single
// server accepts. n replicas need a cluster of at least n servers with
// JetStream (WithCluster, or nats-server's own configuration), of which a
// majority must be up: WithReplicas(3) on three nodes survives the loss of
// any one. Every process of a queue should use the same value.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithBatch bounds the jobs one pull request asks a priority level for.
// The default is 256.
func WithBatch(n int) Option { return func(o *options) { o.batch = n } }

// WithListen makes an embedded server (NewServer, Embedded) accept TCP
// clients on hostport, such as "127.0.0.1:4222" or "127.0.0.1:0" for a free
// port, so worker processes can join with Connect. Without it the server
// accepts in-process connections only.
func WithListen(hostport string) Option { return func(o *options) { o.listen = hostport } }

// WithServerName names an embedded server (NewServer, Embedded). Every
// server of a cluster needs a name of its own, such as "n1"; JetStream
// reports stream leaders and replicas by it. A name holds letters, digits,
// '-' and '_', at most 32 of them. The default, for a server alone, is
// "corework-" followed by the queue's name (WithName).
func WithServerName(name string) Option { return func(o *options) { o.server = name } }

// WithCluster makes an embedded server (NewServer, Embedded) a node of a
// NATS cluster with JetStream: it accepts routes from the other nodes on
// hostport, such as "0.0.0.0:6222" or "10.0.0.1:6222", and joins the
// JetStream cluster named by WithClusterName. It needs WithServerName (a
// name unique in the cluster) and WithListen (for the clients), and, on
// every node, WithRoutes naming the others. A clustered JetStream elects a
// leader once a majority of its nodes is up: NewServer returns as soon as
// the node accepts clients, and streams can be created once the cluster
// has a leader (Connect fails until then; retry it).
//
// Replicas. Streams and buckets get WithReplicas copies, each on its own
// node: WithReplicas(3), what a three-node cluster is for, needs three
// nodes running with JetStream, and a majority of them (two) up for the
// queue to accept and run jobs; any one node can then fail, or be stopped
// for maintenance, without losing an accepted job. WithReplicas is given to
// the backends (Connect), not to the servers. See "A three-node cluster" in
// the package comment.
func WithCluster(hostport string) Option { return func(o *options) { o.cluster = hostport } }

// WithClusterName sets the name of the cluster an embedded server joins
// with WithCluster; every node of one cluster must use the same. The
// default is "corework".
func WithClusterName(name string) Option { return func(o *options) { o.clname = name } }

// WithRoutes gives a clustered embedded server (WithCluster) the route URLs
// of the other nodes, such as "nats-route://10.0.0.2:6222" (nats:// and a
// bare host:port are accepted too). Listing every node, this one included,
// is fine: a server ignores a route to itself, so all nodes can share one
// list. Nodes that are not up yet are retried until they are. The
// option adds to the routes given before.
func WithRoutes(urls ...string) Option {
	return func(o *options) { o.routes = append(o.routes, urls...) }
}

// WithToken makes an embedded server (NewServer, Embedded) accept only
// clients that present token, and the nodes of a cluster (WithCluster)
// accept only routes that present it too; Connect and Server.Backend
// present it. Every server and every process of one queue use the same
// token, of at least 16 characters (`head -c 20 /dev/urandom | base32`
// makes one). Without it a server that listens on an address other
// machines can reach lets them read, change and delete every job: use it
// whenever WithListen or WithCluster is not a loopback address. The token
// travels in clear over the network, like the jobs: beyond a private
// network, add TLS (WithNATSOptions on the clients; the server's TLS is
// configured in a nats-server of its own).
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// minTokenLen is the shortest token WithToken accepts.
const minTokenLen = 16

// WithNATSOptions adds options to the NATS connection that Connect opens
// (credentials, TLS, reconnect policy). The backend always adds its own
// name and nats.NoEcho(): it never receives its own signals and events.
func WithNATSOptions(opts ...nats.Option) Option {
	return func(o *options) { o.natsOpts = append(o.natsOpts, opts...) }
}

// WithDeadLetters bounds the dead-letter stream (the failed jobs kept for
// inspection, see Backend.DeadLetters): at most maxJobs of them, none older
// than maxAge. The defaults are 10,000 jobs and seven days; zero keeps a
// default.
func WithDeadLetters(maxJobs int, maxAge time.Duration) Option {
	return func(o *options) {
		if maxJobs > 0 {
			o.deadMax = maxJobs
		}
		if maxAge > 0 {
			o.deadAge = maxAge
		}
	}
}

// WithRequestTimeout bounds each request to the server made on behalf of a
// call whose context has no deadline (storing a job, settling a lease). The
// default is ten seconds.
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithLogger sets the logger of the backend's notable events, as structured
// records with the queue's name as attribute "jetstream": the connection
// lost (Warn), regained (Info) or closed for good (Error) and asynchronous
// NATS errors (Error); a lease lost to another delivery and a job
// redelivered after its worker's lease expired (Warn); a job dead-lettered
// (Warn) and a stored message that does not decode (Error). The connection
// handlers chain those set with WithNATSOptions, which still run. Nil, the
// default, is silent and leaves the connection's handlers as they are.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

func splitHostPort(hostport string) (string, int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("jetstream: address: %w", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("jetstream: port %q in %q", p, hostport)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}

// names holds the stream, bucket and subject names derived from the queue's
// name.
type names struct {
	prefix string
	jobs   string
	sched  string
	done   string
	dead   string
	bucket string
}

func newNames(name string) names {
	up := strings.ToUpper(name)
	return names{
		prefix: name,
		jobs:   up + "_JOBS",
		sched:  up + "_SCHED",
		done:   up + "_DONE",
		dead:   up + "_DLQ",
		bucket: up + "_STATE",
	}
}

func (n *names) jobSubject(p int, id string) string {
	return n.prefix + ".q." + strconv.Itoa(p) + "." + id
}
func (n *names) levelFilter(p int) string      { return n.prefix + ".q." + strconv.Itoa(p) + ".*" }
func (n *names) schedSubject(id string) string { return n.prefix + ".s." + id }
func (n *names) doneSubject(id string) string  { return n.prefix + ".done." + id }
func (n *names) deadSubject(id string) string  { return n.prefix + ".dead." + id }
func (n *names) eventSubject() string          { return n.prefix + ".ev" }
func (n *names) cancelSubject(tag string) string {
	return n.prefix + ".cancel." + tag
}
func (n *names) bellSubject() string         { return n.prefix + ".bell" }
func (n *names) stateKey(id string) string   { return "j." + id }
func (n *names) kvSubject(key string) string { return "$KV." + n.bucket + "." + key }
func (n *names) kvStream() string            { return "KV_" + n.bucket }

// validID reports whether id can be one token of a subject.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c >= 0x7f {
			return false
		}
	}
	return true
}

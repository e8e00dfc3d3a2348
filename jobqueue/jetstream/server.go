package jetstream

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is a NATS server with JetStream running inside this process, its
// streams stored in files under one directory: the durable single-machine
// mode, and the server of tests and demos. It runs the server's own
// goroutines from NewServer until Shutdown.
type Server struct {
	ns     *server.Server
	listen bool
	token  string // WithToken
	once   sync.Once
}

// NewServer starts an in-process NATS server with JetStream file storage in
// dir (created if needed). Jobs stored there survive a restart of the
// process on the same directory. With WithListen it also accepts TCP
// clients, so other processes can join with Connect; otherwise only
// in-process connections (Server.Backend) reach it. With WithCluster (and
// WithServerName, WithRoutes) it is one node of a JetStream cluster; see
// "A three-node cluster" in the package comment. It blocks until the
// server is ready, at most ten seconds. The caller must call Shutdown.
//
// The server syncs its files to disk every two minutes and on shutdown: a
// killed process loses nothing, a power cut may lose the last writes. For
// stronger guarantees run a replicated cluster (see the package comment).
func NewServer(dir string, opts ...Option) (*Server, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("jetstream: empty store directory")
	}
	sopts := &server.Options{
		ServerName: "corework-" + o.name,
		JetStream:  true,
		StoreDir:   dir,
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoSigs:     true,
		NoLog:      true,
		DontListen: o.listen == "",
	}
	if o.token != "" {
		sopts.Authorization = o.token
	}
	if o.listen != "" {
		host, port, err := splitHostPort(o.listen)
		if err != nil {
			return nil, err
		}
		sopts.Host = host
		if port != 0 {
			sopts.Port = port
		}
	}
	if o.server != "" {
		sopts.ServerName = o.server
	}
	if o.cluster != "" {
		if o.listen == "" {
			return nil, fmt.Errorf("jetstream: WithCluster needs WithListen (a cluster's clients connect over TCP)")
		}
		host, port, err := splitHostPort(o.cluster)
		if err != nil {
			return nil, err
		}
		routes, err := parseRoutes(o.routes, o.token)
		if err != nil {
			return nil, err
		}
		sopts.Cluster = server.ClusterOpts{Name: o.clname, Host: host, Port: port}
		if o.token != "" {
			sopts.Cluster.Username, sopts.Cluster.Password = routeUser, o.token
		}
		if port == 0 {
			sopts.Cluster.Port = server.RANDOM_PORT
		}
		sopts.Routes = routes
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("jetstream: starting server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("jetstream: server in %s not ready after 10s", dir)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("jetstream: JetStream failed to start in %s", dir)
	}
	return &Server{ns: ns, listen: o.listen != "", token: o.token}, nil
}

// routeUser is the user name the nodes of a cluster with a token present
// to each other, the token being the password.
const routeUser = "corework"

// parseRoutes turns the URLs of WithRoutes into route URLs; a bare
// host:port is taken as nats-route://host:port. With a token, a route
// without credentials gets routeUser and the token.
func parseRoutes(list []string, token string) ([]*url.URL, error) {
	var routes []*url.URL
	for _, r := range list {
		for _, r := range strings.Split(r, ",") {
			r = strings.TrimSpace(r)
			if r == "" {
				continue
			}
			if !strings.Contains(r, "://") {
				r = "nats-route://" + r
			}
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("jetstream: route %q: %w", r, err)
			}
			if u.Hostname() == "" || u.Port() == "" {
				return nil, fmt.Errorf("jetstream: route %q needs a host and a port", r)
			}
			if token != "" && u.User == nil {
				u.User = url.UserPassword(routeUser, token)
			}
			routes = append(routes, u)
		}
	}
	return routes, nil
}

// Name returns the server's name (WithServerName), the one JetStream
// reports stream leaders and replicas by.
func (s *Server) Name() string { return s.ns.Name() }

// ClusterURL returns the route URL the other nodes of a cluster list in
// WithRoutes, such as "nats-route://127.0.0.1:6222", or "" if the server is
// not clustered (no WithCluster).
func (s *Server) ClusterURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + a.String()
}

// ClientURL returns the URL other processes pass to Connect, such as
// "nats://127.0.0.1:4222", or "" if the server does not listen (no
// WithListen).
func (s *Server) ClientURL() string {
	if !s.listen {
		return ""
	}
	return s.ns.ClientURL()
}

// Backend returns a Backend connected to s in-process (no TCP). The
// backend does not own s: shutting the Queue down leaves s running. opts
// are backend options; WithListen and WithNATSOptions are ignored.
func (s *Server) Backend(opts ...Option) (*Backend, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	nopts := []nats.Option{nats.InProcessServer(inProcess{s.ns}), nats.Name("corework-" + o.name), nats.NoEcho(),
		nats.MaxReconnects(0)}
	if s.token != "" {
		nopts = append(nopts, nats.Token(s.token))
	}
	dial := func() (*nats.Conn, error) { return nats.Connect("", nopts...) }
	watch, events := newConnWatch(&o), newConnEvents()
	nc, err := nats.Connect("", events.withEvents(watch.withWatch(nopts))...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: connecting in-process: %w", err)
	}
	return newBackend(nc, o, dial, watch, events)
}

// Shutdown stops the server and waits until it has stopped; connected
// clients see it go away. It is idempotent.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	})
}

// Embedded starts an in-process server with JetStream file storage in dir
// (see NewServer) and returns a Backend connected to it that owns it: the
// Queue's Shutdown closes the backend, which shuts the server down. This is
// the durable single-machine mode: jobs survive a crash or restart of the
// program on the same directory. With WithListen, worker processes can
// join with Connect(b.ClientURL()).
func Embedded(dir string, opts ...Option) (*Backend, error) {
	s, err := NewServer(dir, opts...)
	if err != nil {
		return nil, err
	}
	b, err := s.Backend(opts...)
	if err != nil {
		s.Shutdown()
		return nil, err
	}
	b.srv = s
	return b, nil
}

// Connect returns a Backend connected to the NATS server or cluster at url
// (a comma-separated list of server URLs is accepted), which must have
// JetStream enabled. The connection reconnects on its own after a server
// restart or a failover; while it is down Get, List and Stats fail with
// ErrNotConnected, the Queue retries its fetches, a Submit waits for the
// reconnect (within its context and a request timeout) and Wait re-reads
// its job after it (see "Outages and failovers" in the package comment). It blocks for the connection, bounded by the NATS
// options (WithNATSOptions).
func Connect(url string, opts ...Option) (*Backend, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	nopts := []nats.Option{nats.Name("corework-" + o.name), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond)}
	if o.token != "" {
		nopts = append(nopts, nats.Token(o.token))
	}
	nopts = append(nopts, o.natsOpts...)
	nopts = append(nopts, nats.NoEcho())
	dial := func() (*nats.Conn, error) { return nats.Connect(url, nopts...) }
	watch, events := newConnWatch(&o), newConnEvents()
	nc, err := nats.Connect(url, events.withEvents(watch.withWatch(nopts))...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: connecting to %s: %w", url, err)
	}
	return newBackend(nc, o, dial, watch, events)
}

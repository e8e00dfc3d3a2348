package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	njs "github.com/nats-io/nats.go/jetstream"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// freeAddrs returns n loopback addresses with ports free a moment ago.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs
}

// node is one server of a test cluster, restartable on its directory and
// ports.
type node struct {
	name, dir, client, route string
	routes                   []string
	token                    string // WithToken, if not empty
	srv                      *jetstream.Server
}

func (n *node) start(t testing.TB) {
	t.Helper()
	opts := []jetstream.Option{jetstream.WithServerName(n.name), jetstream.WithListen(n.client),
		jetstream.WithCluster(n.route), jetstream.WithRoutes(n.routes...)}
	if n.token != "" {
		opts = append(opts, jetstream.WithToken(n.token))
	}
	s, err := jetstream.NewServer(n.dir, opts...)
	if err != nil {
		t.Fatalf("starting %s: %v", n.name, err)
	}
	n.srv = s
}

func (n *node) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
}

// startCluster starts three clustered servers on loopback and waits until
// JetStream has a meta leader.
func startCluster(t testing.TB) []*node {
	t.Helper()
	return startClusterWithToken(t, "")
}

// startClusterWithToken is startCluster with every node given
// WithToken(token), unless token is empty.
func startClusterWithToken(t testing.TB, token string) []*node {
	t.Helper()
	addrs := freeAddrs(t, 6)
	var routes []string
	for i := range 3 {
		routes = append(routes, "nats-route://"+addrs[3+i])
	}
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = &node{name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), client: addrs[i], route: addrs[3+i], routes: routes, token: token}
		nodes[i].start(t)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
		}
	})
	nc, err := nats.Connect(clusterURLs(nodes), nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := njs.New(nc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster not ready after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func clusterURLs(nodes []*node) string {
	var urls []string
	for _, n := range nodes {
		urls = append(urls, "nats://"+n.client)
	}
	return strings.Join(urls, ",")
}

// streamsCurrent waits until every stream of the account has a leader and
// all its replicas are current.
func streamsCurrent(t *testing.T, js njs.JetStream, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			l := js.ListStreams(ctx)
			n := 0
			for info := range l.Info() {
				n++
				c := info.Cluster
				if c == nil || c.Leader == "" {
					return fmt.Errorf("stream %s has no leader", info.Config.Name)
				}
				if len(c.Replicas) != 2 {
					return fmt.Errorf("stream %s has %d followers", info.Config.Name, len(c.Replicas))
				}
				for _, r := range c.Replicas {
					if !r.Current || r.Offline {
						return fmt.Errorf("stream %s: replica %s not current", info.Config.Name, r.Name)
					}
				}
			}
			if err := l.Err(); err != nil {
				return err
			}
			if n == 0 {
				return errors.New("no streams")
			}
			return nil
		}()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams not current after %v: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// span is one Submit: when it started and ended, and whether it succeeded.
type span struct {
	start, end time.Time
	ok         bool
}

// TestThreeNodeCluster runs a queue with three replicas on a three-node
// cluster, abruptly stops the jobs stream's leader mid-run (and restarts
// it), then the node the client is connected to (and restarts it), while
// jobs are submitted and run. No accepted job may be lost; jobs run twice
// are counted and reported.
func TestThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster: not in -short")
	}
	const (
		minJobs = 500
		maxJobs = 3000
		bound   = 2 * time.Minute // from the first Submit to the last job succeeded
		// Once a Submit started later has succeeded (the connection is
		// back and the stream has a leader), one still waiting returns
		// within this: it resends after 2 s without a reply, where the 10 s
		// request timeout would fail it.
		maxStuck = 4 * time.Second
	)
	nodes := startCluster(t)
	byName := map[string]*node{}
	for _, n := range nodes {
		byName[n.name] = n
	}
	name := uniqueName()
	var connected atomic.Value // the name of the server the backend is connected to
	connected.Store(nodes[0].name)
	var (
		mu         sync.Mutex
		reconnects []time.Time // when the backend's connection came back
	)
	var b *jetstream.Backend
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		b, err = jetstream.Connect(clusterURLs(nodes), jetstream.WithName(name), jetstream.WithReplicas(3),
			jetstream.WithAckWait(2*time.Second), jetstream.WithPollInterval(100*time.Millisecond),
			jetstream.WithNATSOptions(nats.DontRandomize(), nats.ReconnectHandler(func(nc *nats.Conn) {
				connected.Store(nc.ConnectedServerName())
				mu.Lock()
				reconnects = append(reconnects, time.Now())
				mu.Unlock()
			})))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Connect: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	runs := map[string]int{}
	q := newQueue(t, b, jobqueue.Config{Workers: 16, Retention: jobqueue.Retention{MaxJobs: 100_000, MaxAge: time.Hour}})
	q.Handle("work", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		mu.Lock()
		runs[job.ID]++
		mu.Unlock()
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, nil
	}))
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}

	// Producers submit until both faults are over and at least minJobs
	// were accepted.
	var (
		accepted   []string
		submitErrs []error
		spans      []span // each Submit's
		faultsDone atomic.Bool
		count      atomic.Int64
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for count.Load() < maxJobs && !(faultsDone.Load() && count.Load() >= minJobs) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t0 := time.Now()
				id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "work"})
				t1 := time.Now()
				cancel()
				mu.Lock()
				spans = append(spans, span{t0, t1, err == nil})
				if err != nil {
					submitErrs = append(submitErrs, err)
				} else {
					accepted = append(accepted, id)
					count.Add(1)
				}
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}

	nc, err := nats.Connect(clusterURLs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := njs.New(nc)
	jobsStream := strings.ToUpper(name) + "_JOBS"
	waitFor := func(what string, n int64) {
		for count.Load() < n {
			if time.Since(start) > bound {
				t.Fatalf("waiting for %s: only %d jobs accepted after %v", what, count.Load(), bound)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	kill := func(n *node, why string) {
		t0 := time.Now()
		n.stop()
		t.Logf("+%v: stopped %s (%s) after %d accepted jobs", time.Since(start).Round(time.Millisecond), n.name, why, count.Load())
		before := count.Load()
		waitFor("submits after the stop", before+50)
		n.start(t)
		streamsCurrent(t, js, 60*time.Second)
		t.Logf("+%v: %s back and every stream current again (%v after the stop)", time.Since(start).Round(time.Millisecond),
			n.name, time.Since(t0).Round(time.Millisecond))
	}

	waitFor("the first jobs", 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	info, err := js.Stream(ctx, jobsStream)
	var leader string
	if err == nil {
		si, err2 := info.Info(ctx)
		err = err2
		if err == nil && si.Cluster != nil {
			leader = si.Cluster.Leader
		}
	}
	cancel()
	if err != nil || byName[leader] == nil {
		t.Fatalf("leader of %s: %q, %v", jobsStream, leader, err)
	}
	kill(byName[leader], "leader of "+jobsStream)
	waitFor("jobs between the faults", count.Load()+50)
	client := connected.Load().(string)
	kill(byName[client], "the client's node")
	faultsDone.Store(true)
	wg.Wait()

	// Every accepted job must succeed.
	var lost []string
	for _, id := range accepted {
		ctx, cancel := context.WithTimeout(context.Background(), max(bound-time.Since(start), time.Second))
		info, err := q.Wait(ctx, id)
		cancel()
		if err != nil || info.State != jobqueue.StateSucceeded {
			lost = append(lost, fmt.Sprintf("%s (%v, %v)", id, info.State, err))
		}
	}
	elapsed := time.Since(start)
	mu.Lock()
	dups, extra := 0, 0
	for _, n := range runs {
		if n > 1 {
			dups++
			extra += n - 1
		}
	}
	// The longest Submit; the longest time a Submit took to return after
	// the connection it waited on came back; and the longest a Submit
	// stayed blocked after one started later had succeeded (the stream
	// took jobs again, but this one was still waiting).
	var longest, afterReconnect, stuck time.Duration
	for _, sp := range spans {
		longest = max(longest, sp.end.Sub(sp.start))
		for _, r := range reconnects {
			if r.After(sp.start) && r.Before(sp.end) {
				afterReconnect = max(afterReconnect, sp.end.Sub(r))
			}
		}
		for _, o := range spans {
			if o.ok && o.start.After(sp.start) && o.end.Before(sp.end) {
				stuck = max(stuck, sp.end.Sub(o.end))
			}
		}
	}
	nreconnects := len(reconnects)
	mu.Unlock()
	t.Logf("three-node cluster: %d accepted, %d lost, %d run more than once (%d extra runs), %d Submit errors, %v from the first Submit to the last success (bound %v)",
		len(accepted), len(lost), dups, extra, len(submitErrs), elapsed.Round(time.Millisecond), bound)
	t.Logf("longest Submit %v; %d reconnects, longest return after one %v; longest blocked after a later Submit succeeded %v (bound %v)",
		longest.Round(time.Millisecond), nreconnects, afterReconnect.Round(time.Millisecond), stuck.Round(time.Millisecond), maxStuck)
	for _, err := range submitErrs {
		t.Errorf("Submit error: %v", err)
	}
	if stuck > maxStuck {
		t.Errorf("a Submit stayed blocked %v after a later one succeeded, bound %v", stuck, maxStuck)
	}
	if len(lost) > 0 {
		t.Errorf("%d accepted jobs lost: %v", len(lost), lost[:min(len(lost), 10)])
	}
	if len(accepted) < minJobs {
		t.Errorf("only %d jobs accepted, want at least %d", len(accepted), minJobs)
	}
	if elapsed > bound {
		t.Errorf("run took %v, bound %v", elapsed, bound)
	}
}

func TestClusterOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []jetstream.Option
		want string
	}{
		{"cluster without name", []jetstream.Option{jetstream.WithCluster("127.0.0.1:0")}, "WithServerName"},
		{"cluster without listen", []jetstream.Option{jetstream.WithServerName("n1"), jetstream.WithCluster("127.0.0.1:0")}, "WithListen"},
		{"routes without cluster", []jetstream.Option{jetstream.WithRoutes("nats-route://127.0.0.1:6222")}, "WithCluster"},
		{"bad server name", []jetstream.Option{jetstream.WithServerName("n 1")}, "server name"},
		{"bad cluster name", []jetstream.Option{jetstream.WithClusterName("a.b")}, "cluster name"},
		{"bad cluster address", []jetstream.Option{jetstream.WithServerName("n1"), jetstream.WithListen("127.0.0.1:0"), jetstream.WithCluster("nowhere")}, "address"},
		{"route without port", []jetstream.Option{jetstream.WithServerName("n1"), jetstream.WithListen("127.0.0.1:0"),
			jetstream.WithCluster("127.0.0.1:0"), jetstream.WithRoutes("nats-route://127.0.0.1")}, "host and a port"},
	} {
		s, err := jetstream.NewServer(t.TempDir(), tc.opts...)
		if err == nil {
			s.Shutdown()
			t.Errorf("%s: no error", tc.name)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	// The first node of a cluster starts while the others are still down,
	// names itself and reports its route URL.
	addrs := freeAddrs(t, 2)
	s, err := jetstream.NewServer(t.TempDir(), jetstream.WithServerName("solo"), jetstream.WithListen("127.0.0.1:0"),
		jetstream.WithCluster(addrs[0]),
		jetstream.WithRoutes("nats-route://"+addrs[0], "nats-route://"+addrs[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if s.Name() != "solo" || !strings.HasPrefix(s.ClusterURL(), "nats-route://127.0.0.1:") {
		t.Errorf("Name %q, ClusterURL %q", s.Name(), s.ClusterURL())
	}
}

// BenchmarkCluster is BenchmarkEndToEnd on a three-node cluster on this
// machine, over loopback TCP: "r1" keeps one copy of every stream, "r3"
// three (each store is then a replicated write acknowledged by a
// majority), so the two figures side by side give the cost of replication.
func BenchmarkCluster(b *testing.B) {
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("r%d", replicas), func(b *testing.B) {
			nodes := startCluster(b)
			var be *jetstream.Backend
			deadline := time.Now().Add(30 * time.Second)
			for {
				var err error
				be, err = jetstream.Connect(clusterURLs(nodes), jetstream.WithName("bench"), jetstream.WithReplicas(replicas))
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal(err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			endToEnd(b, be, false)
		})
	}
}

// TestClusterReadsItsWrites: on three replicas, a job is found by Get the
// moment Submit returns, and its final state by Get the moment Wait
// returns, whichever server the client is connected to. Reads served by a
// replica that has not caught up yet would answer ErrNotFound or an older
// state.
func TestClusterReadsItsWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster: not in -short")
	}
	nodes := startCluster(t)
	for _, n := range nodes {
		// One backend per server, so that each is a follower of some
		// stream.
		b, err := jetstream.Connect("nats://"+n.client, jetstream.WithName("rw"), jetstream.WithReplicas(3))
		if err != nil {
			t.Fatal(err)
		}
		q := newQueue(t, b, jobqueue.Config{Workers: 4})
		q.Handle("echo", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
			return job.Payload, nil
		}))
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t)
		for i := range 150 {
			id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "echo", Payload: json.RawMessage(fmt.Sprint(i))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := q.Get(ctx, id); err != nil {
				t.Fatalf("via %s: Get right after Submit of job %d: %v", n.name, i, err)
			}
			if i%10 != 0 {
				continue
			}
			if info, err := q.Wait(ctx, id); err != nil || info.State != jobqueue.StateSucceeded {
				t.Fatalf("via %s: Wait = %+v, %v", n.name, info, err)
			}
			if info, err := q.Get(ctx, id); err != nil || info.State != jobqueue.StateSucceeded {
				t.Fatalf("via %s: Get right after Wait = %v, %v", n.name, info.State, err)
			}
		}
	}
}

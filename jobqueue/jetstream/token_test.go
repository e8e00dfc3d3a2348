package jetstream_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

const (
	testToken  = "tok-0123456789abcdefgh"
	otherToken = "tok-hgfedcba9876543210"
)

// runOne submits a job to a queue on b and waits for it to succeed.
func runOne(t *testing.T, b *jetstream.Backend) {
	t.Helper()
	q := newQueue(t, b, jobqueue.Config{Workers: 1})
	jobqueue.HandleFunc(q, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "echo", Payload: json.RawMessage(`"hi"`)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := q.Wait(ctx, id)
	if err != nil || info.State != jobqueue.StateSucceeded || string(info.Result) != `"hi"` {
		t.Fatalf("Wait = %+v, %v", info, err)
	}
}

// TestToken: a server with WithToken refuses clients without the token or
// with another one, and serves those with it (over TCP and in-process).
func TestToken(t *testing.T) {
	name := uniqueName()
	b, err := jetstream.Embedded(t.TempDir(), jetstream.WithName(name), jetstream.WithListen("127.0.0.1:0"), jetstream.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	url := b.ClientURL()
	runOne(t, b) // the in-process backend presents the server's token

	for _, c := range []struct {
		what string
		opts []jetstream.Option
	}{
		{"no token", nil},
		{"another token", []jetstream.Option{jetstream.WithToken(otherToken)}},
	} {
		opts := append([]jetstream.Option{jetstream.WithName(name)}, c.opts...)
		if cb, err := jetstream.Connect(url, opts...); err == nil {
			cb.Close(context.Background())
			t.Errorf("%s: connected", c.what)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization error", c.what, err)
		}
	}
	// Nor does a plain NATS client get in to read the streams.
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Error("a NATS client without the token connected")
	}
	cb, err := jetstream.Connect(url, jetstream.WithName(name), jetstream.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	runOne(t, cb)
}

// TestTokenCluster: the nodes of a cluster with a token authenticate their
// routes with it, so three of them still form a cluster that keeps three
// copies of every stream, and a client with the token runs jobs on it.
func TestTokenCluster(t *testing.T) {
	nodes := startClusterWithToken(t, testToken)
	b, err := jetstream.Connect(clusterURLs(nodes), jetstream.WithName(uniqueName()), jetstream.WithReplicas(3),
		jetstream.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	runOne(t, b)
	if cb, err := jetstream.Connect(clusterURLs(nodes), jetstream.WithName(uniqueName()), jetstream.WithReplicas(3)); err == nil {
		cb.Close(context.Background())
		t.Error("connected to the cluster without the token")
	}
}

func TestTokenOptions(t *testing.T) {
	for _, c := range []struct{ token, want string }{
		{"short", "at least 16"},
		{"tok-0123456789abcdef@x", "'@'"},
		{"tok 0123456789abcdefgh", "space"},
	} {
		if s, err := jetstream.NewServer(t.TempDir(), jetstream.WithToken(c.token)); err == nil {
			s.Shutdown()
			t.Errorf("token %q accepted", c.token)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("token %q: %v, want it to mention %s", c.token, err, c.want)
		}
	}
}

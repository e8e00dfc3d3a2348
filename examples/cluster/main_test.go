package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/corework/corework/jobqueue"
)

// TestMain runs the tests under goleak, or, when the demo re-executes the
// test binary as a worker process, runs that subcommand.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, os.Args[1:], os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out syncBuffer
	if err := run(ctx, []string{"demo", "-workers", "2", "-jobs", "12", "-work", "10"}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	got := out.String()
	// The start order by priority is printed; two processes claiming at
	// once may stamp a lower job a moment before a higher one, which
	// "priority honoured" allows within claimSlack (see reportPriority).
	for _, want := range []string{"12 jobs: 12 succeeded", "0 lost", "priority honoured", "start order (1 = first) by priority: high 1-"} {
		if !strings.Contains(got, want) {
			t.Errorf("demo output lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(got, " on w1 ") && !strings.Contains(got, " on w2 ") {
		t.Errorf("demo output names no worker:\n%s", got)
	}
}

func TestDemoInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"demo", "-workers", "2", "-jobs", "30", "-work", "2000"}, &out) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "queued 30 jobs") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	cancel() // what Ctrl-C does
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("interrupted demo: %v\n%s", err, out.String())
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("demo did not stop after the interrupt:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "interrupted") {
		t.Errorf("no interrupt message:\n%s", out.String())
	}
}

// TestSubcommands runs server, worker and submit as a user would, each in
// its own goroutine here.
func TestSubcommands(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "nats://" + addr
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	workCtx, stopWorker := context.WithCancel(context.Background())
	defer stopWorker()
	var serverOut, workerOut, submitOut syncBuffer
	serverErr, workerErr := make(chan error, 1), make(chan error, 1)
	go func() {
		serverErr <- run(srvCtx, []string{"server", "-listen", addr, "-store", t.TempDir()}, &serverOut)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(serverOut.String(), "NATS with JetStream on") {
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %s", serverOut.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	go func() {
		workerErr <- run(workCtx, []string{"worker", "-nats", url, "-concurrency", "3", "-name", "only"}, &workerOut)
	}()
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = run(sctx, []string{"submit", "-nats", url, "-n", "20", "-priority", "6", "-work", "1"}, &submitOut)
	scancel()
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, submitOut.String())
	}
	if !strings.Contains(submitOut.String(), "20 succeeded, 0 failed, 0 canceled, 0 pending, 0 lost") {
		t.Errorf("submit output:\n%s", submitOut.String())
	}
	stopWorker() // Ctrl-C in the worker's terminal, then in the server's
	if err := <-workerErr; err != nil {
		t.Errorf("worker: %v", err)
	}
	stopServer()
	if err := <-serverErr; err != nil {
		t.Errorf("server: %v", err)
	}
	if !strings.Contains(workerOut.String(), "only: running job") || !strings.Contains(workerOut.String(), "only: stopped after 20 jobs") {
		t.Errorf("worker output:\n%s", workerOut.String())
	}
	if err := run(context.Background(), []string{"bogus"}, &submitOut); err != errUsage {
		t.Errorf("unknown command = %v, want errUsage", err)
	}
}

// TestClusterSubcommands runs three cluster nodes of server, a worker and
// submit with -replicas 3, as the README's one-machine variant does.
func TestClusterSubcommands(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster: not in -short")
	}
	var addrs []string
	for range 6 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	routes := "nats-route://" + addrs[3] + ",nats-route://" + addrs[4] + ",nats-route://" + addrs[5]
	urls := "nats://" + addrs[0] + ",nats://" + addrs[1] + ",nats://" + addrs[2]
	// Every process gets the token, as the README's three machines do.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("# the cluster's token\n\nQ2wE3rT4yU5iO6pA7sD8fG9hJk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srvCtx, stopServers := context.WithCancel(context.Background())
	defer stopServers()
	outs := make([]*syncBuffer, 3)
	serverErrs := make(chan error, 3)
	for i := range 3 {
		outs[i] = &syncBuffer{}
		dir := t.TempDir()
		go func() {
			serverErrs <- run(srvCtx, []string{"server", "-name", fmt.Sprintf("n%d", i+1), "-listen", addrs[i],
				"-cluster", addrs[3+i], "-routes", routes, "-store", dir, "-token-file", tokenFile}, outs[i])
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := range 3 {
		for !strings.Contains(outs[i].String(), "cluster node n") {
			if time.Now().After(deadline) {
				t.Fatalf("server n%d did not start: %s", i+1, outs[i].String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The cluster needs a leader before the streams can be created: a
	// submit of no jobs creates them, and is repeated until it can.
	for {
		var out syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := run(ctx, []string{"submit", "-replicas", "3", "-nats", urls, "-n", "0", "-token-file", tokenFile}, &out)
		cancel()
		if err == nil {
			break
		}
		t.Logf("cluster not ready yet: %v", err)
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	workCtx, stopWorker := context.WithCancel(context.Background())
	defer stopWorker()
	var workerOut, submitOut syncBuffer
	workerErr := make(chan error, 1)
	go func() {
		workerErr <- run(workCtx, []string{"worker", "-replicas", "3", "-nats", urls, "-concurrency", "3", "-name", "only", "-quiet", "-token-file", tokenFile}, &workerOut)
	}()
	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	err := run(sctx, []string{"submit", "-replicas", "3", "-nats", urls, "-n", "20", "-work", "1", "-wait", "50s", "-token-file", tokenFile}, &submitOut)
	scancel()
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, submitOut.String())
	}
	if !strings.Contains(submitOut.String(), "20 succeeded, 0 failed, 0 canceled, 0 pending, 0 lost") {
		t.Errorf("submit output:\n%s", submitOut.String())
	}
	// Without the token, a client is refused.
	var out syncBuffer
	if err := run(context.Background(), []string{"submit", "-replicas", "3", "-nats", urls, "-n", "1"}, &out); err == nil ||
		!strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("submit without the token: %v\n%s", err, out.String())
	}
	stopWorker()
	if err := <-workerErr; err != nil {
		t.Errorf("worker: %v", err)
	}
	if !strings.Contains(workerOut.String(), "only: stopped after 20 jobs") {
		t.Errorf("worker output:\n%s", workerOut.String())
	}
	stopServers()
	for range 3 {
		if err := <-serverErrs; err != nil {
			t.Errorf("server: %v", err)
		}
	}
}

// TestServerExposed: a server whose client or route address other machines
// can reach needs a token (or -insecure), and says so before it starts.
func TestServerExposed(t *testing.T) {
	for _, args := range [][]string{
		{"-listen", ":4222"},
		{"-listen", "0.0.0.0:4222"},
		{"-listen", "127.0.0.1:0", "-name", "n1", "-cluster", "0.0.0.0:6222"},
	} {
		var out syncBuffer
		err := run(context.Background(), append([]string{"server", "-store", t.TempDir()}, args...), &out)
		if err == nil || !strings.Contains(err.Error(), "without a token") || !strings.Contains(err.Error(), "-token-file") ||
			!strings.Contains(err.Error(), "-insecure") {
			t.Errorf("server %q: %v", args, err)
		}
		if out.String() != "" {
			t.Errorf("server %q started:\n%s", args, out.String())
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("# no token here\n"), 0o600)
	for _, c := range []struct{ file, want string }{
		{empty, "holds no token"},
		{filepath.Join(t.TempDir(), "missing"), "no such file"},
	} {
		err := run(context.Background(), []string{"submit", "-token-file", c.file}, &syncBuffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("-token-file %s: %v, want %q", c.file, err, c.want)
		}
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	if err := run(context.Background(), []string{"server", "-listen", "0.0.0.0:4222", "-store", t.TempDir(), "-token-file", short}, &syncBuffer{}); err == nil ||
		!strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a short token: %v", err)
	}
}

// TestFlags checks -h on every subcommand (errHelp: main exits 0) and -v
// (a logger that takes Debug records).
func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"demo", "-h"}, {"server", "-h"}, {"worker", "-h"}, {"submit", "-h"}} {
		if err := run(context.Background(), args, io.Discard); !errors.Is(err, errHelp) {
			t.Errorf("%q = %v, want errHelp", args, err)
		}
	}
	if err := run(context.Background(), []string{"worker", "-nope"}, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("a bad flag = %v, want errUsage", err)
	}
	for _, args := range [][]string{nil, {"-v"}} {
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		verbose := verboseFlag(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if l := verbose(); (l != nil) != (len(args) == 1) || l != nil && !l.Enabled(context.Background(), slog.LevelDebug) {
			t.Errorf("%q: logger %v", args, l)
		}
	}
}

// TestReportPriority: a lower-priority job started before a higher one is
// an inversion on the same process at any distance, and on two processes
// beyond claimSlack; within it, the two were claimed at once.
func TestReportPriority(t *testing.T) {
	t0 := time.Now()
	job := func(p jobqueue.Priority, worker string, at time.Duration) jobqueue.JobInfo {
		return jobqueue.JobInfo{Job: jobqueue.Job{Priority: p}, Worker: worker, StartedAt: t0.Add(at)}
	}
	for _, c := range []struct {
		name  string
		infos []jobqueue.JobInfo
		want  string
	}{
		{"in order", []jobqueue.JobInfo{job(jobqueue.High, "w1", 0), job(jobqueue.Low, "w2", time.Millisecond)}, "priority honoured"},
		{"same process, 1 ms", []jobqueue.JobInfo{job(jobqueue.Low, "w1", 0), job(jobqueue.High, "w1", time.Millisecond)}, "inverted in 1 of 1"},
		{"two processes, 1 ms", []jobqueue.JobInfo{job(jobqueue.Low, "w1", 0), job(jobqueue.High, "w2", time.Millisecond)}, "1 on two processes started within 10ms"},
		{"two processes, 50 ms", []jobqueue.JobInfo{job(jobqueue.Low, "w1", 0), job(jobqueue.High, "w2", 50*time.Millisecond)}, "inverted in 1 of 1"},
	} {
		var out strings.Builder
		reportPriority(&out, c.infos)
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("%s: %q lacks %q", c.name, out.String(), c.want)
		}
	}
}

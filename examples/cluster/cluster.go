package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/corework/corework/examples/internal/access"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

var (
	// errLost is returned by submit when a job it stored has vanished.
	errLost = errors.New("jobs lost")
	// errUsage is returned for bad arguments (flag has printed why).
	errUsage = errors.New("usage")
	// errHelp is returned for -h (flag has printed the usage).
	errHelp = errors.New("help requested")
)

// jobType is the one job type of the example: it works for the payload's
// number of milliseconds and returns who ran it.
const jobType = "work"

// retention keeps enough finished jobs for any run of the example; every
// process of a queue must agree on it (the last one to start sets it).
var retention = jobqueue.Retention{MaxJobs: 100_000, MaxAge: time.Hour}

// result is what the work handler returns.
type result struct {
	Worker string `json:"worker"`
	PID    int    `json:"pid"`
}

// run runs the subcommand in args (the demo if none) until it is done or
// ctx ends, writing its report to out.
func run(ctx context.Context, args []string, out io.Writer) error {
	cmd := "demo"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "demo":
		return demo(ctx, args, out)
	case "server":
		return serve(ctx, args, out)
	case "worker":
		return work(ctx, args, out)
	case "submit":
		return submit(ctx, args, out)
	}
	fmt.Fprintf(os.Stderr, "cluster: unknown command %q (demo, server, worker, submit)\n", cmd)
	return errUsage
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "cluster %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return errUsage
	}
	return nil
}

// serve runs a NATS server with JetStream until ctx ends.
func serve(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:4222", "TCP address to accept clients on")
	store := fs.String("store", "", "directory of the server's files (default: a new temporary one)")
	name := fs.String("name", "", "server name, unique in the cluster (needed with -cluster)")
	cluster := fs.String("cluster", "", "host:port to accept routes from the other nodes on (makes this server a cluster node)")
	routes := fs.String("routes", "", "route URLs of the cluster's nodes, comma-separated, such as nats-route://10.0.0.2:6222")
	token := tokenFlag(fs)
	insecure := fs.Bool("insecure", false, "accept clients or routes beyond loopback without a token (a firewall must guard the ports)")
	if err := parse(fs, args); err != nil {
		return err
	}
	opts := []jetstream.Option{jetstream.WithListen(*listen)}
	tok, err := token()
	if err != nil {
		return err
	}
	if tok != "" {
		opts = append(opts, jetstream.WithToken(tok))
	} else if !*insecure {
		for _, addr := range []string{*listen, *cluster} {
			if addr != "" && !access.Loopback(addr) {
				return fmt.Errorf("server: refusing to listen on %s without a token: anyone who reaches it could read, change and delete every job; "+
					"give -token-file FILE (the same file to every server, worker and submit), listen on 127.0.0.1, "+
					"or pass -insecure if a firewall lets only your machines in", addr)
			}
		}
	}
	if *name != "" {
		opts = append(opts, jetstream.WithServerName(*name))
	}
	if *cluster != "" {
		opts = append(opts, jetstream.WithCluster(*cluster))
	}
	if *routes != "" {
		opts = append(opts, jetstream.WithRoutes(strings.Split(*routes, ",")...))
	}
	dir := *store
	if dir == "" {
		d, err := os.MkdirTemp("", "corework-cluster-")
		if err != nil {
			return err
		}
		dir = d
	}
	srv, err := jetstream.NewServer(dir, opts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "server: NATS with JetStream on %s, files in %s; Ctrl-C stops it\n", srv.ClientURL(), dir)
	if c := srv.ClusterURL(); c != "" {
		fmt.Fprintf(out, "server: cluster node %s, routes on %s\n", srv.Name(), c)
	}
	<-ctx.Done()
	srv.Shutdown()
	fmt.Fprintln(out, "server: stopped")
	return nil
}

// verboseFlag adds -v to fs. The function it returns, once fs is parsed,
// gives the logger -v asks for: debug records as text on stderr, or nil.
func verboseFlag(fs *flag.FlagSet) func() *slog.Logger {
	v := fs.Bool("v", false, "debug log on stderr (the job queue's and the JetStream backend's records)")
	return func() *slog.Logger {
		if !*v {
			return nil
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// withLogger appends jetstream.WithLogger(l) to opts when l is not nil.
func withLogger(opts []jetstream.Option, l *slog.Logger) []jetstream.Option {
	if l != nil {
		opts = append(opts, jetstream.WithLogger(l))
	}
	return opts
}

// tokenFlag adds -token-file to fs. The function it returns reads the
// token from the file once fs is parsed: the first line that is neither
// blank nor a # comment, trimmed ("" without the flag). A file keeps the
// token out of the process list, where a flag's value would show.
func tokenFlag(fs *flag.FlagSet) func() (string, error) {
	path := fs.String("token-file", "", "`file` holding the token every server, worker and submit of the cluster shares (default: none, loopback only)")
	return func() (string, error) {
		if *path == "" {
			return "", nil
		}
		data, err := os.ReadFile(*path)
		if err != nil {
			return "", fmt.Errorf("%s: -token-file: %w", fs.Name(), err)
		}
		for line := range strings.Lines(string(data)) {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				return line, nil
			}
		}
		return "", fmt.Errorf("%s: -token-file %s holds no token", fs.Name(), *path)
	}
}

// clientOptions are the options of a worker's or submitter's Connect.
func clientOptions(replicas int, token func() (string, error)) ([]jetstream.Option, error) {
	tok, err := token()
	if err != nil {
		return nil, err
	}
	opts := []jetstream.Option{jetstream.WithReplicas(replicas)}
	if tok != "" {
		opts = append(opts, jetstream.WithToken(tok))
	}
	return opts, nil
}

// work runs a worker process until ctx ends.
func work(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	url := fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	concurrency := fs.Int("concurrency", runtime.GOMAXPROCS(0), "jobs run at a time")
	name := fs.String("name", "", "name reported with each job (default: worker-PID)")
	quiet := fs.Bool("quiet", false, "do not print a line per job")
	replicas := fs.Int("replicas", 1, "copies of every stream: 1 on one server, 3 on a three-node cluster")
	token := tokenFlag(fs)
	verbose := verboseFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *concurrency < 1 {
		return fmt.Errorf("worker: -concurrency %d", *concurrency)
	}
	if *name == "" {
		*name = fmt.Sprintf("worker-%d", os.Getpid())
	}
	opts, err := clientOptions(*replicas, token)
	if err != nil {
		return err
	}
	logger := verbose()
	b, err := jetstream.Connect(*url, withLogger(opts, logger)...)
	if err != nil {
		return err
	}
	// On Ctrl-C a worker finishes the jobs it runs and leaves the rest in
	// the server for the other workers (or for its next start).
	q, err := jobqueue.New(jobqueue.Config{Backend: b, Workers: *concurrency, Retention: retention,
		ShutdownPolicy: jobqueue.LeavePending, Logger: logger})
	if err != nil {
		_ = b.Close(context.Background())
		return err
	}
	jobqueue.HandleFunc(q, jobType, func(ctx context.Context, ms int) (result, error) {
		if !*quiet {
			job, attempt, _ := jobqueue.JobFromContext(ctx)
			fmt.Fprintf(out, "%s: running job %s (priority %s, attempt %d)\n", *name, job.ID, job.Priority, attempt)
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return result{}, ctx.Err()
		}
		return result{Worker: *name, PID: os.Getpid()}, nil
	})
	if err := q.Start(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: pid %d runs %d jobs at a time from %s\n", *name, os.Getpid(), *concurrency, *url)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = q.Shutdown(sctx)
	fmt.Fprintf(out, "%s: stopped after %d jobs\n", *name, q.Stats().Succeeded)
	return err
}

// tally is the final count of a set of jobs.
type tally struct{ succeeded, failed, canceled, pending, lost int }

func (t tally) String() string {
	return fmt.Sprintf("%d succeeded, %d failed, %d canceled, %d pending, %d lost",
		t.succeeded, t.failed, t.canceled, t.pending, t.lost)
}

// count waits (until ctx ends) for the jobs to finish and counts them. A
// job that can no longer be found is lost.
func count(ctx context.Context, q *jobqueue.Queue, ids []string) (tally, []jobqueue.JobInfo) {
	infos := make([]jobqueue.JobInfo, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			infos[i], errs[i] = q.Wait(ctx, id)
			if errs[i] != nil && !errors.Is(errs[i], jobqueue.ErrNotFound) {
				// Not finished in time (or canceled): look at it once more.
				gctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				infos[i], errs[i] = q.Get(gctx, id)
				cancel()
			}
		}()
	}
	wg.Wait()
	var t tally
	for i := range ids {
		switch {
		case errors.Is(errs[i], jobqueue.ErrNotFound):
			t.lost++
		case errs[i] != nil:
			t.pending++ // unknown: the server is unreachable
		case infos[i].State == jobqueue.StateSucceeded:
			t.succeeded++
		case infos[i].State == jobqueue.StateFailed:
			t.failed++
		case infos[i].State == jobqueue.StateCanceled:
			t.canceled++
		default:
			t.pending++
		}
	}
	return t, infos
}

// submit queues n jobs and waits for them.
func submit(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	url := fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	n := fs.Int("n", 10, "number of jobs")
	prio := fs.Int("priority", int(jobqueue.Normal), "priority of the jobs, 0 (low) to 9 (critical)")
	ms := fs.Int("work", 20, "milliseconds of work per job")
	wait := fs.Duration("wait", time.Minute, "how long to wait for the jobs to finish")
	replicas := fs.Int("replicas", 1, "copies of every stream: 1 on one server, 3 on a three-node cluster")
	token := tokenFlag(fs)
	verbose := verboseFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	opts, err := clientOptions(*replicas, token)
	if err != nil {
		return err
	}
	logger := verbose()
	b, err := jetstream.Connect(*url, withLogger(opts, logger)...)
	if err != nil {
		return err
	}
	q, err := jobqueue.New(jobqueue.Config{Backend: b, NoWorkers: true, Retention: retention, Logger: logger})
	if err != nil {
		_ = b.Close(context.Background())
		return err
	}
	defer q.Shutdown(context.Background())
	ids := make([]string, 0, *n)
	for range *n {
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: jobType, Priority: jobqueue.Priority(*prio), Payload: json.RawMessage(fmt.Sprint(*ms))})
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	fmt.Fprintf(out, "submit: queued %d jobs at priority %s; waiting up to %v\n", len(ids), jobqueue.Priority(*prio), *wait)
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	t, _ := count(wctx, q, ids)
	fmt.Fprintf(out, "submit: %s\n", t)
	if t.lost > 0 {
		return fmt.Errorf("%w: %d of %d", errLost, t.lost, len(ids))
	}
	return nil
}

// demo runs a server, worker processes of this binary and a producer.
func demo(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	workers := fs.Int("workers", 3, "worker processes")
	concurrency := fs.Int("concurrency", 2, "jobs each worker process runs at a time")
	jobs := fs.Int("jobs", 30, "jobs to queue, spread over three priorities")
	ms := fs.Int("work", 40, "milliseconds of work per job")
	verbose := verboseFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	logger := verbose()
	if *workers < 1 || *concurrency < 1 || *jobs < 3 {
		return fmt.Errorf("demo: need at least 1 worker, concurrency 1 and 3 jobs")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "corework-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := jetstream.NewServer(dir, withLogger([]jetstream.Option{jetstream.WithListen("127.0.0.1:0")}, logger)...)
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	url := srv.ClientURL()
	fmt.Fprintf(out, "demo: NATS server with JetStream on %s, files in %s\n", url, dir)

	b, err := jetstream.Connect(url, withLogger(nil, logger)...)
	if err != nil {
		return err
	}
	q, err := jobqueue.New(jobqueue.Config{Backend: b, NoWorkers: true, Retention: retention, Logger: logger})
	if err != nil {
		return err
	}
	defer q.Shutdown(context.Background())

	// Queue every job before any worker runs, in an order that mixes the
	// priorities, so the order they start in is the queue's doing.
	levels := []jobqueue.Priority{jobqueue.Low, jobqueue.Normal, jobqueue.High}
	prioOf := map[string]jobqueue.Priority{}
	var ids []string
	for i := range *jobs {
		p := levels[i%len(levels)]
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: jobType, Priority: p, Payload: json.RawMessage(fmt.Sprint(*ms))})
		if err != nil {
			return err
		}
		ids = append(ids, id)
		prioOf[id] = p
	}
	fmt.Fprintf(out, "demo: queued %d jobs (low, normal, high in turn) before starting any worker\n", len(ids))

	sub := q.Subscribe(jobqueue.EventFilter{Kinds: []jobqueue.EventKind{jobqueue.EventSucceeded, jobqueue.EventFailed}})
	defer sub.Close()
	procs, err := startWorkers(ctx, exe, url, *workers, *concurrency, logger != nil)
	defer stopWorkers(procs)
	if err != nil {
		return err
	}

	start := time.Now()
	perWorker := map[string]int{}
	for done := 0; done < len(ids); {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return fmt.Errorf("demo: event subscription ended: %v", sub.Err())
			}
			if _, mine := prioOf[ev.JobID]; !mine {
				continue
			}
			done++
			var r result
			_ = json.Unmarshal(ev.Result, &r)
			perWorker[r.Worker]++
			fmt.Fprintf(out, "  %3d. job %s  %-6s  %-9s  on %s (pid %d)  +%v\n", done, ev.JobID, ev.Priority, ev.Kind, r.Worker, r.PID,
				ev.Time.Sub(start).Round(time.Millisecond))
		case <-ctx.Done():
			fmt.Fprintln(out, "demo: interrupted; stopping the workers and the server")
			return nil
		}
	}
	t, infos := count(ctx, q, ids)
	fmt.Fprintf(out, "demo: %d jobs: %s\n", len(ids), t)
	var names []string
	for w := range perWorker {
		names = append(names, w)
	}
	sort.Strings(names)
	fmt.Fprint(out, "demo: jobs per worker process:")
	for _, w := range names {
		fmt.Fprintf(out, " %s %d", w, perWorker[w])
	}
	fmt.Fprintln(out)
	reportPriority(out, infos)
	if t.lost > 0 {
		return fmt.Errorf("%w: %d of %d", errLost, t.lost, len(ids))
	}
	return nil
}

// claimSlack is how close two jobs' starts on different worker processes
// may be and still count as one moment: a start is stamped when the
// process has claimed the job (a write to the state bucket, a round trip of
// a few milliseconds on a busy machine), so two processes claiming at once
// stamp their jobs in either order whatever their priorities.
const claimSlack = 10 * time.Millisecond

// reportPriority prints the order the jobs started in, per priority, and
// counts the pairs where a lower job started before a higher one: on the
// same worker process, at any distance; on two processes, by more than
// claimSlack (closer pairs are counted apart, as concurrent claims).
func reportPriority(out io.Writer, infos []jobqueue.JobInfo) {
	byStart := slices.Clone(infos)
	slices.SortStableFunc(byStart, func(a, b jobqueue.JobInfo) int { return a.StartedAt.Compare(b.StartedAt) })
	ranks := map[jobqueue.Priority][]int{}
	for i, info := range byStart {
		ranks[info.Priority] = append(ranks[info.Priority], i+1)
	}
	inversions, pairs, concurrent := 0, 0, 0
	for i := range byStart {
		for j := i + 1; j < len(byStart); j++ {
			a, b := byStart[i], byStart[j]
			if a.Priority == b.Priority {
				continue
			}
			pairs++
			if a.Priority > b.Priority {
				continue
			}
			if a.Worker != b.Worker && b.StartedAt.Sub(a.StartedAt) <= claimSlack {
				concurrent++
				continue
			}
			inversions++
		}
	}
	var prios []jobqueue.Priority
	for p := range ranks {
		prios = append(prios, p)
	}
	slices.Sort(prios)
	slices.Reverse(prios)
	fmt.Fprint(out, "demo: start order (1 = first) by priority:")
	for _, p := range prios {
		r := ranks[p]
		fmt.Fprintf(out, " %s %d-%d", p, r[0], r[len(r)-1])
	}
	fmt.Fprintln(out)
	if inversions == 0 {
		fmt.Fprintf(out, "demo: priority honoured: no lower-priority job started before a higher one (%d pairs checked", pairs)
		if concurrent > 0 {
			fmt.Fprintf(out, "; %d on two processes started within %v of each other, claimed at once", concurrent, claimSlack)
		}
		fmt.Fprintln(out, ")")
	} else {
		fmt.Fprintf(out, "demo: priority inverted in %d of %d pairs (a lower-priority job started first)\n", inversions, pairs)
	}
}

// startWorkers starts n worker processes of this binary.
// With verbose they log as -v says.
func startWorkers(ctx context.Context, exe, url string, n, concurrency int, verbose bool) ([]*exec.Cmd, error) {
	var procs []*exec.Cmd
	for i := range n {
		args := []string{"worker", "-nats", url, "-concurrency", fmt.Sprint(concurrency), "-name", fmt.Sprintf("w%d", i+1), "-quiet"}
		if verbose {
			args = append(args, "-v")
		}
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Cancel = func() error { return interrupt(cmd.Process) }
		cmd.WaitDelay = 30 * time.Second
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return procs, err
		}
		procs = append(procs, cmd)
	}
	return procs, nil
}

// stopWorkers asks the worker processes to stop (as Ctrl-C would) and
// waits for them.
func stopWorkers(procs []*exec.Cmd) {
	for _, p := range procs {
		_ = interrupt(p.Process)
	}
	for _, p := range procs {
		_ = p.Wait()
	}
}

// interrupt asks a process to stop: SIGINT where there are signals, a
// kill on Windows.
func interrupt(p *os.Process) error {
	if runtime.GOOS == "windows" {
		return p.Kill()
	}
	return p.Signal(os.Interrupt)
}

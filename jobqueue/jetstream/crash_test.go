package jetstream_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// The crash tests re-execute the test binary as worker processes: with
// workerEnv set, TestMain runs runWorker instead of the tests.
const (
	workerEnv = "COREWORK_JETSTREAM_TEST_WORKER" // "hang", "work" or "tick"
	urlEnv    = "COREWORK_JETSTREAM_TEST_URL"
	nameEnv   = "COREWORK_JETSTREAM_TEST_NAME"
)

// runWorker is a worker process for the crash tests. It prints "TAG <tag>"
// once its queue runs and "STARTED <id>" when a handler starts. In "hang"
// mode handlers never return (the test kills the process); in "work" mode
// they return the worker's tag; in "tick" mode it also runs tickSchedule,
// whose "tick" jobs print "RAN <id>". It stops when its stdin closes.
func runWorker() int {
	mode := os.Getenv(workerEnv)
	b, err := jetstream.Connect(os.Getenv(urlEnv), jetstream.WithName(os.Getenv(nameEnv)),
		jetstream.WithAckWait(time.Second), jetstream.WithPollInterval(50*time.Millisecond))
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	q, err := jobqueue.New(jobqueue.Config{Backend: b, Workers: 2})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	q.Handle("crashy", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		say("STARTED %s", job.ID)
		if mode == "hang" {
			select {} // until the test kills this process
		}
		return json.Marshal(q.Tag())
	}))
	if mode == "tick" {
		q.Handle("tick", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
			say("RAN %s", job.ID)
			return nil, nil
		}))
		if err := q.Schedule(tickSchedule); err != nil {
			fmt.Println("ERROR", err)
			return 1
		}
	}
	if err := q.Start(); err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	say("TAG %s", q.Tag())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Shutdown(ctx); err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	return 0
}

// tickSchedule is the schedule of the worker processes in "tick" mode.
var tickSchedule = jobqueue.Schedule{Name: "report", Every: time.Second, Job: jobqueue.JobRequest{Type: "tick"}}

// stop closes the worker's stdin, waits for it to shut down and returns
// every line it printed that was not read yet.
func (w *worker) stop(t *testing.T) []string {
	t.Helper()
	_ = w.stdin.Close()
	var rest []string
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-w.lines:
			rest = append(rest, l)
		case <-w.done:
			for {
				select {
				case l := <-w.lines:
					rest = append(rest, l)
				default:
					return rest
				}
			}
		case <-timeout:
			t.Fatal("worker did not stop within 20 s of its stdin closing")
		}
	}
}

// worker is a running worker process.
type worker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	tag   string
}

// startWorker starts a worker process in mode and waits for its tag. The
// process is stopped (stdin closed, then killed if it lingers) when the
// test ends.
func startWorker(t *testing.T, mode, url, name string) *worker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnv+"="+mode, urlEnv+"="+url, nameEnv+"="+name)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &worker{cmd: cmd, stdin: stdin, lines: make(chan string, 64), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case w.lines <- sc.Text():
			default: // nobody reads any more
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		exited := make(chan struct{})
		go func() {
			<-w.done // read to EOF before Wait closes the pipe
			_ = cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	w.tag = strings.TrimPrefix(w.expect(t, "TAG "), "TAG ")
	return w
}

// expect returns the worker's next output line starting with prefix.
func (w *worker) expect(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l := <-w.lines:
			if strings.HasPrefix(l, "ERROR") {
				t.Fatalf("worker: %s", l)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-w.done:
			t.Fatalf("worker exited before printing %q", prefix)
		case <-deadline:
			t.Fatalf("worker did not print %q", prefix)
		}
	}
}

// TestWorkerKilledMidJob kills a worker process with SIGKILL while its
// handler runs: once the lease (AckWait, one second here) expires, JetStream
// delivers the job again and another worker process completes it, as its
// second attempt.
func TestWorkerKilledMidJob(t *testing.T) {
	srv := startServer(t, jetstream.WithListen("127.0.0.1:0"))
	name := uniqueName()
	b, err := jetstream.Connect(srv.ClientURL(), jetstream.WithName(name), jetstream.WithAckWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, b, jobqueue.Config{NoWorkers: true}) // submits and watches only

	victim := startWorker(t, "hang", srv.ClientURL(), name)
	id, err := q.Submit(testCtx(t), jobqueue.JobRequest{Type: "crashy", MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := victim.expect(t, "STARTED "); got != "STARTED "+id {
		t.Fatalf("victim started %q, want %s", got, id)
	}
	info, err := q.Get(testCtx(t), id)
	if err != nil || info.State != jobqueue.StateRunning || info.Worker != victim.tag {
		t.Fatalf("before the kill: %+v, %v; want running on %s", info, err, victim.tag)
	}
	killed := time.Now()
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	rescuer := startWorker(t, "work", srv.ClientURL(), name)
	info, err = q.Wait(testCtx(t), id)
	if err != nil {
		t.Fatalf("Wait after the kill: %v (%+v)", err, info)
	}
	var ranOn string
	_ = json.Unmarshal(info.Result, &ranOn)
	if info.State != jobqueue.StateSucceeded || info.Attempts != 2 || info.Worker != rescuer.tag || ranOn != rescuer.tag {
		t.Fatalf("after the kill: state %s attempts %d worker %s result %s; want succeeded on the second attempt by %s",
			info.State, info.Attempts, info.Worker, info.Result, rescuer.tag)
	}
	if d := info.FinishedAt.Sub(killed); d < 500*time.Millisecond {
		t.Fatalf("redelivered %v after the kill, before the lease could expire", d)
	}
	t.Logf("job %s: killed on %s, redelivered and done by %s %v after the kill", id, victim.tag, rescuer.tag,
		info.FinishedAt.Sub(killed).Round(time.Millisecond))
}

// TestEmbeddedRestart stores jobs (ready, delayed, and one interrupted while
// running), stops the embedded server with the queue, starts it again on
// the same directory, and checks that every job runs to success.
func TestEmbeddedRestart(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	b, err := jetstream.Embedded(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	q1, err := jobqueue.New(jobqueue.Config{Backend: b, Workers: 1, ShutdownPolicy: jobqueue.LeavePending})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan string, 1)
	q1.Handle("job", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		started <- job.ID
		<-ctx.Done() // interrupted by Shutdown
		return nil, ctx.Err()
	}))
	ctx := testCtx(t)
	var ids []string
	first, err := q1.Submit(ctx, jobqueue.JobRequest{Type: "job", Priority: jobqueue.Critical})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, first)
	if err := q1.Start(); err != nil {
		t.Fatal(err)
	}
	if got := <-started; got != first {
		t.Fatalf("started %s, want %s", got, first)
	}
	for i := range 100 {
		req := jobqueue.JobRequest{Type: "job", Priority: jobqueue.Priority(i % 10), Payload: json.RawMessage(fmt.Sprint(i))}
		if i%10 == 0 {
			req.RunAt = time.Now().Add(time.Second)
		}
		id, err := q1.Submit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_ = q1.Shutdown(sctx) // the running job is interrupted and left pending
	cancel()
	if err := q1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if st := q1.Stats(); st.Left != len(ids) {
		t.Fatalf("left %d jobs at shutdown, want %d", st.Left, len(ids))
	}

	b2, err := jetstream.Embedded(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	q2 := newQueue(t, b2, jobqueue.Config{Workers: 4})
	var mu sync.Mutex
	runs := map[string]int{}
	q2.Handle("job", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		mu.Lock()
		runs[job.ID]++
		mu.Unlock()
		return nil, nil
	}))
	if err := q2.Start(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		info, err := q2.Wait(ctx, id)
		if err != nil {
			t.Fatalf("job %s after restart: %v (%s)", id, err, info.State)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != len(ids) {
		t.Fatalf("%d distinct jobs ran after the restart, want %d", len(runs), len(ids))
	}
	info, err := q2.Get(ctx, first)
	if err != nil || info.Attempts != 2 {
		t.Fatalf("interrupted job: %+v, %v; want a second attempt", info, err)
	}
}

// TestServerRestartUnderLoad stops the server while worker processes run
// jobs and starts it again on the same directory and port: the clients
// reconnect, jobs whose acknowledgement was lost are delivered again, and
// every job succeeds.
func TestServerRestartUnderLoad(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv, err := jetstream.NewServer(dir, jetstream.WithListen(addr))
	if err != nil {
		t.Fatal(err)
	}
	var srvMu sync.Mutex
	t.Cleanup(func() {
		srvMu.Lock()
		defer srvMu.Unlock()
		srv.Shutdown()
	})
	name := uniqueName()
	b, err := jetstream.Connect(srv.ClientURL(), jetstream.WithName(name), jetstream.WithAckWait(time.Second),
		jetstream.WithPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, b, jobqueue.Config{Workers: 4, OnError: func(*jobqueue.Job, int, error) {}})
	var mu sync.Mutex
	runs := map[string]int{}
	q.Handle("job", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		runs[job.ID]++
		mu.Unlock()
		return nil, nil
	}))
	ctx := testCtx(t)
	var ids []string
	for i := range 300 {
		id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "job", Priority: jobqueue.Priority(i % 10)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		mu.Lock()
		n := len(runs)
		mu.Unlock()
		if n >= 50 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	srvMu.Lock()
	srv.Shutdown()
	time.Sleep(200 * time.Millisecond)
	srv, err = jetstream.NewServer(dir, jetstream.WithListen(addr))
	srvMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		for {
			info, err := q.Wait(ctx, id)
			if err == nil {
				break
			}
			if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				t.Fatalf("job %s: %v (%s)", id, err, info.State)
			}
			time.Sleep(20 * time.Millisecond) // the client is reconnecting
		}
	}
	mu.Lock()
	defer mu.Unlock()
	again := 0
	for _, n := range runs {
		again += n - 1
	}
	if len(runs) != len(ids) {
		t.Fatalf("%d distinct jobs ran, want %d", len(runs), len(ids))
	}
	t.Logf("%d jobs all succeeded across the restart; %d ran twice (acknowledgement lost in the outage)", len(ids), again)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestWorkerKilledOnLastAttempt: a job with MaxAttempts 1 whose worker
// process dies is not run again; once its lease expires it fails with an
// error naming the lost worker and goes to the dead-letter stream.
func TestWorkerKilledOnLastAttempt(t *testing.T) {
	srv := startServer(t, jetstream.WithListen("127.0.0.1:0"))
	name := uniqueName()
	b, err := jetstream.Connect(srv.ClientURL(), jetstream.WithName(name), jetstream.WithAckWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, b, jobqueue.Config{NoWorkers: true})
	victim := startWorker(t, "hang", srv.ClientURL(), name)
	id, err := q.Submit(testCtx(t), jobqueue.JobRequest{Type: "crashy", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	victim.expect(t, "STARTED "+id)
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	rescuer := startWorker(t, "work", srv.ClientURL(), name)
	info, err := q.Wait(testCtx(t), id)
	if !errors.Is(err, jobqueue.ErrFailed) || info.Attempts != 1 || !strings.Contains(info.LastError, victim.tag) {
		t.Fatalf("Wait = %v, %+v; want failed after its only attempt, naming worker %s", err, info, victim.tag)
	}
	select {
	case l := <-rescuer.lines:
		t.Fatalf("the rescuer ran the job: %s", l)
	default:
	}
	dead, err := b.DeadLetters(testCtx(t), 1)
	if err != nil || len(dead) != 1 || dead[0].ID != id {
		t.Fatalf("dead letters = %+v, %v", dead, err)
	}
}

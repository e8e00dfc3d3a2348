package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/corework/corework/procpool"
)

func TestMain(m *testing.M) {
	procpool.Main()
	childMain() // the test binary is also the hand-started children of lessons 1 and 2
	// Race-enabled workers would sleep 1 s in os.Exit at every Shutdown.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	goleak.VerifyTestMain(m)
}

// lockedBuffer collects the lesson's output and the workers' output, which
// arrive from different goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// quick is the configuration of -quick: fib(27), three messages.
var quick = quickConfig()

// contains reports every string of want missing from text.
func contains(t *testing.T, text string, want ...string) {
	t.Helper()
	for _, s := range want {
		if !strings.Contains(text, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

func TestByHand(t *testing.T) {
	var out lockedBuffer
	if err := byHand(context.Background(), &out, quick); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Log("\n" + text)
	contains(t, text,
		fmt.Sprintf("parent pid %d started child pid ", os.Getpid()),
		`parent → child stdin: "27\n", then closed it`,
		`child → parent stdout: "fib(27) = 196418 (pid `,
		"cmd.Wait (join) returned nil: exit status 0, ExitCode() 0 (p.exitcode)",
		`parent → child stdin: "fib please\n", then closed it`,
		`child → parent stderr: "child: bad input \"fib please\", want a number from 0 to 45"`,
		"cmd.Wait (join) returned *exec.ExitError: exit status 2, ExitCode() 2 (p.exitcode)",
	)
	// The child is another process: the pid it reports is the one started.
	m := regexp.MustCompile(`started child pid (\d+) .*\n.*\n.*\(pid (\d+),`).FindStringSubmatch(text)
	if m == nil || m[1] != m[2] || m[1] == strconv.Itoa(os.Getpid()) {
		t.Errorf("child pids: %q", m)
	}
}

func TestQueue(t *testing.T) {
	var out lockedBuffer
	if err := queueLesson(context.Background(), &out, quick); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Log("\n" + text)
	m := regexp.MustCompile(`producer pid (\d+) .* consumer pid (\d+) `).FindStringSubmatch(text)
	if m == nil || m[1] == m[2] {
		t.Fatalf("no producer and consumer pids: %q", m)
	}
	prod, cons := m[1], m[2]
	// Every message is reported sent by the producer, then received, in
	// order, by the consumer, then the sentinel, then both exit with 0.
	want := []string{
		"producer: pid " + prod + " sent #1 n=27 as a ",
		"producer: pid " + prod + " sent #2 n=28 as a ",
		"producer: pid " + prod + " sent #3 n=29 as a ",
		"producer: pid " + prod + " sent the sentinel as a ",
		"consumer: pid " + cons + " received #1 n=27 after ",
		"in the queue: fib(27) = 196418",
		"consumer: pid " + cons + " received #2 n=28 after ",
		"in the queue: fib(28) = 317811",
		"consumer: pid " + cons + " received #3 n=29 after ",
		"in the queue: fib(29) = 514229",
		"consumer: pid " + cons + " received the sentinel after 3 messages (",
		"joined both after ",
		"producer exit status 0, consumer exit status 0",
	}
	at := 0
	for _, s := range want {
		i := strings.Index(text[at:], s)
		if i < 0 {
			t.Fatalf("output lacks %q after offset %d", s, at)
		}
		at += i + len(s)
	}
}

// TestQueueFraming: a message survives the trip, and a frame too long is
// refused before it is read.
func TestQueueFraming(t *testing.T) {
	var b bytes.Buffer
	if _, err := putMessage(&b, message{Seq: 7, N: 9, Stop: true}); err != nil {
		t.Fatal(err)
	}
	m, err := getMessage(&b)
	if err != nil || m.Seq != 7 || m.N != 9 || !m.Stop {
		t.Fatalf("got %+v, %v", m, err)
	}
	if _, err := getMessage(bytes.NewReader([]byte{0xff, 0, 0, 0})); err == nil {
		t.Fatal("a 4 GB frame was accepted")
	}
}

// TestChildBadRole: a child of an unknown role exits with 2.
func TestChildBadRole(t *testing.T) {
	var stderr bytes.Buffer
	if code := runChild("nobody", nil, nil, nil, &stderr); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if code := producer([]string{"x"}, nil, &stderr); code != 2 {
		t.Errorf("producer with bad args: exit code %d, want 2", code)
	}
}

func TestRunQuick(t *testing.T) {
	var out lockedBuffer
	if err := run(context.Background(), &out, quick); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Log("\n" + text)
	n := runtime.GOMAXPROCS(0)
	contains(t, text,
		"1. One process by hand",
		"2. Two processes and a queue",
		"fib(27) = 196418 in worker pid ",
		"results: [196418 196418 196418] ...",
		"speedup ",
		"Cpus_allowed_list ",
		"task: calling os.Exit(3)", // the worker's stderr, forwarded
		"exit status 3",
		`level=WARN msg="procpool: worker crashed" worker=`, // the pool's log record
		"exit_code=3",
		"the pool goes on: fib(20) = 6765",
		"crashes 1, restarts 1, workers alive 2",
	)
	if runtime.GOOS == "linux" {
		// The test binary is multiprocessing.test.
		contains(t, text, `top and ps -o comm show the worker as "multiprocess-w0", ps -o args and htop as "multiprocessing.test [worker 0]"`)
		// The CPU time of the workers, read from /proc, beside each rate.
		if got := len(regexp.MustCompile(`tasks/s, \d+\.\d\d CPUs busy`).FindAllString(text, -1)); got != 3 {
			t.Errorf("%d rates with the CPUs busy, want 3", got)
		}
	}
	// Lesson 3 ran rounds of minTasks tasks for 50 ms; lesson 4 as many
	// per worker, and its per-worker counts leave out the warm-up.
	m := regexp.MustCompile(`(\d+) × fib\(27\) on 1 worker, in rounds of 4 until 50ms had passed: `).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no serial batch in the output")
	}
	k, _ := strconv.Atoi(m[1])
	if k < 4 || k%4 != 0 {
		t.Errorf("serial batch of %d tasks, want a multiple of 4", k)
	}
	contains(t, text,
		fmt.Sprintf("(%d values, in input order)", n*k),
		fmt.Sprintf("%d × fib(27) on %d workers: ", n*k, n),
		fmt.Sprintf("%d × fib(27) on 1 worker again: ", k),
		fmt.Sprintf("over 1 worker (ideal %d): ", n))
	counts := regexp.MustCompile(`worker \d+ \(pid \d+\) ran (\d+) tasks of the batch`).FindAllStringSubmatch(text, -1)
	if len(counts) != n {
		t.Fatalf("%d per-worker counts, want %d", len(counts), n)
	}
	var terms []string
	for _, c := range counts {
		terms = append(terms, c[1])
	}
	contains(t, text, fmt.Sprintf("%s = %d tasks: the measured batch, without the warm-up", strings.Join(terms, " + "), n*k))
}

// TestVerbose: under -v the pools and the hand-started children log their
// debug records to the -v logger.
func TestVerbose(t *testing.T) {
	var out, log lockedBuffer
	cfg := quick
	cfg.logger = debugLogger(&log)
	if err := byHand(context.Background(), &out, cfg); err != nil {
		t.Fatal(err)
	}
	one, err := oneWorker(context.Background(), &out, cfg)
	if one != nil {
		defer one.pool.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := one.pool.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	text := log.String()
	t.Log("\n" + text)
	contains(t, text,
		`level=DEBUG msg="multiprocessing: child started" role=fib pid=`,
		`level=DEBUG msg="multiprocessing: child exited" pid=`,
		`status="exit status 2"`,
		`level=DEBUG msg="procpool: worker spawned" worker=0 pid=`,
		`level=DEBUG msg="procpool: worker stopped" worker=0 pid=`,
	)
}

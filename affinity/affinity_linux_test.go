//go:build linux

package affinity

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// noSuchPID is above any Linux pid_max, so /proc/noSuchPID never exists.
const noSuchPID = 1 << 30

// cpusAllowedList reads the Cpus_allowed_list line of a /proc status file
// directly, without the package's own parser.
func cpusAllowedList(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no Cpus_allowed_list", path)
	return ""
}

// ownThreadList returns the Cpus_allowed_list of the calling thread, which
// the caller must have locked.
func ownThreadList(t testing.TB) string {
	t.Helper()
	return cpusAllowedList(t, fmt.Sprintf("/proc/self/task/%d/status", unix.Gettid()))
}

// threadLists returns the Cpus_allowed_list of every thread of pid, read
// directly from /proc; threads that exit during the scan are left out.
func threadLists(t testing.TB, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	lists := make(map[int]string, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(dir + "/" + e.Name() + "/status")
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				lists[tid] = strings.TrimSpace(v)
			}
		}
	}
	return lists
}

// checkNoNarrowedThreads fails if any thread of this process other than
// except has a mask other than want.
func checkNoNarrowedThreads(t testing.TB, want string, except int) {
	t.Helper()
	for tid, got := range threadLists(t, os.Getpid()) {
		if tid != except && got != want {
			t.Errorf("thread %d has Cpus_allowed_list %q, want %q", tid, got, want)
		}
	}
}

func mustAllowed(t testing.TB) CPUSet {
	t.Helper()
	set, err := Allowed()
	if err != nil {
		t.Fatal(err)
	}
	if len(set) == 0 {
		t.Fatal("Allowed() is empty")
	}
	return set
}

func needTwoCPUs(t *testing.T, set CPUSet) {
	t.Helper()
	if len(set) < 2 {
		t.Skipf("needs 2 allowed CPUs to observe a change; Allowed() = %s", set)
	}
}

// child is the test binary re-executed as a multi-threaded helper process.
type child struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   *bufio.Scanner
	allowed string // what Allowed returned in the child
}

// newChild prepares a helper child; start it with cmd.Start, Start or
// through taskset, then call ready.
func newChild(t *testing.T, prefix ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append(prefix, exe, "-test.run=^$")
	cmd := exec.Command(args[0], args[1:]...)
	// Under -race the child would sleep 1 s at exit (atexit_sleep_ms).
	race := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), helperEnv+"=child", "GORACE="+race)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	t.Cleanup(func() {
		if cmd.Process == nil {
			return
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper child: %v", err)
		}
	})
	return c
}

// ready waits until the child has started its threads and returns its pid.
func (c *child) ready(t *testing.T) int {
	t.Helper()
	for c.lines.Scan() {
		line := c.lines.Text()
		if v, ok := strings.CutPrefix(line, "allowed="); ok {
			c.allowed = v
		}
		if line == "ready" {
			return c.cmd.Process.Pid
		}
	}
	t.Fatalf("helper child ended before it was ready: %v", c.lines.Err())
	return 0
}

// checkChild checks, through /proc, that every thread of the child (at least
// 4: it locks 3 goroutines to threads) has the mask want.
func checkChild(t *testing.T, pid int, want string) {
	t.Helper()
	if got := cpusAllowedList(t, fmt.Sprintf("/proc/%d/status", pid)); got != want {
		t.Errorf("child Cpus_allowed_list = %q, want %q", got, want)
	}
	lists := threadLists(t, pid)
	if len(lists) < 4 {
		t.Errorf("child has %d threads, want at least 4", len(lists))
	}
	for tid, got := range lists {
		if got != want {
			t.Errorf("child thread %d: Cpus_allowed_list = %q, want %q", tid, got, want)
		}
	}
}

func TestAllowed(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	set := mustAllowed(t)
	if got := ownThreadList(t); set.String() != got {
		t.Errorf("Allowed() = %s, thread Cpus_allowed_list = %s", set, got)
	}
	if got := cpusAllowedList(t, "/proc/self/status"); set.String() != got {
		t.Errorf("Allowed() = %s, process Cpus_allowed_list = %s", set, got)
	}
	if p, err := ProcessAllowed(os.Getpid()); err != nil || p.String() != set.String() {
		t.Errorf("ProcessAllowed(self) = %v, %v; want %s", p, err, set)
	}
	if th, err := ThreadAllowed(os.Getpid(), Gettid()); err != nil || th.String() != set.String() {
		t.Errorf("ThreadAllowed(self, tid) = %v, %v; want %s", th, err, set)
	}
}

// TestAllowedUnderTaskset re-executes the test binary under taskset -c CPU
// (CPU is the first allowed one: 0 unless the test itself runs under a
// narrower mask) and checks what the child's Allowed reports against its
// /proc status. Without taskset, Start applies the same mask.
func TestAllowedUnderTaskset(t *testing.T) {
	cpu := mustAllowed(t)[0]
	want := strconv.Itoa(cpu)
	var c *child
	if path, err := exec.LookPath("taskset"); err == nil {
		c = newChild(t, path, "-c", want)
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("taskset not found; applying the mask with Start")
		c = newChild(t)
		if err := Start(c.cmd, CPUSet{cpu}); err != nil {
			t.Fatal(err)
		}
	}
	pid := c.ready(t)
	if c.allowed != want {
		t.Errorf("Allowed() in the child = %q, want %q", c.allowed, want)
	}
	checkChild(t, pid, want)
}

func TestPinThread(t *testing.T) {
	allowed := mustAllowed(t)
	full := allowed.String()
	cpu := allowed[len(allowed)-1]
	pid := os.Getpid()
	done := make(chan struct{})
	go func() {
		defer close(done)
		release, err := PinThread(cpu)
		if err != nil {
			t.Error(err)
			return
		}
		tid := Gettid()
		path := fmt.Sprintf("/proc/self/task/%d/status", tid)
		if got := cpusAllowedList(t, path); got != strconv.Itoa(cpu) {
			t.Errorf("pinned thread Cpus_allowed_list = %q, want %d", got, cpu)
		}
		if got, err := ThreadAllowed(pid, tid); err != nil || got.String() != strconv.Itoa(cpu) {
			t.Errorf("ThreadAllowed of the pinned thread = %v, %v; want %d", got, err, cpu)
		}
		if got, err := Allowed(); err != nil || got.String() != full {
			t.Errorf("Allowed() on a pinned thread = %v, %v; want the process set %s", got, err, full)
		}
		release()
		if got := cpusAllowedList(t, path); got != full {
			t.Errorf("after release the thread Cpus_allowed_list = %q, want %q", got, full)
		}
		release() // idempotent
		if got := cpusAllowedList(t, path); got != full {
			t.Errorf("after a second release the thread Cpus_allowed_list = %q, want %q", got, full)
		}
	}()
	<-done
}

func TestPinThreadNested(t *testing.T) {
	allowed := mustAllowed(t)
	first, last := allowed[0], allowed[len(allowed)-1]
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the caller's own lock must survive the pins
		defer runtime.UnlockOSThread()
		tid := Gettid()
		r1, err := PinThread(first)
		if err != nil {
			t.Error(err)
			return
		}
		r2, err := PinThread(last) // allowed: checked against the unpinned mask
		if err != nil {
			t.Error(err)
			r1()
			return
		}
		if got := ownThreadList(t); got != strconv.Itoa(last) {
			t.Errorf("inner pin: Cpus_allowed_list = %q, want %d", got, last)
		}
		r2()
		if got := ownThreadList(t); got != strconv.Itoa(first) {
			t.Errorf("after inner release: Cpus_allowed_list = %q, want %d", got, first)
		}
		r1()
		if got := ownThreadList(t); got != allowed.String() {
			t.Errorf("after outer release: Cpus_allowed_list = %q, want %s", got, allowed)
		}
		for range 20 { // still locked by the outer LockOSThread
			time.Sleep(100 * time.Microsecond)
			if Gettid() != tid {
				t.Error("the goroutine left its thread: release undid the caller's LockOSThread")
				return
			}
		}
	}()
	<-done
}

func TestPinThreadErrors(t *testing.T) {
	allowed := mustAllowed(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, cpu := range []int{-1, MaxCPU + 1, allowed[len(allowed)-1] + 1} {
		release, err := PinThread(cpu)
		if err == nil {
			release()
			t.Errorf("PinThread(%d) succeeded, want an error", cpu)
			continue
		}
		if !strings.HasPrefix(err.Error(), "affinity: ") {
			t.Errorf("PinThread(%d) error %q lacks the package prefix", cpu, err)
		}
		release() // never nil
		if got := ownThreadList(t); got != allowed.String() {
			t.Errorf("after PinThread(%d) failed, Cpus_allowed_list = %q, want %s", cpu, got, allowed)
		}
	}
	if _, err := PinThread(allowed[len(allowed)-1] + 1); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("PinThread(outside Allowed) = %v, want ErrNotAllowed", err)
	}
}

func TestPinThreadReleaseFromOtherGoroutine(t *testing.T) {
	allowed := mustAllowed(t)
	full := allowed.String()
	releases := make(chan func())
	back := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		release, err := PinThread(allowed[0])
		if err != nil {
			t.Error(err)
			close(releases)
			return
		}
		releases <- release
		<-back
		release()
		if got := ownThreadList(t); got != full {
			t.Errorf("after release: Cpus_allowed_list = %q, want %q", got, full)
		}
	}()
	release, ok := <-releases
	if ok {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Error("release from another goroutine did not panic")
				}
			}()
			release()
		}()
		close(back)
	}
	<-done
}

// TestPinThreadNoLeak checks the known trap: a thread whose mask was narrowed
// must not return to Go's thread pool still narrowed, or later goroutines
// would silently run on one CPU.
func TestPinThreadNoLeak(t *testing.T) {
	allowed := mustAllowed(t)
	full := allowed.String()
	var wg sync.WaitGroup
	for i := range 8 { // pin, work, release, exit: the threads go back to the pool
		wg.Go(func() {
			release, err := PinThread(allowed[i%len(allowed)])
			if err != nil {
				t.Error(err)
				return
			}
			defer release()
			deadline := time.Now().Add(2 * time.Millisecond)
			for time.Now().Before(deadline) {
			}
		})
	}
	wg.Wait()
	checkNoNarrowedThreads(t, full, -1)

	// One goroutine stays pinned; many others run meanwhile and each checks
	// the mask of the thread it lands on.
	cpu := allowed[len(allowed)-1]
	holderTid := make(chan int)
	stop := make(chan struct{})
	holder := make(chan struct{})
	go func() {
		defer close(holder)
		release, err := PinThread(cpu)
		if err != nil {
			t.Error(err)
			close(holderTid)
			return
		}
		defer release()
		holderTid <- Gettid()
		<-stop
	}()
	pinnedTid, ok := <-holderTid
	if !ok {
		<-holder
		return
	}
	var checked atomic.Int64
	for range 200 {
		wg.Go(func() {
			for range 3 {
				runtime.LockOSThread()
				tid := Gettid()
				got := ownThreadList(t)
				runtime.UnlockOSThread()
				if tid == pinnedTid {
					t.Error("a goroutine ran on the pinned thread")
				} else if got != full {
					t.Errorf("goroutine on thread %d sees Cpus_allowed_list %q, want %q", tid, got, full)
				}
				checked.Add(1)
				time.Sleep(50 * time.Microsecond) // park and wake up, maybe on another thread
			}
		})
	}
	wg.Wait()
	lists := threadLists(t, os.Getpid())
	if got := lists[pinnedTid]; got != strconv.Itoa(cpu) {
		t.Errorf("the pinned thread has Cpus_allowed_list %q, want %d", got, cpu)
	}
	checkNoNarrowedThreads(t, full, pinnedTid)
	close(stop)
	<-holder
	checkNoNarrowedThreads(t, full, -1)
	if checked.Load() != 600 {
		t.Errorf("checked %d goroutine placements, want 600", checked.Load())
	}
}

func TestStart(t *testing.T) {
	allowed := mustAllowed(t)
	set := CPUSet{allowed[len(allowed)-1]}
	runtime.LockOSThread() // Start must nest inside the caller's own lock
	defer runtime.UnlockOSThread()
	before := ownThreadList(t)
	c := newChild(t)
	if err := Start(c.cmd, set); err != nil {
		t.Fatal(err)
	}
	if after := ownThreadList(t); after != before {
		t.Errorf("Start left the parent thread with Cpus_allowed_list %q, want %q", after, before)
	}
	pid := c.ready(t)
	if c.allowed != set.String() {
		t.Errorf("Allowed() in the child = %q, want %s", c.allowed, set)
	}
	checkChild(t, pid, set.String())
	if got, err := ProcessAllowed(pid); err != nil || got.String() != set.String() {
		t.Errorf("ProcessAllowed(child) = %v, %v; want %s", got, err, set)
	}
	checkNoNarrowedThreads(t, allowed.String(), -1)
}

func TestStartFromPinnedGoroutine(t *testing.T) {
	allowed := mustAllowed(t)
	first, last := allowed[0], allowed[len(allowed)-1]
	c := newChild(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		release, err := PinThread(first)
		if err != nil {
			t.Error(err)
			return
		}
		defer release()
		if err := Start(c.cmd, CPUSet{last}); err != nil { // allowed: checked against the unpinned mask
			t.Error(err)
			return
		}
		if got := ownThreadList(t); got != strconv.Itoa(first) {
			t.Errorf("after Start the pinned thread has Cpus_allowed_list %q, want %d", got, first)
		}
	}()
	<-done
	if c.cmd.Process == nil {
		return
	}
	checkChild(t, c.ready(t), strconv.Itoa(last))
	checkNoNarrowedThreads(t, allowed.String(), -1)
}

func TestStartErrors(t *testing.T) {
	allowed := mustAllowed(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, set := range []CPUSet{nil, {-1}, {MaxCPU + 1}, {allowed[len(allowed)-1] + 1}} {
		cmd := exec.Command("true")
		if err := Start(cmd, set); err == nil || !strings.HasPrefix(err.Error(), "affinity: ") {
			t.Errorf("Start(true, %#v) = %v, want an affinity error", set, err)
		}
		if cmd.Process != nil {
			t.Errorf("Start(true, %#v) started the command", set)
			_ = cmd.Wait()
		}
	}
	if err := Start(exec.Command("true"), CPUSet{allowed[len(allowed)-1] + 1}); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("Start outside Allowed = %v, want ErrNotAllowed", err)
	}
	// A command that fails to start: the error is cmd.Start's, the mask is restored.
	if err := Start(exec.Command("/nonexistent/affinity-test"), allowed[:1]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Start(nonexistent) = %v, want fs.ErrNotExist", err)
	}
	if got := ownThreadList(t); got != allowed.String() {
		t.Errorf("after failed Starts the thread has Cpus_allowed_list %q, want %s", got, allowed)
	}
}

func TestSetProcess(t *testing.T) {
	allowed := mustAllowed(t)
	needTwoCPUs(t, allowed)
	c := newChild(t)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c.ready(t)
	checkChild(t, pid, allowed.String())
	for _, set := range []CPUSet{{allowed[0]}, {allowed[len(allowed)-1]}, allowed} {
		if err := SetProcess(pid, set); err != nil {
			t.Fatal(err)
		}
		checkChild(t, pid, set.String())
		if got, err := ProcessAllowed(pid); err != nil || got.String() != set.String() {
			t.Errorf("ProcessAllowed(child) = %v, %v; want %s", got, err, set)
		}
	}
}

func TestSetProcessErrors(t *testing.T) {
	allowed := mustAllowed(t)
	if err := SetProcess(noSuchPID, allowed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SetProcess(no such pid) = %v, want fs.ErrNotExist", err)
	}
	for _, pid := range []int{0, -1} {
		if err := SetProcess(pid, allowed); err == nil {
			t.Errorf("SetProcess(%d) succeeded", pid)
		}
	}
	if err := SetProcess(os.Getpid(), nil); err == nil {
		t.Error("SetProcess(self, empty set) succeeded")
	}
	checkNoNarrowedThreads(t, allowed.String(), -1)
}

func TestLastCPU(t *testing.T) {
	allowed := mustAllowed(t)
	pid := os.Getpid()
	for _, cpu := range allowed[:min(len(allowed), 4)] {
		tids := make(chan int)
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			release, err := PinThread(cpu)
			if err != nil {
				t.Error(err)
				close(tids)
				return
			}
			defer release()
			tid := Gettid()
			if got, err := LastCPUThread(pid, tid); err != nil || got != cpu {
				t.Errorf("LastCPUThread of the running pinned thread = %d, %v; want %d", got, err, cpu)
			}
			tids <- tid
			for !stop.Load() { // busy
			}
		})
		if tid, ok := <-tids; ok {
			time.Sleep(5 * time.Millisecond)
			if got, err := LastCPUThread(pid, tid); err != nil || got != cpu {
				t.Errorf("LastCPUThread of a busy thread pinned to %d = %d, %v", cpu, got, err)
			}
			stop.Store(true)
		}
		wg.Wait()
	}
	if got, err := LastCPU(pid); err != nil || got < 0 {
		t.Errorf("LastCPU(self) = %d, %v", got, err)
	}
	if _, err := LastCPU(noSuchPID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LastCPU(no such pid) = %v, want fs.ErrNotExist", err)
	}
	if _, err := LastCPUThread(pid, noSuchPID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LastCPUThread(self, no such tid) = %v, want fs.ErrNotExist", err)
	}
	if _, err := ProcessAllowed(noSuchPID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ProcessAllowed(no such pid) = %v, want fs.ErrNotExist", err)
	}
	if _, err := ThreadAllowed(pid, noSuchPID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ThreadAllowed(self, no such tid) = %v, want fs.ErrNotExist", err)
	}
}

// TestLastCPUParenthesisedName gives a thread a command name with spaces
// and parentheses, as /proc shows it in field 2 of stat.
func TestLastCPUParenthesisedName(t *testing.T) {
	allowed := mustAllowed(t)
	cpu := allowed[len(allowed)-1]
	const name = "a) (b c) d"
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the renamed thread ends with this goroutine
		release, err := PinThread(cpu)
		if err != nil {
			t.Error(err)
			return
		}
		defer release()
		tid := Gettid()
		if err := os.WriteFile(fmt.Sprintf("/proc/self/task/%d/comm", tid), []byte(name), 0); err != nil {
			t.Error(err)
			return
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
		if err != nil {
			t.Error(err)
			return
		}
		if !strings.Contains(string(stat), "("+name+")") {
			t.Errorf("stat %q does not show the name %q", stat, name)
		}
		if got, err := LastCPUThread(os.Getpid(), tid); err != nil || got != cpu {
			t.Errorf("LastCPUThread = %d, %v; want %d", got, err, cpu)
		}
	}()
	<-done
}

func TestParseStat(t *testing.T) {
	fields := make([]string, 52-2) // fields 3..52
	for i := range fields {
		fields[i] = strconv.Itoa(1000 + i)
	}
	fields[0] = "R"
	fields[39-3] = "7"
	rest := strings.Join(fields, " ") + "\n"
	for _, comm := range []string{"sleep", "a b", "a) (b", ")", "((", ") 1 2 3"} {
		line := "4242 (" + comm + ") " + rest
		if got, err := parseStat([]byte(line)); err != nil || got != 7 {
			t.Errorf("parseStat(comm %q) = %d, %v; want 7", comm, got, err)
		}
	}
	for _, bad := range []string{"", "4242 sleep R 1", "4242 (sleep) R 1 2 3", "4242 (x) " + strings.Replace(rest, " 7 ", " x ", 1)} {
		if got, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) = %d, want an error", bad, got)
		}
	}
}

func TestParseStatus(t *testing.T) {
	set, err := parseStatus([]byte("Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed_list:\t0\n"))
	if err != nil || set.String() != "0-1" {
		t.Errorf("parseStatus = %v, %v; want 0-1", set, err)
	}
	if _, err := parseStatus([]byte("Name:\tx\n")); err == nil {
		t.Error("parseStatus without Cpus_allowed_list succeeded")
	}
}

func TestGettid(t *testing.T) {
	tids := make(chan int, 2)
	hold := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- Gettid()
			<-hold
		})
	}
	a, b := <-tids, <-tids
	close(hold)
	wg.Wait()
	if a == b || a <= 0 || b <= 0 {
		t.Fatalf("two locked goroutines report thread ids %d and %d", a, b)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", a)); err != nil {
		t.Errorf("thread %d is not a thread of this process: %v", a, err)
	}
}

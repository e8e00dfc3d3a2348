package procpool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/procpool"
)

const helperEnv = "PROCPOOL_TEST_HELPER"

// helperParent is the test binary run as a parent process that TestParentKilled
// kills: it starts a pool, keeps both workers busy in a long task, prints
// their PIDs and waits to be killed.
func helperParent() int {
	p, err := procpool.New(procpool.WithWorkers(2))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	for range 2 {
		go sleepTask.Call(context.Background(), p, time.Minute)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st := p.Stats()
		if st.InFlight == 2 {
			var pids []string
			for _, w := range st.PerWorker {
				pids = append(pids, strconv.Itoa(w.PID))
			}
			fmt.Println("pids", strings.Join(pids, " "))
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Wait to be killed; should the test go away instead, end anyway (the
	// workers die with this process).
	time.Sleep(time.Minute)
	return 1
}

// procStat returns the state letter and parent PID of pid from /proc.
func procStat(pid int) (state byte, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+4 > len(s) {
		return 0, 0, fmt.Errorf("bad stat %q", s)
	}
	f := strings.Fields(s[i+2:])
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err
}

// children lists this process's child processes with their states.
func children() []string {
	me := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if state, ppid, err := procStat(pid); err == nil && ppid == me {
			out = append(out, fmt.Sprintf("pid %d state %c", pid, state))
		}
	}
	return out
}

// TestNoZombiesAfterClose: every worker, including crashed and recycled
// ones, is waited for.
func TestNoZombiesAfterClose(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2), procpool.WithMaxTasksPerWorker(3), procpool.WithOutput(discard{}))
	ctx := context.Background()
	for i := range 10 {
		if _, err := double.Call(ctx, p, i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exitTask.Call(ctx, p, 3); !errors.Is(err, procpool.ErrWorkerCrashed) {
		t.Fatalf("exit task: %v", err)
	}
	waitAlive(t, p, 2)
	// A worker past its MaxTasksPerWorker may be between its exit and its
	// successor's start for a moment: Alive counts the slot, /proc does
	// not yet show the new process.
	for deadline := time.Now().Add(5 * time.Second); len(children()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("with 2 workers running, children = %v", children())
		}
	}
	p.Close()
	if kids := children(); len(kids) != 0 {
		t.Fatalf("after Close, children left: %v", kids)
	}
}

// TestParentKilled: a parent killed with SIGKILL takes its workers with it,
// even while they run a task (Pdeathsig), and they are not left as orphans.
func TestParentKilled(t *testing.T) {
	// Orphans are re-parented to this process, so it can see them die and
	// reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	t.Cleanup(func() {
		// On failure, leave nothing behind: the helper, and any worker
		// still there (re-parented to this process).
		cmd.Process.Kill()
		cmd.Wait()
		for _, pid := range pids {
			if _, ppid, err := procStat(pid); err == nil && ppid == os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
				unix.Wait4(pid, nil, 0, nil)
			}
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "pids ") {
		t.Fatalf("helper said %q, %v", line, err)
	}
	for _, f := range strings.Fields(line)[1:] {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			t.Fatalf("helper said %q", line)
		}
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		if _, ppid, err := procStat(pid); err != nil || ppid != cmd.Process.Pid {
			t.Fatalf("worker %d: parent %d, %v; want %d", pid, ppid, err, cmd.Process.Pid)
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// Each worker must be gone within seconds, though it was running a
	// one-minute task: reaped here (re-parented to this subreaper) with
	// SIGKILL from Pdeathsig, or, when the dying helper still had a thread
	// waiting for it, reaped by the helper.
	for _, pid := range slices.Clone(pids) {
		var ws unix.WaitStatus
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if got == pid {
				pids = slices.DeleteFunc(pids, func(p int) bool { return p == pid }) // reaped
				if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Errorf("worker %d ended with %v, want SIGKILL from Pdeathsig", pid, ws)
				}
				break
			}
			if _, serr := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, syscall.ECHILD) && errors.Is(serr, os.ErrNotExist) {
				break // reaped by the helper before it died
			}
			if time.Now().After(deadline) {
				state, ppid, serr := procStat(pid)
				t.Fatalf("worker %d still there (state %c, parent %d, %v): %v", pid, state, ppid, serr, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("worker %d still in /proc", pid)
		}
	}
}

var allowedTask = procpool.Register("test.allowed", func(context.Context, int) (string, error) {
	// Every thread of the worker must carry the mask, not just the main one.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return "", err
	}
	var sets []string
	for _, tk := range tasks {
		tid, _ := strconv.Atoi(tk.Name())
		set, err := affinity.ThreadAllowed(os.Getpid(), tid)
		if err != nil {
			return "", err
		}
		sets = append(sets, set.String())
	}
	return strings.Join(sets, ","), nil
})

// TestPinned: worker i runs only on the i-th allowed CPU, all its threads.
func TestPinned(t *testing.T) {
	allowed, err := affinity.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t, procpool.WithWorkers(len(allowed)), procpool.WithPinnedWorkers())
	ctx := context.Background()
	// Keep every worker busy at once so each answers the next call.
	for range 3 {
		if _, err := allowedTask.Map(ctx, p, make([]int, 4*len(allowed)), procpool.WithChunkSize(1)); err != nil {
			t.Fatal(err)
		}
	}
	st := p.Stats()
	for i, w := range st.PerWorker {
		want := affinity.CPUSet{allowed[i]}
		if w.PinnedCPU != allowed[i] {
			t.Errorf("worker %d: PinnedCPU %d, want %d", i, w.PinnedCPU, allowed[i])
		}
		got, err := affinity.ProcessAllowed(w.PID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("worker %d (pid %d): Cpus_allowed_list %v, %v; want %v", i, w.PID, got, err, want)
		}
		if w.CPU != allowed[i] {
			t.Errorf("worker %d last ran on CPU %d, want %d", i, w.CPU, allowed[i])
		}
	}
	sets, err := allowedTask.Map(ctx, p, make([]int, 2*len(allowed)), procpool.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		for _, one := range strings.Split(s, ",") {
			if strings.ContainsAny(one, "-,") || one == "" {
				t.Errorf("a worker thread may run on %q, want one CPU", one)
			}
		}
	}
}

// TestResizePinned: workers added by Resize are pinned like New's, worker i
// to the (i mod n)-th allowed CPU.
func TestResizePinned(t *testing.T) {
	allowed, err := affinity.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t, procpool.WithWorkers(1), procpool.WithPinnedWorkers())
	if err := p.Resize(len(allowed) + 1); err != nil {
		t.Fatal(err)
	}
	for i, w := range p.Stats().PerWorker {
		want := allowed[i%len(allowed)]
		got, err := affinity.ProcessAllowed(w.PID)
		if w.PinnedCPU != want || err != nil || !reflect.DeepEqual(got, affinity.CPUSet{want}) {
			t.Errorf("worker %d (pid %d): PinnedCPU %d, allowed %v (%v); want CPU %d", i, w.PID, w.PinnedCPU, got, err, want)
		}
	}
}

// TestKilledDuringMap: a worker killed with SIGKILL in the middle of a run
// fails only its own requests; with WithRetry they are sent again and all
// complete.
func TestKilledDuringMap(t *testing.T) {
	ctx := context.Background()
	in := make([]time.Duration, 40)
	for i := range in {
		in[i] = 10 * time.Millisecond
	}
	killAfter := func(p *procpool.Pool, seen *int) {
		*seen++
		if *seen == 5 {
			killWorker(t, p, 0)
		}
	}

	t.Run("stream", func(t *testing.T) {
		p := newPool(t, procpool.WithWorkers(2))
		victim := p.Stats().PerWorker[0].PID
		seen, failed := 0, 0
		for r, err := range sleepTask.Stream(ctx, p, seq(in), procpool.WithChunkSize(1)) {
			killAfter(p, &seen)
			if r.Index < 0 {
				t.Fatal(err)
			}
			if err != nil {
				failed++
				var ce *procpool.CrashError
				if !errors.As(err, &ce) || ce.PID != victim || ce.State == nil || ce.State.String() != "signal: killed" {
					t.Errorf("input %d: %v, want a crash of pid %d by SIGKILL", r.Index, err, victim)
				}
				continue
			}
		}
		if seen != len(in) {
			t.Fatalf("%d results for %d inputs", seen, len(in))
		}
		if failed < 1 || failed > 2 {
			t.Errorf("%d inputs failed; want the 1 or 2 in flight on the killed worker", failed)
		}
		st := waitAlive(t, p, 2)
		if st.Crashes != 1 || st.Restarts != 1 || st.Failed != uint64(failed) || st.Completed != uint64(len(in)-failed) {
			t.Errorf("stats %+v", st)
		}
		if st.PerWorker[0].PID == victim {
			t.Errorf("slot 0 still has pid %d", victim)
		}
	})

	t.Run("map with retry", func(t *testing.T) {
		p := newPool(t, procpool.WithWorkers(2), procpool.WithRetry(1))
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(35 * time.Millisecond)
			killWorker(t, p, 0)
		}()
		out, err := sleepTask.Map(ctx, p, in, procpool.WithChunkSize(1))
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(in) {
			t.Fatalf("%d outputs", len(out))
		}
		if st := p.Stats(); st.Crashes != 1 || st.Failed != 0 || st.Completed != uint64(len(in)) {
			t.Errorf("stats %+v", st)
		}
	})
}

// killWorker kills worker i of p with SIGKILL.
func killWorker(t *testing.T, p *procpool.Pool, i int) int {
	pid := p.Stats().PerWorker[i].PID
	if pid <= 1 {
		t.Errorf("worker %d has no process", i)
		return pid
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill %d: %v", pid, err)
	}
	return pid
}

const isLinux = true

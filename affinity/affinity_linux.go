//go:build linux

package affinity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// maskBits is the size in bits of a mask buffer the kernel has accepted for
// sched_getaffinity (it must cover the kernel's nr_cpu_ids); 0 until the
// first call.
var maskBits atomic.Int64

// wordBits is the number of CPUs per word of a unix.CPUSetDynamic.
var wordBits = 64 / len(unix.NewCPUSet(64))

// threadMask returns the affinity mask of thread tid (0: the calling
// thread), growing the buffer until the kernel accepts its size.
func threadMask(tid int) (unix.CPUSetDynamic, error) {
	n := int(maskBits.Load())
	if n == 0 {
		n = 1024
	}
	for {
		m := unix.NewCPUSet(n)
		err := unix.SchedGetaffinityDynamic(tid, m)
		if err == nil {
			maskBits.Store(int64(n))
			return m, nil
		}
		if err != unix.EINVAL || n > MaxCPU {
			return nil, err
		}
		n *= 2
	}
}

// setThreadMask sets the affinity mask of thread tid (0: the calling thread).
func setThreadMask(tid int, m unix.CPUSetDynamic) error {
	return unix.SchedSetaffinityDynamic(tid, m)
}

// maskOf converts a non-empty set of valid CPU numbers to a kernel mask.
func maskOf(set CPUSet) (unix.CPUSetDynamic, error) {
	if len(set) == 0 {
		return nil, errors.New("affinity: empty CPU set")
	}
	top := 0
	for _, cpu := range set {
		if cpu < 0 || cpu > MaxCPU {
			return nil, fmt.Errorf("affinity: CPU %d out of range [0, %d]", cpu, MaxCPU)
		}
		top = max(top, cpu)
	}
	m := unix.NewCPUSet(top + 1)
	for _, cpu := range set {
		m.Set(cpu)
	}
	return m, nil
}

// setOf converts a kernel mask to a CPUSet.
func setOf(m unix.CPUSetDynamic) CPUSet {
	set := make(CPUSet, 0, m.Count())
	for i := range m {
		if m[i] == 0 {
			continue
		}
		for cpu := i * wordBits; cpu < (i+1)*wordBits; cpu++ {
			if m.IsSet(cpu) {
				set = append(set, cpu)
			}
		}
	}
	return set
}

// pinned records, by thread id, the mask each thread had before its
// outermost PinThread, so that Allowed and nested pins called on a pinned
// thread see the process's set rather than the single pinned CPU.
var pinned struct {
	sync.Mutex
	threads map[int]*pinState
}

type pinState struct {
	depth int
	outer unix.CPUSetDynamic
}

// outerMask returns the mask thread tid had before it was pinned, or nil if
// it is not pinned.
func outerMask(tid int) unix.CPUSetDynamic {
	pinned.Lock()
	defer pinned.Unlock()
	if st := pinned.threads[tid]; st != nil {
		return st.outer
	}
	return nil
}

func pushPin(tid int, old unix.CPUSetDynamic) {
	pinned.Lock()
	defer pinned.Unlock()
	if pinned.threads == nil {
		pinned.threads = make(map[int]*pinState)
	}
	st := pinned.threads[tid]
	if st == nil {
		st = &pinState{outer: old}
		pinned.threads[tid] = st
	}
	st.depth++
}

func popPin(tid int) {
	pinned.Lock()
	defer pinned.Unlock()
	if st := pinned.threads[tid]; st != nil {
		if st.depth--; st.depth == 0 {
			delete(pinned.threads, tid)
		}
	}
}

// allowedMask returns the mask of the calling, locked thread, or the mask it
// had before PinThread if it is pinned.
func allowedMask(tid int) (unix.CPUSetDynamic, error) {
	if m := outerMask(tid); m != nil {
		return m, nil
	}
	return threadMask(0)
}

// Allowed returns the CPUs this process may run on: the sched_getaffinity
// mask of the calling thread, which reflects taskset, cgroup cpusets and
// [SetProcess], unlike runtime.NumCPU (fixed at start-up). Called from a
// goroutine inside [PinThread], it reports the mask the thread had before
// it was pinned. It makes two system calls and does not block.
func Allowed() (CPUSet, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m, err := allowedMask(unix.Gettid())
	if err != nil {
		return nil, fmt.Errorf("affinity: sched_getaffinity: %w", err)
	}
	return setOf(m), nil
}

func noRelease() {}

// PinThread locks the calling goroutine to its OS thread
// (runtime.LockOSThread) and limits that thread to cpu, which must be in
// [Allowed] (else the error wraps [ErrNotAllowed]). Calls nest: the goroutine
// may already be locked or pinned.
//
// release restores the thread's previous mask and only then calls
// runtime.UnlockOSThread, so the narrowed mask never reaches another
// goroutine scheduled on that thread later. release must be called by the
// same goroutine (it panics otherwise, as the lock belongs to that goroutine);
// calling it again is a no-op. If the previous mask cannot be restored (a
// cgroup cpuset shrank meanwhile), release leaves the goroutine locked: the
// Go runtime then discards the thread when the goroutine exits.
//
// release is never nil, so `defer release()` is safe even after an error,
// in which case the goroutine is left as it was. PinThread costs three
// system calls and does not block.
func PinThread(cpu int) (release func(), err error) {
	if cpu < 0 || cpu > MaxCPU {
		return noRelease, fmt.Errorf("affinity: pin thread: CPU %d out of range [0, %d]", cpu, MaxCPU)
	}
	runtime.LockOSThread()
	tid := unix.Gettid()
	old, err := threadMask(0)
	if err != nil {
		runtime.UnlockOSThread()
		return noRelease, fmt.Errorf("affinity: pin thread to CPU %d: sched_getaffinity: %w", cpu, err)
	}
	allowed := old
	if outer := outerMask(tid); outer != nil {
		allowed = outer
	}
	if !allowed.IsSet(cpu) {
		runtime.UnlockOSThread()
		return noRelease, fmt.Errorf("affinity: pin thread to CPU %d: %w %s", cpu, ErrNotAllowed, setOf(allowed))
	}
	m := unix.NewCPUSet(cpu + 1)
	m.Set(cpu)
	if err := setThreadMask(0, m); err != nil {
		runtime.UnlockOSThread()
		return noRelease, fmt.Errorf("affinity: pin thread to CPU %d: sched_setaffinity: %w", cpu, err)
	}
	pushPin(tid, old)
	var released atomic.Bool
	return func() {
		if released.Load() {
			return
		}
		if unix.Gettid() != tid {
			panic("affinity: PinThread release called from another goroutine")
		}
		if !released.CompareAndSwap(false, true) {
			return
		}
		popPin(tid)
		if setThreadMask(0, old) != nil {
			return // stay locked: the narrowed thread dies with the goroutine
		}
		runtime.UnlockOSThread()
	}, nil
}

// Start starts cmd (cmd.Start) so that the child and every thread it creates
// may run only on the CPUs of set, which must be in [Allowed] (else the error
// wraps [ErrNotAllowed] and cmd is not started). It locks the calling
// goroutine to its thread, sets that thread's mask to set, starts the child
// (which inherits the mask at fork), restores the previous mask and unlocks.
// It nests with a caller that has locked its thread or called [PinThread]
// already. It blocks as long as cmd.Start does. If the previous mask cannot
// be restored (a cgroup cpuset shrank meanwhile), the goroutine stays locked
// so that no other goroutine inherits the child's mask.
func Start(cmd *exec.Cmd, set CPUSet) error {
	m, err := maskOf(set)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	old, err := threadMask(0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("affinity: start: sched_getaffinity: %w", err)
	}
	allowed := old
	if outer := outerMask(unix.Gettid()); outer != nil {
		allowed = outer
	}
	for _, cpu := range set {
		if !allowed.IsSet(cpu) {
			runtime.UnlockOSThread()
			return fmt.Errorf("affinity: start on CPUs %s: %w %s", set, ErrNotAllowed, setOf(allowed))
		}
	}
	if err := setThreadMask(0, m); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("affinity: start on CPUs %s: sched_setaffinity: %w", set, err)
	}
	startErr := cmd.Start()
	if setThreadMask(0, old) != nil {
		return startErr // stay locked: the narrowed thread dies with the goroutine
	}
	runtime.UnlockOSThread()
	return startErr
}

// SetProcess limits every thread of the running process pid (each entry of
// /proc/PID/task) to the CPUs of set, like taskset -a -p. It repeats the pass
// while it finds threads it has not set yet, so threads created meanwhile
// are covered; threads that exit meanwhile are skipped. The kernel rejects a
// set outside the process's cgroup cpuset; other users' processes need
// CAP_SYS_NICE. It stops at the first error, which wraps the system call's
// error (fs.ErrNotExist when pid does not exist). The cost is one system
// call per thread plus one directory read per pass.
func SetProcess(pid int, set CPUSet) error {
	m, err := maskOf(set)
	if err != nil {
		return err
	}
	if pid <= 0 {
		return fmt.Errorf("affinity: set process: invalid pid %d", pid)
	}
	done := make(map[int]bool)
	for pass := 0; pass < 16; pass++ {
		tids, err := tasks(pid)
		if err != nil {
			return fmt.Errorf("affinity: set process %d: %w", pid, err)
		}
		fresh := false
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh = true
			done[tid] = true
			if err := setThreadMask(tid, m); err != nil && err != unix.ESRCH {
				return fmt.Errorf("affinity: set thread %d of process %d to CPUs %s: %w", tid, pid, set, err)
			}
		}
		if !fresh {
			break
		}
	}
	return nil
}

// tasks lists the thread ids of process pid.
func tasks(pid int) ([]int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// ProcessAllowed returns the Cpus_allowed_list of /proc/PID/status: the mask
// of the process's main thread. It reads one small file; the error wraps
// fs.ErrNotExist when pid does not exist.
func ProcessAllowed(pid int) (CPUSet, error) {
	return statusCPUs(fmt.Sprintf("/proc/%d/status", pid))
}

// ThreadAllowed returns the Cpus_allowed_list of /proc/PID/task/TID/status:
// the mask of one thread. It reads one small file.
func ThreadAllowed(pid, tid int) (CPUSet, error) {
	return statusCPUs(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
}

// LastCPU returns the CPU the main thread of process pid last ran on (field
// 39 of /proc/PID/stat). For a running thread that is the CPU it runs on.
func LastCPU(pid int) (int, error) {
	return statCPU(fmt.Sprintf("/proc/%d/stat", pid))
}

// LastCPUThread returns the CPU thread tid of process pid last ran on (field
// 39 of /proc/PID/task/TID/stat).
func LastCPUThread(pid, tid int) (int, error) {
	return statCPU(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
}

// Gettid returns the id of the calling OS thread. Unless the goroutine is
// locked (runtime.LockOSThread, [PinThread]) it may run on another thread by
// the time the result is used.
func Gettid() int {
	return unix.Gettid()
}

func statusCPUs(path string) (CPUSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("affinity: %w", err)
	}
	set, err := parseStatus(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return set, nil
}

// parseStatus returns the Cpus_allowed_list of a /proc status file.
func parseStatus(data []byte) (CPUSet, error) {
	const key = "Cpus_allowed_list:"
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			return ParseCPUSet(string(rest))
		}
	}
	return nil, errors.New("affinity: no " + key + " line")
}

func statCPU(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return -1, fmt.Errorf("affinity: %w", err)
	}
	cpu, err := parseStat(data)
	if err != nil {
		return -1, fmt.Errorf("%w (in %s)", err, path)
	}
	return cpu, nil
}

// parseStat returns field 39 (processor) of a /proc stat line. Field 2, the
// command name in parentheses, may itself contain spaces and parentheses,
// so fields are counted from the last ')'.
func parseStat(data []byte) (int, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return -1, errors.New("affinity: malformed stat line: no ')'")
	}
	fields := bytes.Fields(data[i+1:])
	const index = 39 - 3 // fields[0] is field 3 (state)
	if len(fields) <= index {
		return -1, fmt.Errorf("affinity: malformed stat line: %d fields after the command name", len(fields))
	}
	cpu, err := strconv.Atoi(string(fields[index]))
	if err != nil || cpu < 0 {
		return -1, fmt.Errorf("affinity: malformed stat line: processor field %q", fields[index])
	}
	return cpu, nil
}

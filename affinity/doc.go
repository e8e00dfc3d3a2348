// Package affinity tells which CPUs this process may use and pins threads and
// processes to them.
//
// [Allowed] reads the scheduler's affinity mask, so it honours taskset and
// cgroup cpusets, unlike runtime.NumCPU. [PinThread] locks the calling
// goroutine to its OS thread and limits that thread to one CPU; [Start]
// starts a child process limited to a set of CPUs; [SetProcess] changes
// every thread of a running process; [LastCPU] and [LastCPUThread] report
// where a process or thread last ran. [CPUSet] is the Linux list format
// ("0-3,6") as a sorted slice.
//
//	cpus, err := affinity.Allowed()
//	if err != nil {
//		return err // ErrUnsupported outside Linux
//	}
//	var wg sync.WaitGroup
//	for i, cpu := range cpus {
//		wg.Go(func() {
//			release, err := affinity.PinThread(cpu)
//			defer release() // restores the thread's mask, then unlocks it
//			if err == nil {
//				work(i) // runs only on cpu, on a thread of its own
//			}
//		})
//	}
//	wg.Wait()
//
// # When pinning helps, and when it hurts
//
// Pinning pays when each worker keeps a cache-hot working set per core (a
// shard, a ring buffer, a lookup table close to L1/L2 size) that a migration
// would make cold; when cores are dedicated to the program, so nothing else
// competes for them; when noisy neighbours should be kept off the cores of a
// latency-critical worker (pin them, and the neighbours, to disjoint sets);
// and on NUMA machines, where a worker that stays on one node keeps its
// memory local.
//
// It hurts when there are more pinned workers than CPUs, or other load
// lands on a pinned CPU: the OS scheduler can no longer move the waiting
// work to an idle core, so one busy CPU stalls its worker while another sits
// idle. A pinned thread also takes Go's own scheduler out of the picture:
// only the locked goroutine runs on it. Conversely, Go moves an unlocked
// goroutine between threads at will, so pinning a thread achieves nothing
// unless the goroutine is locked to it, which PinThread does.
//
// BenchmarkPinning measures both sides on the machine at hand. Linux rarely
// migrates a busy thread without cause (unpinned workers are typically found
// on a new CPU in about one sample in a hundred), so there is little for
// pinning to save; meanwhile a pinned worker that shares its CPU with other
// load cannot move away, so on a busy machine unpinned workers often win.
// Measure before pinning.
//
// # Platforms and errors
//
// Linux is implemented with golang.org/x/sys/unix and /proc. On every other
// system the package compiles, [CPUSet] and [ParseCPUSet] work, and every
// other function returns [ErrUnsupported]. Errors start with "affinity: "
// and wrap the underlying error (unix.EINVAL, fs.ErrNotExist, ...). The
// package never panics, except when a PinThread release function is called
// from a goroutine other than the one that pinned, a programming error.
package affinity

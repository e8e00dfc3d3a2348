package monitor

import (
	"time"

	"github.com/corework/corework/affinity"
)

// Snapshot is one sample of the machine and of the watched processes, as
// returned by [Sampler.Sample]. Usage figures are ratios from 0 to 1 and
// cover Window, the span between two readings of the counters.
type Snapshot struct {
	Time   time.Time     // when the counters were read
	Window time.Duration // the span the usage ratios cover
	CPU    float64       // busy share of all CPUs together, 0 to 1
	Cores  []Core        // one per logical CPU, in the order the OS lists them
	Memory Memory
	Load   Load // zero on Windows, which has no load average
	// Procs holds this process first (unless WithSelf(false)), then its
	// child processes by PID (Linux, unless WithChildren(false)), then the
	// asked PIDs.
	Procs []Process
}

// Core is the usage of one logical CPU.
type Core struct {
	CPU   int      // CPU number, as in cpu0, cpu1, ...
	Usage float64  // busy share over the window, 0 to 1
	Times CPUTimes // cumulative times since boot
}

// CPUTimes holds the cumulative seconds a CPU has spent in each mode since
// boot, as the kernel counts them (in ticks of usually 10 ms). Guest time is
// already part of User and Nice on Linux and is not listed apart.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal float64
}

// Total returns the sum of every mode.
func (t CPUTimes) Total() float64 {
	return t.User + t.Nice + t.System + t.Idle + t.IOWait + t.IRQ + t.SoftIRQ + t.Steal
}

// Busy returns the time spent neither idle nor waiting for I/O.
func (t CPUTimes) Busy() float64 { return t.Total() - t.Idle - t.IOWait }

// Memory is the system's memory in bytes. Used is Total minus Available,
// the memory programs cannot get back without swapping; UsedRatio is
// Used/Total, the figure `free` and most dashboards call "memory usage".
type Memory struct {
	Total, Used, Available uint64
	UsedRatio              float64
}

// Load holds the 1, 5 and 15 minute load averages: the mean number of
// threads running or waiting to run (on Linux, also those in uninterruptible
// sleep).
type Load struct {
	Load1, Load5, Load15 float64
}

// Process is one watched process.
type Process struct {
	PID        int
	Name       string
	CPU        float64 // CPU usage over the window; 1 is one CPU busy, more with several threads
	CPUSeconds float64 // cumulative user plus system CPU time
	RSS        uint64  // resident memory in bytes
	// LastCPU is the CPU the process's main thread last ran on, -1 where
	// the OS does not tell (every OS but Linux).
	LastCPU int
	// Allowed is the set of CPUs the main thread may run on (its affinity
	// mask), nil where the OS does not tell.
	Allowed affinity.CPUSet
	// Threads holds one row per thread, by thread id, when the Sampler was
	// made with WithThreads; nil otherwise.
	Threads []Thread
}

// Thread is one thread of a watched process (see WithThreads).
type Thread struct {
	TID        int
	CPU        float64 // CPU usage over the window; at most 1
	CPUSeconds float64 // cumulative user plus system CPU time
	LastCPU    int     // the CPU the thread last ran on
}

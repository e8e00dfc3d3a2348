//go:build !linux

package affinity

import "os/exec"

// Allowed returns the CPUs this process may run on. This system has no
// implementation: it returns ErrUnsupported.
func Allowed() (CPUSet, error) { return nil, ErrUnsupported }

// PinThread locks the goroutine to its thread and limits the thread to cpu.
// This system has no implementation: it returns a no-op release and
// ErrUnsupported, and leaves the goroutine unlocked.
func PinThread(cpu int) (release func(), err error) { return func() {}, ErrUnsupported }

// Start starts cmd limited to set. This system has no implementation: it
// returns ErrUnsupported without starting cmd.
func Start(cmd *exec.Cmd, set CPUSet) error { return ErrUnsupported }

// SetProcess limits every thread of process pid to set. This system has no
// implementation: it returns ErrUnsupported.
func SetProcess(pid int, set CPUSet) error { return ErrUnsupported }

// ProcessAllowed returns the CPUs process pid may run on. This system has no
// implementation: it returns ErrUnsupported.
func ProcessAllowed(pid int) (CPUSet, error) { return nil, ErrUnsupported }

// ThreadAllowed returns the CPUs thread tid of process pid may run on. This
// system has no implementation: it returns ErrUnsupported.
func ThreadAllowed(pid, tid int) (CPUSet, error) { return nil, ErrUnsupported }

// LastCPU returns the CPU process pid last ran on. This system has no
// implementation: it returns -1 and ErrUnsupported.
func LastCPU(pid int) (int, error) { return -1, ErrUnsupported }

// LastCPUThread returns the CPU thread tid of process pid last ran on. This
// system has no implementation: it returns -1 and ErrUnsupported.
func LastCPUThread(pid, tid int) (int, error) { return -1, ErrUnsupported }

// Gettid returns the id of the calling OS thread; 0 on this system.
func Gettid() int { return 0 }

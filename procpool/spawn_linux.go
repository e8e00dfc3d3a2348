package procpool

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// executable is the binary workers run: /proc/self/exe names this very
// binary even if its file was replaced or deleted since it started.
func executable() (string, error) { return "/proc/self/exe", nil }

// pipe returns a close-on-exec pipe whose parent end (the read end if
// parentReads, else the write end) is non-blocking, so the parent's
// goroutines wait in the netpoller without holding a thread and a P, and
// whose child end is blocking: the worker serves from one goroutine, whose
// thread simply sleeps in read(2).
func pipe(parentReads bool) (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("procpool: pipe: %w", err)
	}
	parent := fds[1]
	if parentReads {
		parent = fds[0]
	}
	if err := unix.SetNonblock(parent, true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("procpool: pipe: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "procpool-pipe-r"), os.NewFile(uintptr(fds[1]), "procpool-pipe-w"), nil
}

// sysProcAttr makes a worker receive SIGKILL when the thread that forked it
// ends (the pool's spawning thread, which lives as long as the pool, or the
// whole parent process when it dies).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// workerFiles opens the worker's ends of the pipes, fds 3 (requests) and 4
// (replies), after checking the parent is still the one that started it
// (it may have died before Pdeathsig took effect).
func workerFiles(ppid int) (*os.File, *os.File, error) {
	if os.Getppid() != ppid {
		return nil, nil, fmt.Errorf("parent %d is gone", ppid)
	}
	for _, fd := range []int{3, 4} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, nil, fmt.Errorf("fd %d: %w", fd, err)
		}
		// Children the tasks start must not hold the protocol's pipes open.
		syscall.CloseOnExec(fd)
	}
	return os.NewFile(3, "procpool-requests"), os.NewFile(4, "procpool-replies"), nil
}

// sysRead and sysWrite are read(2) and write(2) on the parent's
// non-blocking pipe ends. They skip the runtime's bookkeeping for a system
// call that may block, which is not needed for one that never does and
// would cost a wake-up of the runtime's monitor thread on each reply to an
// otherwise idle parent.
func sysRead(fd uintptr, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sysWrite(fd uintptr, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

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

// sysProcAttr puts a worker in a process group of its own (see killGroup)
// and makes it receive SIGKILL when the thread that forked it ends (the
// pool's spawning thread, which lives as long as the pool, or the whole
// parent process when it dies).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// newJournal creates a worker's reply journal: a memfd of journalSize
// bytes and the rings after it (shmSize in all), close-on-exec in the
// parent.
func newJournal() (*os.File, error) {
	fd, err := unix.MemfdCreate("procpool-journal", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("procpool: journal: %w", err)
	}
	f := os.NewFile(uintptr(fd), "procpool-journal")
	if err := f.Truncate(shmSize); err != nil {
		f.Close()
		return nil, fmt.Errorf("procpool: journal: %w", err)
	}
	return f, nil
}

// waitExited blocks until process pid has ended, without reaping it
// (waitid with WNOWAIT), and reports whether it could wait so.
func waitExited(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err == nil
		}
	}
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

// mapShared maps a worker's journal file, with its rings, in the parent
// (see ring); nil if it cannot.
func mapShared(f *os.File) []byte {
	mem, err := unix.Mmap(int(f.Fd()), 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	return mem
}

func unmapShared(mem []byte) { unix.Munmap(mem) }

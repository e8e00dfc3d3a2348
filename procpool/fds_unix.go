//go:build unix

package procpool

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// killGroup sends SIGKILL to the process group pgid: a worker (its group
// leader) and every process its tasks started and left in the group, so
// that no task's child outlives the worker. It reports whether the signal
// was sent.
func killGroup(pgid int) bool {
	return pgid > 1 && syscall.Kill(-pgid, syscall.SIGKILL) == nil
}

// protoFdMin is the lowest descriptor the worker moves its protocol
// descriptors to, out of the range task code tends to assume it owns.
const protoFdMin = 100

// workerFiles takes the worker's ends of the protocol: the request pipe
// (fd 3), the reply pipe (fd 4) and the reply journal (fd 5), after
// checking that the parent is still the one that started it (it may have
// died before Pdeathsig took effect). Before any task runs, it moves the
// pipes to descriptors at or above protoFdMin, close-on-exec, maps the
// journal (nil if it cannot), and points 3, 4 and 5 at /dev/null,
// close-on-exec: a task that closes or writes those descriptors, or a
// child it starts, breaks nothing.
func workerFiles(ppid int) (in, out *os.File, journal []byte, err error) {
	if os.Getppid() != ppid {
		return nil, nil, nil, fmt.Errorf("parent %d is gone", ppid)
	}
	var fds [2]int
	for i, fd := range []int{3, 4} {
		if fds[i], err = moveFd(fd); err != nil {
			return nil, nil, nil, fmt.Errorf("fd %d: %w", fd, err)
		}
	}
	journal = mapJournal(5)
	null, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, fd := range []int{3, 4, 5} {
		if err := unix.Dup2(null, fd); err != nil {
			return nil, nil, nil, fmt.Errorf("fd %d: %w", fd, err)
		}
		syscall.CloseOnExec(fd)
	}
	unix.Close(null)
	return os.NewFile(uintptr(fds[0]), "procpool-requests"), os.NewFile(uintptr(fds[1]), "procpool-replies"), journal, nil
}

// moveFd duplicates fd to the lowest free descriptor at or above
// protoFdMin (or above 5 if the descriptor limit is lower), close-on-exec.
func moveFd(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD, protoFdMin)
	if err == unix.EINVAL {
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD, 6)
	}
	if err != nil {
		return -1, err
	}
	syscall.CloseOnExec(nfd)
	return nfd, nil
}

// mapJournal maps the journal passed as fd, shared with the parent, with
// the rings that follow it if the file has them; nil if there is none or
// it cannot be mapped, and the worker then writes each reply before it
// runs the next task.
func mapJournal(fd int) []byte {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Size < journalSize {
		return nil
	}
	size := journalSize
	if st.Size >= shmSize {
		size = shmSize // with the rings (see ring)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	return mem
}

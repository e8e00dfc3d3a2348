//go:build unix && !linux

package procpool

import (
	"fmt"
	"os"
	"syscall"
)

// executable is the binary workers run.
func executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("procpool: find executable: %w", err)
	}
	return exe, nil
}

// pipe returns an os.Pipe: close-on-exec, read through the netpoller.
func pipe(bool) (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("procpool: pipe: %w", err)
	}
	return r, w, nil
}

// sysProcAttr sets nothing: there is no Pdeathsig here, so a worker notices
// its parent's death when its request pipe ends, after the task it runs.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// workerFiles opens the worker's ends of the pipes, fds 3 and 4.
func workerFiles(ppid int) (*os.File, *os.File, error) {
	if os.Getppid() != ppid {
		return nil, nil, fmt.Errorf("parent %d is gone", ppid)
	}
	for _, fd := range []int{3, 4} {
		syscall.CloseOnExec(fd)
	}
	return os.NewFile(3, "procpool-requests"), os.NewFile(4, "procpool-replies"), nil
}

// sysRead and sysWrite are read(2) and write(2) on the parent's
// non-blocking pipe ends.
func sysRead(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), err
}

func sysWrite(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), err
}

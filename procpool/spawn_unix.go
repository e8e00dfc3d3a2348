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

// sysProcAttr puts a worker in a process group of its own (see killGroup).
// There is no Pdeathsig here, so a worker notices its parent's death when
// its request pipe ends, after the task it runs.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// newJournal creates a worker's reply journal: an unlinked temporary file
// of journalSize bytes.
func newJournal() (*os.File, error) {
	f, err := os.CreateTemp("", "procpool-journal-*")
	if err != nil {
		return nil, fmt.Errorf("procpool: journal: %w", err)
	}
	os.Remove(f.Name())
	if err := f.Truncate(journalSize); err != nil {
		f.Close()
		return nil, fmt.Errorf("procpool: journal: %w", err)
	}
	return f, nil
}

// waitExited cannot wait without reaping here: the group is killed just
// after the worker is reaped.
func waitExited(int) bool { return false }

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

// mapShared: the rings (see ring) are Linux-only for now; frames go
// through the pipes.
func mapShared(*os.File) []byte { return nil }

func unmapShared([]byte) {}

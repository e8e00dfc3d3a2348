package monitor

import (
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// childPIDs returns the child processes of this process, by PID. The
// kernel lists each thread's children in /proc/self/task/TID/children, and
// a Go program starts children from any of its threads, so every thread's
// list is read: one directory read plus one small file per thread, opened
// relative to the directory with plain system calls. A kernel built without
// those files gives none.
func childPIDs() []int {
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return nil
	}
	defer d.Close()
	tids, err := d.Readdirnames(-1)
	if err != nil {
		return nil
	}
	dirfd := int(d.Fd())
	var pids []int
	var buf [512]byte
	for _, tid := range tids {
		fd, err := unix.Openat(dirfd, tid+"/children", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // the thread exited, or no such file
		}
		pid := -1
		for {
			n, err := unix.Read(fd, buf[:])
			if n <= 0 || err != nil {
				break
			}
			for _, c := range buf[:n] {
				switch {
				case c >= '0' && c <= '9':
					pid = max(pid, 0)*10 + int(c-'0')
				case pid >= 0:
					pids = append(pids, pid)
					pid = -1
				}
			}
		}
		unix.Close(fd)
		if pid >= 0 {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

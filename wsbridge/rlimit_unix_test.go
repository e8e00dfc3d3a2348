//go:build unix

package wsbridge

import "syscall"

// openFileLimit returns the soft limit on this process's open descriptors
// (RLIMIT_NOFILE), and whether there is one.
func openFileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}

//go:build !linux

package procpool

import "os/exec"

// nameCmd leaves a worker's command line as it is: the names Linux shows
// for a process (see name_linux.go) have no portable equivalent.
func nameCmd(*exec.Cmd, int) {}

// nameWorker does nothing outside Linux.
func nameWorker(int) {}

// Package cputime reads the CPU time this process has used, for benchmarks
// that report what the parent of a process pool spends per task.
package cputime

import "time"

// Self returns the user plus system CPU time the calling process has used
// (its own threads only, not its children: getrusage(RUSAGE_SELF)), and
// false where the system has no such counter here (every non-unix system).
// It costs one system call.
func Self() (time.Duration, bool) { return self() }

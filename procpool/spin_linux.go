package procpool

import "syscall"

// yield gives the CPU to another runnable thread, if any (sched_yield(2));
// it returns at once otherwise. It never blocks, so it skips the runtime's
// bookkeeping for system calls.
func yield() { syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }

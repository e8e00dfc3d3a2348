package procpool

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// envArgv0 carries the parent's os.Args[0] to a worker, whose own argv[0]
// names it as a worker (see nameCmd).
const envArgv0 = envPrefix + "ARGV0"

// commLen is the longest thread name Linux keeps (TASK_COMM_LEN less the NUL).
const commLen = 15

// progName is the program's name as workers are named after it: the base
// name of os.Args[0], or "procpool" if that is empty.
func progName(arg0 string) string {
	b := filepath.Base(arg0)
	if arg0 == "" || b == "." || b == "/" {
		return "procpool"
	}
	return b
}

// commName is the thread name of worker slot: the program's name cut to fit
// and "-w" and the slot, at most commLen bytes ("myprog-w3").
func commName(prog string, slot int) string {
	suffix := "-w" + strconv.Itoa(slot)
	n := max(commLen-len(suffix), 0)
	if len(prog) > n {
		for n > 0 && !utf8.RuneStart(prog[n]) {
			n-- // do not cut a character in two
		}
		prog = prog[:n]
	}
	return prog + suffix
}

// argv0 is the argv[0] of worker slot: "myprog [worker 3]", which ps -o
// args, top -c and htop show.
func argv0(prog string, slot int) string {
	return prog + " [worker " + strconv.Itoa(slot) + "]"
}

// nameCmd names the process cmd starts for worker slot on the command line,
// and passes the parent's os.Args[0], which the worker restores (see
// nameWorker). It runs after cmd.Args and cmd.Env are set.
func nameCmd(cmd *exec.Cmd, slot int) {
	cmd.Args[0] = argv0(progName(os.Args[0]), slot)
	cmd.Env = append(cmd.Env, envArgv0+"="+os.Args[0])
}

// nameWorker runs first in worker slot: it gives os.Args[0] back the
// parent's value, so task code sees the program's usual argv[0], and sets
// the worker's thread names, which Linux takes at exec from the file's base
// name ("exe", for /proc/self/exe), to commName: the calling thread's with
// prctl(PR_SET_NAME), then every other thread's through /proc, the main
// thread's first, since its name is the one ps -o comm, top and /proc/PID/comm
// show for the process. Threads started later inherit the name of the
// thread that starts them. Failures are ignored: a name is a convenience.
func nameWorker(slot int) {
	if arg0, ok := os.LookupEnv(envArgv0); ok {
		os.Unsetenv(envArgv0)
		if len(os.Args) > 0 {
			os.Args[0] = arg0
		}
	}
	arg0 := ""
	if len(os.Args) > 0 {
		arg0 = os.Args[0]
	}
	name := commName(progName(arg0), slot)
	if p, err := unix.BytePtrFromString(name); err == nil {
		unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(p)), 0, 0, 0)
		runtime.KeepAlive(p)
	}
	setComm("/proc/self/comm", name)
	// A thread the runtime starts meanwhile from a thread not yet renamed
	// keeps the old name, so go over the threads again until a pass finds
	// them all renamed (TestWorkerNames saw one "exe" thread under load).
	for range 8 {
		renamed := false
		tasks, _ := filepath.Glob("/proc/self/task/[0-9]*/comm")
		for _, f := range tasks {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSuffix(string(b), "\n") == name {
				continue
			}
			setComm(f, name)
			renamed = true
		}
		if !renamed {
			return
		}
	}
}

// setComm writes a thread's name to its /proc comm file.
func setComm(path, name string) {
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		f.WriteString(name)
		f.Close()
	}
}

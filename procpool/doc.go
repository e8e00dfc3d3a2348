// Package procpool runs typed Go functions in a pool of worker processes,
// the way Python's multiprocessing.Pool does: for work that must be
// isolated (a crash, a leak or a non-thread-safe cgo library must not take
// the service down), killable on timeout, recycled to return memory, or
// pinned one process per CPU.
//
// The program re-executes its own binary as the workers (/proc/self/exe on
// Linux, os.Executable elsewhere), marked by an environment variable, so
// Main must be the first call of main, and of TestMain in packages whose
// tests start a pool. Tasks are registered at package initialization, so
// the parent and every worker know the same names:
//
//	var Fib = procpool.Register("fib", func(ctx context.Context, n int) (int, error) {
//		return fib(n), nil
//	})
//
//	func main() {
//		procpool.Main() // in a worker: serve tasks, then exit
//		p, err := procpool.New() // one worker per GOMAXPROCS
//		if err != nil {
//			log.Fatal(err)
//		}
//		defer p.Close()
//		v, err := Fib.Call(ctx, p, 35)                   // one task
//		vs, err := Fib.Map(ctx, p, []int{30, 31, 32, 33}) // in order, chunked
//		for r, err := range Fib.Stream(ctx, p, inputs) { // as they finish
//			...
//		}
//	}
//
// The worker count follows one rule in pool, procpool and jobqueue:
// WithWorkers(n) with n > 0 means exactly n processes; 0, the default,
// means runtime.GOMAXPROCS(0), which on Linux already follows the CPU
// affinity mask and the cgroup CPU quota; a negative n makes New fail.
//
// # Wire
//
// Each worker gets two pipes as descriptors 3 (requests) and 4 (replies),
// and its reply journal as descriptor 5 (see Failures). Before it runs any
// task, the worker moves the pipes to descriptors 100 and up,
// close-on-exec, and points 3, 4 and 5 at /dev/null, so task code that
// closes or writes them, or a child process it starts, breaks nothing.
// Frames carry a length (checked against the WithMaxFrame limit before
// anything is allocated), a small binary header (request id, task name,
// deadline, chunk size) and the input or output as gob, written by one
// long-lived gob.Encoder per direction, so a type's description crosses
// once. A lone input or output of a predeclared scalar type (bool, the
// integer and float types, string) skips gob: it crosses as a varint, its
// IEEE bits or its bytes, which saves the parent about a third of its CPU
// time on such a tiny task; named types and chunks keep gob. The parent keeps a pipeline of requests in flight per worker
// (WithPipelineDepth) and batches the writes; the worker batches its
// replies while more requests are buffered, keeping the batch in its
// journal (see Failures).
// The goroutine that reads a worker's replies sends it the next queued
// requests itself, so a stream of tasks costs the parent one wake-up per
// reply batch: on a machine whose every CPU runs a worker, each wake-up of
// the parent takes a CPU from a worker. On Linux the worker wakes a
// sleeping parent only when it starts the last request it holds (or would
// wait, or has held a reply for half a millisecond), so a window of
// requests costs one wake-up.
// A Call that finds a worker idle writes its request and reads its reply
// from its own goroutine, with no hand-off to the pool's goroutines. On
// Linux the frames do not cross the kernel at all: they go through two
// byte rings per worker in memory the parent and the worker share (the
// journal's memfd), and the pipes carry only one-byte wake-up tokens and,
// by their end, each side's death. A side that finds its ring empty spins
// briefly when the bytes are expected soon (a reply to a task measured
// short; the worker's next request), yielding its CPU as it spins and
// giving up when it finds the CPU contended, and otherwise sleeps: the
// parent in the netpoller, reading its non-blocking pipe end with plain
// system calls that do not wake the Go runtime's monitor thread, the
// worker in read(2). Elsewhere the frames themselves go through the
// pipes. Workers' stdout and stderr never carry the protocol: they are
// forwarded line by line to WithOutput, each line prefixed with
// "worker N: ".
//
// # Failures
//
// A handler's error reaches the caller as a *TaskError (its message), a
// panic as a *panics.Error (Source "procpool", Task the task's name, Value
// the panic value as text, Stack the worker's stack): the library's one
// panic type, so one errors.As catches panics from pool, procpool and
// jobqueue alike. The worker goes on.
//
// A worker that dies (os.Exit, a signal, the OOM killer) fails only the
// call it was running, with a *CrashError that matches ErrWorkerCrashed and
// carries the exit status and the tail of its stderr, or sends it again
// under WithRetry (for a chunk of Map or Stream, the whole chunk); a new
// worker takes its slot and every other call goes on. The parent knows
// which request that was: a worker runs its requests in order, and before
// it starts one it has either written the replies to the earlier ones to
// its pipe (its reply ring on Linux, see Wire) or recorded them in its
// journal, memory it shares with the parent (a memfd on Linux), which
// the parent reads after the death without costing the worker a system
// call per task. So the running
// request is the oldest one without a reply; the requests queued behind it
// on that worker never started and are sent to another worker (or to the
// new one) without counting as a retry. The oldest request counts as
// started even if the worker died before starting it (while reading it,
// say), since the parent cannot tell: a crash never makes a call run
// twice unless WithRetry allows it. After a corrupt reply, when the parent cannot tell
// how far the worker got, every request it held counts as started.
//
// A call whose context ends returns ctx.Err() at once; if its task is
// running, the worker is killed and replaced (tasks are not asked to stop),
// and the calls queued behind it are sent again (should the worker have
// finished the task just before the kill and started the next one, that
// one runs again elsewhere). Each worker runs in a
// process group of its own (Unix): when it ends, for whatever reason (a
// timeout, a crash, Close, Shutdown, recycling), the parent kills the whole
// group with SIGKILL, so the processes a task started and left running end
// with its worker. A child that must outlive its worker has to leave the
// group (Setpgid or Setsid). A corrupt or oversized frame
// ends the worker it came from (or, in a worker, the worker itself). In the
// parent, procpool runs no user code but gob's: a panic in a GobEncode or
// GobDecode method becomes an ErrEncode or ErrDecode error. The pool logs
// its own events (a worker spawned, crashed, recycled, killed, or failing to
// start again) with structured attributes to WithLogger, slog.Default()
// unless set.
//
// Workers die with the parent: on Linux they are started with Pdeathsig
// SIGKILL from one OS thread that lives as long as the pool, and a worker
// exits when its request pipe closes. (The processes its tasks started are
// then left running: with the parent gone, nobody kills the group.)
// Workers ignore SIGINT and are not in the terminal's foreground process
// group, so Ctrl-C in a terminal reaches only the parent, which can shut
// them down in order. Every worker process is waited for; none is left as
// a zombie.
//
// # Finding the workers in top and htop
//
// On Linux a worker names itself after the program and its slot: its
// threads are called "myprog-w3" (the base name of the parent's os.Args[0],
// cut so the whole fits Linux's 15 bytes, then "-w" and the slot), which
// top, ps -o comm and /proc/PID/comm show in place of the "exe" of
// /proc/self/exe, and its command line is "myprog [worker 3]", which
// ps -o args, top -c and htop show. Task code still sees the program's
// own os.Args[0]. A worker that replaces a dead one takes the same name;
// the slot is WorkerStats.ID. To list a pool's workers, with the CPU each
// last ran on, given the program's PID:
//
//	ps -o pid,psr,comm,args --ppid PID
//
// # Shared memory
//
// A large input (an image, a matrix) need not be copied through the pipe:
// put it in a Shared, owned by the parent, and lend it to the calls that
// need it; the task's input carries a SharedRef, a handle of a few dozen
// bytes, and the worker reads the parent's memory in place:
//
//	type Rows struct {
//		Image    procpool.SharedRef
//		From, To int
//	}
//
//	var Sum = procpool.Register("sum", func(ctx context.Context, in Rows) (uint64, error) {
//		img, err := in.Image.Bytes() // read-only, valid until the task returns
//		...
//	})
//
//	buf, err := procpool.NewShared(64 << 20)
//	defer buf.Close()
//	b, err := buf.Bytes() // the parent fills it
//	err = buf.Lend(func(ref procpool.SharedRef) error {
//		sums, err := Sum.Map(ctx, p, []Rows{{ref, 0, 512}, {ref, 512, 1024}})
//		return err
//	}) // while Lend runs, buf.Bytes fails with ErrSharedLent
//
// The parent owns the buffer: while a Lend runs, Bytes fails with
// ErrSharedLent, so the parent cannot change what a worker reads; a
// SharedRef used after its Lend returned, or after Close, fails to encode.
// A worker's view is read-only (a task's results come back in its output)
// and is unmapped when its task returns; SharedRef.Bytes then fails with
// ErrNotLent. Close releases the memory and is idempotent. On Linux the
// buffer is a memfd that the worker opens through /proc/<parent>/fd and
// maps, without a copy: a 64 MiB input reached a worker 7 to 20 times
// faster than as a []byte field on a busy 2-core machine
// (BenchmarkLargeInput). Elsewhere, and on Linux when the parent is not
// dumpable, the SharedRef carries a copy of the buffer, like a []byte
// field, so the same code runs everywhere.
//
// # Platforms
//
// Linux is the first-class target. On other Unix systems there is no
// Pdeathsig (a worker notices its parent's death when its current task
// ends), the journal is an unlinked temporary file, a worker's group is
// killed just after the worker is reaped rather than just before, and New
// with WithPinnedWorkers fails with affinity.ErrUnsupported.
// On Windows, where a child cannot inherit extra descriptors, New fails
// with an error matching errors.ErrUnsupported.
package procpool

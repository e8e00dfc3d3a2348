package procpool

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/corework/corework/panics"
)

var (
	// ErrClosed is returned by calls made after Shutdown or Close began, and
	// by calls still queued or in flight when Close stopped the workers.
	ErrClosed = errors.New("procpool: pool closed")

	// ErrWorkerCrashed is matched (errors.Is) by the *CrashError of a call
	// whose worker process died while running it (see the package doc for
	// how the parent knows), when WithRetry allows no other try.
	ErrWorkerCrashed = errors.New("procpool: worker crashed")

	// ErrUnknownTask is returned when the worker has no task of the name the
	// parent sent: the task was registered in the parent only (Register must
	// run at package initialization, in every process).
	ErrUnknownTask = errors.New("procpool: unknown task")

	// ErrFrameTooLarge is returned (wrapped) when a request or a reply does not
	// fit in the frame size limit (see WithMaxFrame). A request that is too large
	// is never sent; a reply that is too large fails its call only.
	ErrFrameTooLarge = errors.New("procpool: frame too large")

	// ErrEncode is returned (wrapped, with gob's error) when gob cannot encode
	// a call's input in the parent or its output in the worker.
	ErrEncode = errors.New("procpool: cannot encode")

	// ErrDecode is returned (wrapped, with gob's error) when gob cannot decode
	// a call's input in the worker or its output in the parent.
	ErrDecode = errors.New("procpool: cannot decode")
)

// TaskError is the error of a call whose handler returned an error in the
// worker. Only the message crosses the process boundary, so errors.Is and
// errors.As against the handler's own error values do not match; compare
// Message or encode the condition in the task's output instead.
type TaskError struct {
	Task    string // the task's registered name
	Message string // err.Error() of the handler's error
}

// Error returns "procpool: task NAME: MESSAGE".
func (e *TaskError) Error() string {
	return fmt.Sprintf("procpool: task %s: %s", e.Task, e.Message)
}

// CrashError is the error of a call whose worker process died while
// running it (killed by a signal, the OOM killer, os.Exit...), or broke
// the protocol. errors.Is(err, ErrWorkerCrashed) holds. Err is the protocol error that ended the worker, if one did, else
// the *exec.ExitError of its wait (nil for an exit with status 0).
type CrashError struct {
	Worker int              // worker slot, 0 to n-1 in a pool of n workers
	PID    int              // the dead process
	State  *os.ProcessState // its wait status; nil if it could not be read
	Stderr string           // the tail of what it wrote to stderr (at most 4 KiB)
	// Cause is the last line the worker wrote to stderr that begins with
	// "fatal error:", "panic:" or "runtime: out of memory", the Go
	// runtime's reason for dying, which a long goroutine dump pushes out
	// of Stderr's tail; empty if it wrote none.
	Cause string
	Err   error // what ended it: the wait error, or the protocol error
}

// Error returns the worker, its exit status and its Cause, or the last
// line of its stderr.
func (e *CrashError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "procpool: worker %d (pid %d) crashed", e.Worker, e.PID)
	switch {
	case e.State != nil:
		fmt.Fprintf(&b, ": %s", e.State)
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Err != nil && e.State != nil && !isExitErr(e.Err) {
		fmt.Fprintf(&b, " (%v)", e.Err)
	}
	if line := e.stderrLine(); line != "" {
		fmt.Fprintf(&b, "; stderr: %s", line)
	}
	return b.String()
}

// stderrLine is the line of stderr that best says why the worker died.
func (e *CrashError) stderrLine() string {
	if e.Cause != "" {
		return e.Cause
	}
	return lastLine(e.Stderr)
}

// Unwrap returns ErrWorkerCrashed and the underlying error.
func (e *CrashError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrWorkerCrashed}
	}
	return []error{ErrWorkerCrashed, e.Err}
}

func isExitErr(err error) bool {
	var x interface{ ExitCode() int }
	return errors.As(err, &x)
}

// remoteErr turns a failure reported by a worker into the caller's error.
func remoteErr(task string, e *itemErr) error {
	switch e.kind {
	case kindHandler:
		return &TaskError{Task: task, Message: e.msg}
	case kindPanic:
		// The worker formatted the value with fmt.Sprint (it crosses the
		// process boundary as text) and took its goroutine's stack.
		return &panics.Error{Source: "procpool", Task: task, Value: e.msg, Stack: e.stack}
	case kindUnknownTask:
		return fmt.Errorf("%w %q in worker", ErrUnknownTask, task)
	case kindDecode:
		return fmt.Errorf("%w input of task %s in worker: %s", ErrDecode, task, e.msg)
	case kindEncode:
		return fmt.Errorf("%w output of task %s in worker: %s", ErrEncode, task, e.msg)
	case kindFrameTooLarge:
		return fmt.Errorf("%w: reply of task %s: %s", ErrFrameTooLarge, task, e.msg)
	}
	return fmt.Errorf("procpool: task %s: %s", task, e.msg)
}

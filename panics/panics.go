// Package panics holds the one panic error type of corework. A panic in a
// pool task, a procpool task (in the worker process) or a jobqueue handler is
// recovered and becomes a *Error carrying the panic value and the stack, so
// one errors.As catches a panic from any of them:
//
//	var pe *panics.Error
//	if errors.As(err, &pe) {
//		log.Printf("%s panicked: %v\n%s", pe.Source, pe.Value, pe.Stack)
//	}
//
// The package has no dependencies and starts no goroutines.
package panics

import (
	"bytes"
	"fmt"
	"runtime/debug"
	"slices"
)

// Error is a recovered panic.
type Error struct {
	// Source is the package that recovered the panic: "pool", "procpool"
	// or "jobqueue".
	Source string
	// Task names what panicked: the procpool task's registered name or the
	// jobqueue job type. Empty for a pool task.
	Task string
	// Value is the value passed to panic. A panic in a worker process
	// crosses the process boundary as text, so for procpool Value is the
	// string fmt.Sprint made of it in the worker.
	Value any
	// Stack is the panicking goroutine's stack, starting at the goroutine
	// header followed by the frame that panicked.
	Stack []byte
}

// New returns an *Error for the value v recovered by source, with the stack
// of the calling goroutine. Call it in the deferred function that recovered;
// the frames of the recovery itself (debug.Stack, New, the deferred function
// and panic) are cut from the stack.
func New(source, task string, v any) *Error {
	return &Error{Source: source, Task: task, Value: v, Stack: trim(debug.Stack())}
}

// trim drops the frames between the goroutine header and the frame that
// called panic, when the stack has a panic frame.
func trim(stack []byte) []byte {
	header, _, _ := bytes.Cut(stack, []byte("\n"))
	i := bytes.Index(stack, []byte("\npanic("))
	if i < 0 {
		return stack
	}
	rest := stack[i+1:]
	for range 2 { // the panic frame's function line and file line
		if _, after, ok := bytes.Cut(rest, []byte("\n")); ok {
			rest = after
		}
	}
	return slices.Concat(header, []byte("\n"), rest)
}

// Error returns "SOURCE: task TASK panicked: VALUE" ("SOURCE: task panicked:
// VALUE" without a task name). The stack is in the Stack field.
func (e *Error) Error() string {
	if e.Task == "" {
		return fmt.Sprintf("%s: task panicked: %v", e.Source, e.Value)
	}
	return fmt.Sprintf("%s: task %s panicked: %v", e.Source, e.Task, e.Value)
}

// Unwrap returns the panic value when it is an error, so errors.Is and
// errors.As see through a panic(err).
func (e *Error) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

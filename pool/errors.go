package pool

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// ErrClosed is returned by Submit, and is the task error of Group.Go, Map
// and MapSeq, once the pool has been closed. (TryGo reports false instead;
// Go panics.)
var ErrClosed = errors.New("pool: closed")

// PanicError is a panic recovered from a task. It carries the panic value
// and the stack of the goroutine that panicked, taken at the recover.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the stack trace of the panicking goroutine
}

// Error reports the panic value; the stack is in the Stack field.
func (e *PanicError) Error() string {
	return fmt.Sprintf("pool: task panicked: %v", e.Value)
}

// Unwrap returns the panic value when it is an error, so errors.Is and
// errors.As see through a panic(err).
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

func newPanicError(v any) *PanicError {
	return &PanicError{Value: v, Stack: debug.Stack()}
}

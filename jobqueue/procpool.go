package jobqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/corework/corework/procpool"
)

// ProcPoolHandler returns a Handler that runs each job in a worker process
// of a procpool.Pool, pool, as a call of task: for CPU-bound work that must
// be killable. When the job times out or is canceled, procpool kills the
// worker process running it (and starts a new one), so the job's worker
// goroutine is freed at once even if the task never looks at its context.
// Register it like any handler:
//
//	var fibTask = procpool.Register("fib", fib) // package level, in every process
//	q.Handle("fib", jobqueue.ProcPoolHandler(fibTask, pool))
//
// The job's payload is decoded from JSON into In as by HandleFunc (a
// payload that does not decode fails at once with ErrBadPayload), sent to
// the worker with gob, and Out comes back encoded as the job's JSON result.
// A panic in the task fails the attempt with the *panics.Error procpool
// returns (Source "procpool", Task the task's name, Stack the worker's
// stack), passed through as it is and retried like any failure; a worker
// crash or a task error is an ordinary failed attempt and is retried too;
// inputs or outputs that cannot cross the process boundary (encoding, frame
// size, task not registered in the workers) fail at once. The program must
// call procpool.Main first in main. The pool is the caller's: it must
// outlive the Queue's Shutdown. ProcPoolHandler panics if task or pool is
// nil.
func ProcPoolHandler[In, Out any](task *procpool.Task[In, Out], pool *procpool.Pool) Handler {
	if task == nil || pool == nil {
		panic("jobqueue: ProcPoolHandler with a nil task or pool")
	}
	return HandlerFunc(func(ctx context.Context, job *Job) (json.RawMessage, error) {
		in, err := DecodePayload[In](job.Payload)
		if err != nil {
			return nil, err
		}
		out, err := task.Call(ctx, pool, in)
		if err != nil {
			switch {
			case errors.Is(err, procpool.ErrEncode), errors.Is(err, procpool.ErrDecode),
				errors.Is(err, procpool.ErrFrameTooLarge), errors.Is(err, procpool.ErrUnknownTask):
				return nil, Permanent(err)
			}
			return nil, err
		}
		res, err := json.Marshal(out)
		if err != nil {
			return nil, Permanent(fmt.Errorf("jobqueue: encoding result of %s: %w", job.Type, err))
		}
		return res, nil
	})
}

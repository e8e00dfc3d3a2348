package jobqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// Handler runs jobs of one type. ProcessJob returns the job's result as JSON
// (nil for none) or an error. An error fails the attempt: the job is retried
// with backoff until its MaxAttempts, unless the error is marked with
// Permanent. A panic is recovered and fails the attempt with a *panics.Error
// (Source "jobqueue", Task the job type), retried like any failure.
//
// ctx is canceled when the job times out, is canceled with Queue.Cancel, or
// Shutdown runs out of time. It carries the job (see JobFromContext and
// Progress) and no values of the context given to Submit. A handler that ignores ctx keeps its worker
// busy until it returns: the Queue cannot stop a goroutine. Work that must be
// killable on timeout belongs in a worker process (package procpool).
type Handler interface {
	// ProcessJob runs one attempt of job.
	ProcessJob(ctx context.Context, job *Job) (json.RawMessage, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, job *Job) (json.RawMessage, error)

// ProcessJob calls f(ctx, job).
func (f HandlerFunc) ProcessJob(ctx context.Context, job *Job) (json.RawMessage, error) {
	return f(ctx, job)
}

// Middleware wraps a Handler, for logging, metrics, tracing or recovery
// policies; see Queue.Use.
type Middleware func(Handler) Handler

// HandleFunc registers a typed handler for jobType on q. The job's payload
// is decoded from JSON into In; a payload that does not decode, has trailing
// data, or is empty while In is not a pointer, map, slice or interface
// fails the job at once, without retries, with an error wrapping
// ErrBadPayload. fn's Out is encoded as the job's result. Like Queue.Handle
// it panics on an empty type, a nil fn or a duplicate registration.
func HandleFunc[In, Out any](q *Queue, jobType string, fn func(ctx context.Context, in In) (Out, error)) {
	if fn == nil {
		panic("jobqueue: nil handler func for " + jobType)
	}
	q.Handle(jobType, TypedHandler(fn))
}

// TypedHandler returns the Handler HandleFunc registers: it decodes the
// payload with DecodePayload, calls fn and encodes its result as JSON.
func TypedHandler[In, Out any](fn func(ctx context.Context, in In) (Out, error)) Handler {
	return HandlerFunc(func(ctx context.Context, job *Job) (json.RawMessage, error) {
		in, err := DecodePayload[In](job.Payload)
		if err != nil {
			return nil, err
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		res, err := json.Marshal(out)
		if err != nil {
			return nil, Permanent(fmt.Errorf("jobqueue: encoding result of %s: %w", job.Type, err))
		}
		return res, nil
	})
}

// DecodePayload decodes a JSON payload into a T, strictly: one JSON value,
// no trailing data, and no empty payload unless T accepts null (a pointer,
// map, slice or interface). Its errors wrap ErrBadPayload and are marked
// Permanent. It is the decoding path of HandleFunc, exported for handlers
// that decode by hand.
func DecodePayload[T any](payload json.RawMessage) (T, error) {
	var v T
	data := bytes.TrimSpace(payload)
	if len(data) == 0 {
		data = []byte("null")
	}
	if bytes.Equal(data, []byte("null")) && !acceptsNull(&v) {
		return v, Permanent(fmt.Errorf("%w: empty payload for %T", ErrBadPayload, v))
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, Permanent(fmt.Errorf("%w: %v", ErrBadPayload, err))
	}
	return v, nil
}

// acceptsNull reports whether *p can hold JSON null as a meaningful value.
func acceptsNull(p any) bool {
	switch p.(type) {
	case *any, *json.RawMessage:
		return true
	}
	b, _ := json.Marshal(p) // the zero value: "null" for pointers, maps, slices and interfaces
	return string(b) == "null"
}

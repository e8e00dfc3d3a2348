package wsbridge

import (
	"errors"
	"fmt"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

// Sentinel errors. Errors returned by this package wrap them with %w; match
// them with errors.Is.
var (
	// ErrClosed is returned by Client methods after Close. A Server after
	// Shutdown refuses upgrades with HTTP 503 and this text.
	ErrClosed = errors.New("wsbridge: closed")
	// ErrConnectionLost is returned by a Client call whose request was
	// sent but whose reply was lost with the connection. With reconnecting
	// on, a Client sends such a request again instead; calls fail with it
	// only when reconnecting is off. Submit then also returns the job ID it
	// sent, with which a resubmission is safe (the server returns the same
	// job).
	ErrConnectionLost = errors.New("wsbridge: connection lost")
	// ErrOrigin refuses an upgrade whose Origin is not allowed (HTTP 403).
	ErrOrigin = errors.New("wsbridge: origin not allowed")
	// ErrHost refuses an upgrade whose Host header does not name the
	// server (HTTP 403; see Config.Hosts).
	ErrHost = errors.New("wsbridge: host not allowed")
	// ErrUnauthorized is what TokenAuth and OptionalTokenAuth return for a
	// missing or unknown token. An error from Config.Authenticate that
	// wraps it refuses the upgrade with HTTP 401; any other with 403.
	ErrUnauthorized = errors.New("wsbridge: unauthorized")
	// ErrProtocol matches a *ServerError the server sent for a malformed
	// request (bad JSON, unknown command, bad field).
	ErrProtocol = errors.New("wsbridge: protocol error")
	// ErrSlowConsumer is the reason of a connection closed with
	// CloseSlowConsumer because its send queue overflowed.
	ErrSlowConsumer = errors.New("wsbridge: slow consumer")
	// ErrMessageTooBig is the reason of a connection closed with 1009.
	ErrMessageTooBig = errors.New("wsbridge: message too big")
)

// CloseSlowConsumer is the WebSocket close code (in the private 4000-4999
// range) sent to a client whose send queue overflowed.
const CloseSlowConsumer ws.StatusCode = 4008

// Error codes carried by `error` messages (see the package doc).
const (
	CodeBadJSON        = "bad_json"        // the message is not a JSON object
	CodeUnknownCommand = "unknown_command" // no such command
	CodeBadRequest     = "bad_request"     // a field is missing or has a bad value
	CodeInvalidJob     = "invalid_job"     // jobqueue.ErrInvalidJob
	CodeNoHandler      = "no_handler"      // jobqueue.ErrNoHandler
	CodeQueueFull      = "queue_full"      // jobqueue.ErrQueueFull
	CodeNotFound       = "not_found"       // jobqueue.ErrNotFound
	CodeFinished       = "finished"        // jobqueue.ErrFinished
	CodeClosed         = "closed"          // jobqueue.ErrClosed or server shutting down
	CodeQuota          = "quota"           // over a Quota limit: jobqueue.ErrQuotaExceeded
	CodeEventsLost     = "events_lost"     // the bridge fell behind the queue; resynchronize
	CodeInternal       = "internal"        // any other error
)

// ServerError is an `error` message received by a Client. Is matches the
// jobqueue sentinel of its code (CodeNotFound matches jobqueue.ErrNotFound,
// CodeQueueFull jobqueue.ErrQueueFull, CodeQuota
// jobqueue.ErrQuotaExceeded, ...) and ErrProtocol for the codes of
// malformed requests.
type ServerError struct {
	Code    string
	Message string
}

// Error returns the code and the server's message.
func (e *ServerError) Error() string {
	return fmt.Sprintf("wsbridge: server error %s: %s", e.Code, e.Message)
}

// Is reports whether target is the sentinel of e's code.
func (e *ServerError) Is(target error) bool {
	switch e.Code {
	case CodeBadJSON, CodeUnknownCommand, CodeBadRequest:
		return target == ErrProtocol
	}
	return codeError[e.Code] == target && target != nil
}

var codeError = map[string]error{
	CodeInvalidJob: jobqueue.ErrInvalidJob,
	CodeNoHandler:  jobqueue.ErrNoHandler,
	CodeQueueFull:  jobqueue.ErrQueueFull,
	CodeNotFound:   jobqueue.ErrNotFound,
	CodeFinished:   jobqueue.ErrFinished,
	CodeClosed:     jobqueue.ErrClosed,
	CodeQuota:      jobqueue.ErrQuotaExceeded,
}

// errorCode maps an error returned by the queue to its protocol code.
func errorCode(err error) string {
	for code, target := range codeError {
		if errors.Is(err, target) {
			return code
		}
	}
	return CodeInternal
}

// CloseError is how a Client reports a connection the server closed with a
// close frame: the code and reason it sent.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

// Error returns the code and reason.
func (e *CloseError) Error() string {
	return fmt.Sprintf("wsbridge: closed by peer with %d %q", e.Code, e.Reason)
}

// Is matches ErrSlowConsumer for CloseSlowConsumer and ErrMessageTooBig for
// 1009.
func (e *CloseError) Is(target error) bool {
	switch e.Code {
	case CloseSlowConsumer:
		return target == ErrSlowConsumer
	case ws.StatusMessageTooBig:
		return target == ErrMessageTooBig
	}
	return false
}

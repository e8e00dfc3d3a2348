package pool

import "errors"

// ErrClosed is returned by Submit, and is the task error of Group.Go, Map
// and MapSeq, once the pool has been closed. (TryGo reports false instead;
// Go panics.)
var ErrClosed = errors.New("pool: closed")

package jobqueue

import (
	"sync/atomic"
	"time"
)

// clockBase is the wall and monotonic reading that now derives times from.
var clockBase atomic.Pointer[time.Time]

func init() {
	t := time.Now()
	clockBase.Store(&t)
}

// clockNow returns the current time, with its monotonic reading, for about half
// the cost of time.Now: it reads only the monotonic clock and adds the
// elapsed time to a base taken with time.Now, which is refreshed every
// second so that a change of the wall clock shows within a second. Jobs
// take several timestamps each, so this matters at hundreds of thousands
// of jobs per second.
func clockNow() time.Time {
	base := clockBase.Load()
	d := time.Since(*base)
	if d < time.Second && d >= 0 {
		return base.Add(d)
	}
	t := time.Now()
	clockBase.Store(&t)
	return t
}

package pool

import "time"

// Stats is a point-in-time view of a Pool's counters, returned by Pool.Stats.
// Counters only grow; gauges (Workers, Running, Waiting) are read at the call.
type Stats struct {
	Size      int // configured maximum number of workers
	Workers   int // worker goroutines alive now
	Running   int // tasks running now
	Waiting   int // tasks submitted and not yet started
	Submitted uint64
	Completed uint64 // tasks finished, panicked ones included
	Panicked  uint64

	// QueueWaitTotal is the summed time tasks spent between submission and
	// start, and QueueWaitMax the longest single wait seen. Both come from
	// a sample: one task in eight is timed (QueueWaitSampled counts them),
	// because two clock reads would cost more than the pool's own work on a
	// tiny task; QueueWaitTotal is the sampled sum scaled to every started
	// task.
	QueueWaitTotal   time.Duration
	QueueWaitMax     time.Duration
	QueueWaitSampled uint64
}

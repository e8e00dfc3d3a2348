package wsbridge

import "github.com/corework/corework/jobqueue"

// newJobID returns the job ID a Client chooses for Submit: jobqueue.NewID,
// so that one principal's jobs sort by submission time in a listing
// (list_jobs is newest first by ID) whoever chose their IDs, and so that
// the ID is unguessable.
func newJobID() string { return jobqueue.NewID() }

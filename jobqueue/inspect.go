package jobqueue

import "context"

// Get returns a snapshot of job id, or an error wrapping ErrNotFound if the
// job is unknown or retention has dropped it. It returns the job in full,
// whoever owns it: a server acting for clients compares JobInfo.Owner with
// the client's principal itself.
func (q *Queue) Get(ctx context.Context, id string) (JobInfo, error) {
	return q.backend.Get(ctx, id)
}

// List returns snapshots of the jobs matching f, newest first, at most
// f.Limit of them; see ListFilter for paging with f.Cursor and for
// f.Summary. With the memory backend it costs O(n) in the jobs kept
// (active plus retained) under the backend's lock, then O(m log m) in the
// m jobs matching f; it is meant for inspection, not for polling in a loop.
func (q *Queue) List(ctx context.Context, f ListFilter) ([]JobInfo, error) {
	out, err := q.backend.List(ctx, f)
	if f.Summary {
		for i := range out {
			out[i].summarize()
		}
	}
	return out, err
}

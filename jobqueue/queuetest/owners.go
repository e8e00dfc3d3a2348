package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// The trust boundary: owners, listing, quotas, byte budgets, idempotent
// submission and usage.

// sized returns a JSON payload (a string) of exactly n bytes, n >= 2.
func sized(n int) []byte { return []byte(`"` + strings.Repeat("x", n-2) + `"`) }

func list(t *testing.T, q *jobqueue.Queue, f jobqueue.ListFilter) []jobqueue.JobInfo {
	t.Helper()
	out, err := q.List(ctxT(t), f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	return out
}

func ids(infos []jobqueue.JobInfo) []string {
	out := make([]string, len(infos))
	for i, info := range infos {
		out[i] = info.ID
	}
	return out
}

// refused checks that err wraps want and that its message contains each
// of words.
func refused(t *testing.T, what string, err, want error, words ...string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s = %v, want %v", what, err, want)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: error %q does not say %q", what, err, w)
		}
	}
}

func (s *suite) ownerStored(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	sub := q.Subscribe(jobqueue.EventFilter{Owner: "alice"})
	defer sub.Close()
	a := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(1), Owner: "alice"})
	b := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(2), Owner: "bob"})
	n := submit(t, q, jobqueue.JobRequest{Type: "rec", Payload: payload(3)})
	for id, want := range map[string]string{a: "alice", b: "bob", n: ""} {
		if got := get(t, q, id).Owner; got != want {
			t.Fatalf("Get(%s).Owner = %q, want %q", id, got, want)
		}
	}
	start(t, q)
	waitAll(t, q, []string{a, b, n})
	var kinds []jobqueue.EventKind
	for len(kinds) == 0 || !kinds[len(kinds)-1].Final() {
		ev := recv(t, sub.Events(), "alice's events")
		if ev.JobID != a || ev.Owner != "alice" {
			t.Fatalf("subscription to alice's jobs got %+v", ev)
		}
		kinds = append(kinds, ev.Kind)
	}
	if want := []jobqueue.EventKind{jobqueue.EventQueued, jobqueue.EventStarted, jobqueue.EventSucceeded}; !slices.Equal(kinds, want) {
		t.Fatalf("alice's events %v, want %v", kinds, want)
	}
	for _, info := range list(t, q, jobqueue.ListFilter{Limit: -1}) {
		want := map[string]string{a: "alice", b: "bob", n: ""}[info.ID]
		if info.Owner != want {
			t.Fatalf("List: job %s has owner %q, want %q", info.ID, info.Owner, want)
		}
	}
	if got := get(t, q, a); got.Owner != "alice" || got.State != jobqueue.StateSucceeded {
		t.Fatalf("finished job: owner %q state %s", got.Owner, got.State)
	}
}

func (s *suite) listByOwner(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true})
	var alice, bob []string
	for i := range 3 {
		alice = append(alice, submit(t, q, jobqueue.JobRequest{Type: "t", Payload: payload(i), Owner: "alice"}))
		if i < 2 {
			bob = append(bob, submit(t, q, jobqueue.JobRequest{Type: "u", Payload: payload(i), Owner: "bob"}))
		}
	}
	submit(t, q, jobqueue.JobRequest{Type: "t"})
	slices.Reverse(alice) // newest first
	slices.Reverse(bob)
	if got := ids(list(t, q, jobqueue.ListFilter{Owner: "alice"})); !slices.Equal(got, alice) {
		t.Fatalf("List(alice) = %v, want %v", got, alice)
	}
	if got := ids(list(t, q, jobqueue.ListFilter{Owner: "bob", Limit: 1})); !slices.Equal(got, bob[:1]) {
		t.Fatalf("List(bob, limit 1) = %v, want %v", got, bob[:1])
	}
	if got := list(t, q, jobqueue.ListFilter{Owner: "bob", Type: "t"}); len(got) != 0 {
		t.Fatalf("List(bob, type t) = %v, want none", ids(got))
	}
	if got := list(t, q, jobqueue.ListFilter{Owner: "carol"}); len(got) != 0 {
		t.Fatalf("List(carol) = %v, want none", ids(got))
	}
	if got := list(t, q, jobqueue.ListFilter{}); len(got) != 6 {
		t.Fatalf("List() returned %d jobs, want all 6", len(got))
	}
}

func (s *suite) listCursor(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true})
	owners := []string{"alice", "bob", ""}
	for i := range 23 {
		submit(t, q, jobqueue.JobRequest{Type: "t", Payload: payload(i), Owner: owners[i%3]})
	}
	walk := func(f jobqueue.ListFilter) []string {
		var all []string
		for pages := 0; ; pages++ {
			if pages > 30 {
				t.Fatalf("paging %+v does not end", f)
			}
			page := list(t, q, f)
			all = append(all, ids(page)...)
			if len(page) < f.Limit {
				return all
			}
			f.Cursor = page[len(page)-1].ID
		}
	}
	for _, f := range []jobqueue.ListFilter{{Limit: 5}, {Limit: 1}, {Limit: 23}, {Limit: 4, Owner: "alice"}} {
		want := ids(list(t, q, jobqueue.ListFilter{Limit: -1, Owner: f.Owner}))
		got := walk(f)
		if !slices.Equal(got, want) {
			t.Fatalf("paging %+v visited\n %v\nwant every job once, newest first:\n %v", f, got, want)
		}
		if !slices.IsSortedFunc(got, func(a, b string) int { return strings.Compare(b, a) }) {
			t.Fatalf("paging %+v: not newest first: %v", f, got)
		}
	}
	all := ids(list(t, q, jobqueue.ListFilter{Limit: -1}))
	if len(all) != 23 {
		t.Fatalf("List(no limit) returned %d jobs, want 23", len(all))
	}
	if got := ids(list(t, q, jobqueue.ListFilter{Limit: 3, Cursor: all[10]})); !slices.Equal(got, all[11:14]) {
		t.Fatalf("page after %s = %v, want %v", all[10], got, all[11:14])
	}
	if got := list(t, q, jobqueue.ListFilter{Cursor: all[22]}); len(got) != 0 {
		t.Fatalf("page after the oldest job = %v, want none", ids(got))
	}
}

func (s *suite) listSummary(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1, MaxAttempts: 1})
	q.Handle("echo", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		return job.Payload, nil
	}))
	q.Handle("fail", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		return nil, errors.New("first line\nsecond line")
	}))
	start(t, q)
	ok := submit(t, q, jobqueue.JobRequest{Type: "echo", Payload: payload(map[string]int{"n": 7}), Metadata: map[string]string{"k": "v"}})
	bad := submit(t, q, jobqueue.JobRequest{Type: "fail", Payload: payload(1)})
	wait(t, q, ok)
	wait(t, q, bad)
	for _, info := range list(t, q, jobqueue.ListFilter{Summary: true}) {
		if info.Payload != nil || info.Result != nil || info.Metadata != nil || strings.Contains(info.LastError, "\n") {
			t.Fatalf("summary of %s keeps payload %s, result %s, metadata %v or last error %q", info.ID, info.Payload, info.Result, info.Metadata, info.LastError)
		}
		if info.ID == bad && (info.LastError != "first line" || info.State != jobqueue.StateFailed) {
			t.Fatalf("summary of the failed job: state %s, last error %q; want failed, the first line", info.State, info.LastError)
		}
	}
	full := list(t, q, jobqueue.ListFilter{})
	if len(full) != 2 {
		t.Fatalf("List returned %d jobs, want 2", len(full))
	}
	for _, info := range full {
		switch info.ID {
		case ok:
			if string(info.Result) != `{"n":7}` || string(info.Payload) != `{"n":7}` || info.Metadata["k"] != "v" {
				t.Fatalf("full listing of %s: payload %s result %s metadata %v", ok, info.Payload, info.Result, info.Metadata)
			}
		case bad:
			if info.LastError != "first line\nsecond line" {
				t.Fatalf("full listing of the failed job: last error %q", info.LastError)
			}
		}
	}
	if info := get(t, q, ok); string(info.Result) != `{"n":7}` {
		t.Fatalf("Get after a summary: result %s", info.Result)
	}
}

func (s *suite) quotaMaxActive(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true})
	quota := jobqueue.Quota{MaxActive: 2}
	req := func(owner string) jobqueue.JobRequest {
		return jobqueue.JobRequest{Type: "t", Owner: owner, Quota: quota}
	}
	a1 := submit(t, q, req("alice"))
	submit(t, q, req("alice"))
	_, err := q.Submit(ctxT(t), req("alice"))
	refused(t, "Submit over MaxActive", err, jobqueue.ErrQuotaExceeded, "active")
	if n := len(list(t, q, jobqueue.ListFilter{Owner: "alice"})); n != 2 {
		t.Fatalf("alice has %d jobs after a refused Submit, want 2", n)
	}
	submit(t, q, req("bob")) // other owners are unaffected
	submit(t, q, req("bob"))
	for range 3 {
		submit(t, q, req("")) // no owner, no quota
	}
	if err := q.Cancel(ctxT(t), a1); err != nil {
		t.Fatal(err)
	}
	submit(t, q, req("alice")) // a finished job frees its room
}

func (s *suite) quotaMaxDelayed(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true})
	quota := jobqueue.Quota{MaxDelayed: 1}
	later := time.Now().Add(time.Hour)
	first := submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: quota, RunAt: later})
	_, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: quota, RunAt: later})
	refused(t, "Submit over MaxDelayed", err, jobqueue.ErrQuotaExceeded, "delayed")
	submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: quota}) // not delayed
	submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "bob", Quota: quota, RunAt: later})
	if err := q.Cancel(ctxT(t), first); err != nil {
		t.Fatal(err)
	}
	submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: quota, RunAt: later})
}

func (s *suite) quotaMaxBytes(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true})
	quota := jobqueue.Quota{MaxBytes: 100}
	req := func(owner string, n int) jobqueue.JobRequest {
		return jobqueue.JobRequest{Type: "t", Owner: owner, Quota: quota, Payload: sized(n)}
	}
	first := submit(t, q, req("alice", 60))
	_, err := q.Submit(ctxT(t), req("alice", 60))
	refused(t, "Submit over MaxBytes", err, jobqueue.ErrQuotaExceeded, "bytes")
	submit(t, q, req("alice", 40)) // 100 bytes: at the limit, not over
	submit(t, q, req("bob", 60))
	if err := q.Cancel(ctxT(t), first); err != nil {
		t.Fatal(err)
	}
	submit(t, q, req("alice", 60))
}

func (s *suite) quotaMaxDelay(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true})
	quota := jobqueue.Quota{MaxDelay: time.Minute}
	_, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: quota, RunAt: time.Now().Add(2 * time.Minute)})
	refused(t, "Submit past MaxDelay", err, jobqueue.ErrQuotaExceeded, "delay")
	submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: quota, RunAt: time.Now().Add(30 * time.Second)})
	submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "bob", Quota: quota, RunAt: time.Now().Add(30 * time.Second)})
	submit(t, q, jobqueue.JobRequest{Type: "t", Quota: quota, RunAt: time.Now().Add(2 * time.Hour)}) // no owner
	if _, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "t", Owner: "alice", Quota: jobqueue.Quota{MaxActive: -1}}); !errors.Is(err, jobqueue.ErrInvalidJob) {
		t.Fatalf("Submit with a negative quota = %v, want ErrInvalidJob", err)
	}
}

func (s *suite) maxBytesFull(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true, MaxBytes: 1000})
	first := submit(t, q, jobqueue.JobRequest{Type: "t", Payload: sized(400), Owner: "alice"})
	submit(t, q, jobqueue.JobRequest{Type: "t", Payload: sized(400), Owner: "bob"})
	_, err := q.Submit(ctxT(t), jobqueue.JobRequest{Type: "t", Payload: sized(400), Owner: "carol"})
	refused(t, "Submit past MaxBytes", err, jobqueue.ErrQueueFull, "bytes")
	submit(t, q, jobqueue.JobRequest{Type: "t", Payload: sized(200)}) // 1000: at the bound
	if err := q.Cancel(ctxT(t), first); err != nil {
		t.Fatal(err)
	}
	submit(t, q, jobqueue.JobRequest{Type: "t", Payload: sized(400), Owner: "carol"})
}

func (s *suite) maxBytesEvicts(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1, MaxBytes: 1000})
	q.Handle("echo", jobqueue.HandlerFunc(func(ctx context.Context, job *jobqueue.Job) (json.RawMessage, error) {
		return job.Payload, nil
	}))
	start(t, q)
	// Each finished job keeps 300 bytes of payload and 300 of result.
	first := submit(t, q, jobqueue.JobRequest{Type: "echo", Payload: sized(300)})
	if _, err := wait(t, q, first); err != nil {
		t.Fatal(err)
	}
	get(t, q, first)
	second := submit(t, q, jobqueue.JobRequest{Type: "echo", Payload: sized(300)})
	if _, err := wait(t, q, second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the oldest finished job to be dropped for bytes", func() bool {
		_, err := q.Get(ctxT(t), first)
		return errors.Is(err, jobqueue.ErrNotFound)
	})
	if info := get(t, q, second); len(info.Result) != 300 {
		t.Fatalf("newest finished job: result of %d bytes, want 300", len(info.Result))
	}
}

func (s *suite) idempotentSubmit(t *testing.T) {
	q := s.queue(t, jobqueue.Config{Workers: 1})
	var r recorder
	jobqueue.HandleFunc(q, "rec", r.handle)
	id := q.NewID()
	if got := submit(t, q, jobqueue.JobRequest{ID: id, Type: "rec", Payload: payload(1), Owner: "alice"}); got != id {
		t.Fatalf("Submit = %q, want %q", got, id)
	}
	if got, err := q.Submit(ctxT(t), jobqueue.JobRequest{ID: id, Type: "rec", Payload: payload(2), Owner: "alice"}); got != id || err != nil {
		t.Fatalf("repeated Submit by the owner = %q, %v; want %q, nil", got, err, id)
	}
	for _, other := range []string{"bob", ""} {
		_, err := q.Submit(ctxT(t), jobqueue.JobRequest{ID: id, Type: "rec", Payload: payload(3), Owner: other})
		refused(t, "Submit with another owner's ID", err, jobqueue.ErrInvalidJob, "ID in use")
	}
	start(t, q)
	if _, err := wait(t, q, id); err != nil {
		t.Fatal(err)
	}
	if got, err := q.Submit(ctxT(t), jobqueue.JobRequest{ID: id, Type: "rec", Payload: payload(4), Owner: "alice"}); got != id || err != nil {
		t.Fatalf("repeated Submit of a finished job = %q, %v; want %q, nil", got, err, id)
	}
	info, err := q.Run(ctxT(t), jobqueue.JobRequest{ID: id, Type: "rec", Payload: payload(5), Owner: "alice"})
	if err != nil || info.ID != id || string(info.Result) != "1" {
		t.Fatalf("repeated Run = %+v, %v; want the first job's result", info, err)
	}
	if got := r.got(); !slices.Equal(got, []int{1}) {
		t.Fatalf("ran %v, want [1]: repeated submissions must not run", got)
	}
	if st := q.Stats(); st.Submitted != 1 {
		t.Fatalf("Stats.Submitted = %d, want 1", st.Submitted)
	}
}

func (s *suite) usage(t *testing.T) {
	q := s.queue(t, jobqueue.Config{NoWorkers: true})
	if _, err := q.Usage(ctxT(t), "alice"); errors.Is(err, errors.ErrUnsupported) {
		t.Skipf("backend reports no usage: %v", err)
	}
	usage := func(owner string, want jobqueue.Usage) {
		t.Helper()
		got, err := q.Usage(ctxT(t), owner)
		if err != nil || got != want {
			t.Fatalf("Usage(%q) = %+v, %v; want %+v", owner, got, err, want)
		}
	}
	submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "alice", Payload: sized(10)})
	delayed := submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "alice", Payload: sized(20), RunAt: time.Now().Add(time.Hour)})
	submit(t, q, jobqueue.JobRequest{Type: "t", Owner: "bob", Payload: sized(5)})
	submit(t, q, jobqueue.JobRequest{Type: "t", Payload: sized(7)})
	usage("alice", jobqueue.Usage{Active: 2, Delayed: 1, Bytes: 30})
	usage("bob", jobqueue.Usage{Active: 1, Bytes: 5})
	usage("", jobqueue.Usage{Active: 1, Bytes: 7})
	usage("carol", jobqueue.Usage{})
	if err := q.Cancel(ctxT(t), delayed); err != nil {
		t.Fatal(err)
	}
	usage("alice", jobqueue.Usage{Active: 1, Bytes: 10})
}

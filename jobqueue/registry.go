package jobqueue

// entry is a registered handler with its per-type statistics.
type entry struct {
	h   Handler
	c   counters
	run histogram
}

// Handle registers h for jobs of type jobType, wrapped in the middleware
// registered so far with Use. It may be called before or after Start. It
// panics if jobType is empty, h is nil, or jobType already has a handler.
func (q *Queue) Handle(jobType string, h Handler) {
	if jobType == "" {
		panic("jobqueue: Handle with an empty job type")
	}
	if h == nil {
		panic("jobqueue: nil handler for " + jobType)
	}
	if f, ok := h.(HandlerFunc); ok && f == nil {
		panic("jobqueue: nil handler for " + jobType)
	}
	q.hmu.Lock()
	defer q.hmu.Unlock()
	old := q.handlers.Load()
	if old != nil {
		if _, dup := (*old)[jobType]; dup {
			panic("jobqueue: multiple registrations for " + jobType)
		}
	}
	for i := len(q.mws) - 1; i >= 0; i-- {
		h = q.mws[i](h)
	}
	m := make(map[string]*entry, 1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[jobType] = &entry{h: h}
	q.handlers.Store(&m)
}

// Use appends middleware applied to every handler registered afterwards;
// the first one registered is the outermost. It panics if a middleware is
// nil or a handler is already registered (middleware must come first, so
// every handler gets the same chain).
func (q *Queue) Use(mw ...Middleware) {
	q.hmu.Lock()
	defer q.hmu.Unlock()
	if m := q.handlers.Load(); m != nil && len(*m) > 0 {
		panic("jobqueue: Use after Handle")
	}
	for _, f := range mw {
		if f == nil {
			panic("jobqueue: nil middleware")
		}
	}
	q.mws = append(q.mws, mw...)
}

func (q *Queue) entry(jobType string) *entry {
	if m := q.handlers.Load(); m != nil {
		return (*m)[jobType]
	}
	return nil
}

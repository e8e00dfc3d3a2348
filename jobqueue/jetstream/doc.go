// Package jetstream is the durable and distributed backend of package
// jobqueue, on NATS JetStream. The same handlers and callers that run on
// the in-memory backend run here unchanged, with jobs that survive a crash
// and workers in many processes on many machines sharing one priority
// queue.
//
// Three ways to get a backend:
//
//   - Embedded(dir) starts a NATS server inside the process with its
//     streams in files under dir: the durable single-machine mode (jobs
//     survive a crash or restart of the program on the same directory).
//   - NewServer(dir, WithListen(addr)) starts such a server that other
//     processes join with Connect; Server.Backend connects in-process.
//   - Connect(url) joins an existing NATS server or cluster.
//
// A queue on an embedded server:
//
//	backend, err := jetstream.Embedded("/var/lib/myapp/queue")
//	if err != nil { ... }
//	q, err := jobqueue.New(jobqueue.Config{Backend: backend})
//	if err != nil { ... }
//	jobqueue.HandleFunc(q, "resize", resize)
//	q.Start()
//	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "resize", Payload: p, Priority: jobqueue.High})
//	info, err := q.Wait(ctx, id)
//	...
//	q.Shutdown(ctx) // closes the backend, which stops the embedded server
//
// # How the queue maps onto JetStream
//
// Each queue has a name (WithName, default "corework") that prefixes its
// streams, bucket and subjects:
//
//	COREWORK_JOBS    work-queue stream, subjects corework.q.<level>.<job id>: jobs ready or leased;
//	                 MaxMsgs = Config.Capacity with DiscardNew (a full stream is ErrQueueFull)
//	COREWORK_SCHED   work-queue stream, subjects corework.s.<job id>: delayed jobs until RunAt
//	KV COREWORK_STATE  state of leased jobs (running, retrying, progress, attempts) and unique keys
//	COREWORK_DONE    finished jobs with their result or error, for Get, List and Wait;
//	                 MaxMsgs = Retention.MaxJobs, MaxAge = Retention.MaxAge (at least 100ms)
//	COREWORK_DLQ     dead letters: every job that failed for good (see Backend.DeadLetters)
//
// Priorities. JetStream has no per-message priority, so each of the ten
// levels has its own subject and its own durable pull consumer
// (level0 ... level9) with explicit acks. One dispatcher goroutine per
// process adds up what its idle workers want and pulls that many jobs,
// highest level first, with no-wait pull requests; a level that came back
// short is skipped until a new-job signal (a small core NATS message sent
// when a job is stored, a delayed job released or a retry comes due), or
// until the poll interval (WithPollInterval), which also finds jobs
// redelivered after a crash. Within a level, order is the stream's: FIFO.
// With Config.AgingInterval, the oldest waiting job of each level is looked
// up every half interval and ranks one level higher per interval waited, as
// in the memory backend, so a flood of high jobs cannot starve a low one.
// Across processes priority is per pull: a process never takes a lower job
// while it sees a higher one, but two processes pulling at the same moment
// each take the best job they see.
//
// Leases. A delivered message is a lease that lasts the consumer's AckWait
// (WithAckWait, default 30s). The worker claims it with a compare-and-set
// on the job's entry in the state bucket (state running, attempt n+1), which
// also settles races with Cancel and drops deliveries of jobs already
// finished. While the handler runs, the Queue extends the lease every third
// of AckWait with an InProgress acknowledgement (the backend implements
// jobqueue.LeaseKeeper). A process that dies stops extending: after AckWait
// JetStream delivers the job again, to any worker, as a new attempt.
// Success writes the final state, stores the result in DONE and acks the
// message, which removes it from the work queue. A failure with attempts
// left records the error and naks the message with the retry delay
// (NakWithDelay); JetStream delivers it again when the delay is over. A
// failure for good terminates the message (Term) and copies the job to the
// dead-letter stream. MaxAttempts is per job, so the consumers' MaxDeliver
// is unlimited and the attempt count lives in the state bucket: a delivery
// that never started an attempt (a worker shutting down gives a fetched
// job back) does not use one up, and a job whose worker died during its
// last attempt fails with an error saying so instead of running again.
//
// Delayed jobs wait in the SCHED stream; a scheduler in every process naks
// each one until its RunAt and then moves it to its level. (JetStream's own
// message schedules cannot be used on a stream with DiscardNew, which is
// how Capacity is enforced.)
//
// Deduplication. A job is stored with its ID as Nats-Msg-Id, so a store
// repeated within two minutes (a retried Submit) is dropped by the server.
// A UniqueKey is claimed with a compare-and-set on an entry of the state
// bucket that names the job owning it until that job finishes.
//
// Cancel of a job that is not running removes it at once (compare-and-set
// on its state entry, then its message is deleted). Cancel of a running job
// marks its entry and sends the job ID on the cancel subject of the process
// running it (corework.cancel.<queue tag>); that process cancels the
// handler's context, and the mark makes the job end canceled even if the
// message was lost or the process died.
//
// Events of jobs submitted or run by other processes arrive on corework.ev
// (batched: each message holds up to a millisecond of events, one JSON
// object per line) and reach this process's subscribers and waiters.
//
// # At least once: handlers must be idempotent
//
// A job is delivered at least once: normally exactly once, but a handler
// may run again for the same job when its process dies (or stalls longer
// than AckWait, or loses its connection) after the handler did its work but
// before the success was stored. Write handlers so that a second run is
// harmless: use Job.ID as an idempotency key (an upsert keyed by it, a
// unique constraint, a "processed" marker written in the same transaction
// as the effect), or check for the effect before redoing it. The attempt
// number is available through jobqueue.JobFromContext. A stalled process
// whose lease was taken over cannot overwrite the new attempt's outcome:
// its settlement fails with ErrLeaseLost.
//
// # A three-node cluster
//
// In production, run three NATS servers with JetStream and give the queue
// three replicas of everything (WithReplicas(3)); any one server can fail
// without losing a job. nats-server.conf on node 1 (nodes 2 and 3 differ in
// server_name and store_dir):
//
//	server_name: n1
//	listen: 0.0.0.0:4222
//	jetstream {
//	  store_dir: /var/lib/nats
//	  max_file_store: 100G
//	}
//	cluster {
//	  name: corework
//	  listen: 0.0.0.0:6222
//	  routes: [
//	    nats://n1.example.internal:6222
//	    nats://n2.example.internal:6222
//	    nats://n3.example.internal:6222
//	  ]
//	}
//
// and in every worker and producer:
//
//	backend, err := jetstream.Connect("nats://n1:4222,nats://n2:4222,nats://n3:4222",
//		jetstream.WithReplicas(3), jetstream.WithAckWait(time.Minute))
//
// # Costs and limits
//
// A job costs one message in the jobs stream, a claim and a final write in
// the state bucket, a record in DONE (stored after the worker moves on),
// an acknowledgement, and three events in shared batches;
// BenchmarkEndToEnd measures the whole path on an embedded file-backed
// server. Get reads the four stores a job moves through (four
// direct gets); Stats costs about fifteen requests and a scan of the leased
// jobs; List is O(jobs kept) and meant for inspection. Capacity counts the
// jobs in the jobs stream (ready, leased, retrying); delayed jobs have a
// capacity of their own in SCHED. Stream settings such as Capacity, the
// retention bounds and AckWait are shared by every process of a queue; the
// last one to open sets them. After the Queue's Shutdown, Get, List and
// Stats still answer over a new connection while the server runs (an
// Embedded backend's server stops with it). It needs nats-server 2.11 or
// later (per-message TTLs).
//
// # Logging
//
// WithLogger gives the backend a *slog.Logger for what the Queue cannot
// see: the connection lost, regained or closed for good, a lease lost to
// another delivery, a job redelivered after its worker's lease expired, a
// job dead-lettered and a stored message that does not decode. Pass the
// same logger as jobqueue.Config.Logger to see both sides in one stream.
// Without it the backend is silent.
//
// Panic policy: the backend does not run handlers and never panics on
// what it reads; a stored job that does not decode is dead-lettered and
// terminated with ErrBadMessage.
package jetstream

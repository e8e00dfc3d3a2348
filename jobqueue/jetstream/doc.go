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
//	KV COREWORK_STATE  state of leased jobs (running, retrying, progress, attempts): j.<job id>;
//	                 unique keys: u.<hash of owner and key>; usage counters: o.<hash of owner>
//	                 (an owner's active and delayed jobs and payload bytes) and g.bytes (the
//	                 payload bytes of the active jobs, for Config.MaxBytes)
//	COREWORK_DONE    finished jobs with their result or error, for Get, List and Wait;
//	                 MaxMsgs = Retention.MaxJobs, MaxAge = Retention.MaxAge (at least 100ms),
//	                 MaxBytes = Config.MaxBytes + 512 with DiscardOld (the oldest go first)
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
// repeated within two minutes is dropped by the server. An ID the Queue
// made for the Submit at hand is new (its time says so) and is stored
// without a lookup; any other ID (the caller's, or one from Queue.NewID,
// which a client may submit again after a dropped connection) is looked up
// first: a job still kept under it answers the repeated submission (same
// owner: its ID, nothing stored or counted; another owner: ErrInvalidJob).
// A UniqueKey is claimed with a compare-and-set on an entry of the state
// bucket, keyed by a hash of the owner and the key (keys are per owner),
// that names the job owning it until that job finishes.
//
// Cancel of a job that is not running removes it at once (compare-and-set
// on its state entry, then its message is deleted). Cancel of a running job
// marks its entry and sends the job ID on the cancel subject of the process
// running it (corework.cancel.<queue tag>); that process cancels the
// handler's context, and the mark makes the job end canceled even if the
// message was lost or the process died.
//
// Events of jobs submitted or run by other processes arrive on corework.ev
// (batched: each message holds up to a millisecond of events, one per
// line in jobqueue's JSON encoding of Event, the one the WebSocket bridge
// sends) and reach this process's subscribers and waiters.
//
// # Owners, quotas and the byte budget
//
// Job.Owner is stored with the job (its message and every record) and
// carried by every event. ListFilter.Owner, Cursor and Summary are applied
// while listing; the jobs known only by their messages are read in
// batches (direct gets of a few hundred messages per request), and with
// Summary their payloads and results are dropped as they are read.
//
// Quotas are enforced on usage counters in the state bucket: one entry
// per owner with active jobs (active jobs, delayed jobs, payload bytes),
// updated with compare-and-set, so the check holds across processes. A
// submission adds its job to its owner's counter (checking
// jobqueue.Quota.Check against the value it replaces) before storing it,
// and takes it back if the store is refused; the write that makes a job's
// state final (success, failure, cancel) takes it off before the final
// event goes out, so an owner at its quota can submit again as soon as it
// hears a job end; and whoever removes a delayed job's message from SCHED
// (its release, or Cancel; the server lets one deletion succeed) ends its
// delay. Writes of one counter made at the same moment in one process are
// applied together, one write for the lot. Jobs with no owner have no
// counter, so library callers pay nothing for quotas; a job with an owner
// costs a counter write when submitted and one when it ends (and one when
// a delayed job is released). Usage (jobqueue.UsageReporter) reads an
// owner's counter; for the jobs with no owner it reads every active job.
//
// Config.MaxBytes bounds the payload bytes of the active jobs with one
// more counter, g.bytes, kept like an owner's: a job with a payload costs
// a write when submitted and one when it ends, and one that would take the
// sum past MaxBytes is refused with ErrQueueFull (or waits, with
// BlockOnFull); jobs without a payload cost nothing. That counter is
// shared by every process of the queue, so under a heavy load of jobs with
// payloads from many processes their compare-and-sets conflict and are
// retried; a negative MaxBytes does without it. The finished jobs'
// records are bounded by the DONE stream's MaxBytes (MaxBytes plus room for
// one record's envelope), from which JetStream drops the oldest. Unlike the
// memory backend, the two are bounded separately, each by MaxBytes, so the
// disk holds up to about twice MaxBytes of jobs, and DONE counts records as
// stored (fields, subject and headers included).
//
// Consistency of the counters. While processes live they are exact: each
// change is made by the one operation that changes the job's state (a
// compare-and-set or a message deletion that only one process can win),
// and each counter write carries a message ID, so a write repeated after a
// lost reply is applied once. A process that dies (or loses the server for
// longer than a request timeout) between a job's store and its counter
// write leaves the counter too high, never too low: quotas and the byte
// budget get tighter, never looser. Such drift is repaired when the queue
// idles: every few request timeouts each process checks whether JOBS and
// SCHED are empty, and resets to zero the counters still above zero that
// did not change across three such checks in a row (each counter write
// follows its store within a request timeout, so none can be on its way).
// A queue that never empties keeps its drift until it does; it assumes no
// process stalls for longer than three request timeouts between a store
// and its counter write.
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
// # Outages and failovers
//
// The connection reconnects on its own (Connect) after a server restart or
// a failover to another node. Two things could go wrong across it, and
// neither does:
//
//   - A Submit (Enqueue) whose request was in flight when the connection
//     dropped has lost its reply. It does not wait out the request timeout
//     (WithRequestTimeout, 10 s): it abandons the request at the
//     disconnect, waits for the reconnect (within its context and a request
//     timeout), and sends the same message again on the new connection,
//     with the timeout counted afresh. The job ID is the message's
//     Nats-Msg-Id, so a job the server did store before the break is not
//     stored twice (the server's duplicate window is two minutes); a
//     duplicate reply to a repeat counts as this Submit's own store. A "no
//     responders" reply just after a reconnect (JetStream still starting or
//     electing a leader, nothing stored) is retried too. TestSubmitAcrossRestart
//     loses requests and replies at a proxy and restarts the server under four
//     submitting loops: no Submit fails, none takes more than 3 s beyond the
//     outage it spans, no job is stored twice.
//   - A final event published while a waiting process was disconnected
//     is lost to it. The backend implements jobqueue.Resyncer: Queue.Wait and
//     Queue.Run re-read the job's state after every reconnect and every
//     AckWait (clamped to 1-5 s) while they wait, so they return within
//     about AckWait plus that interval of the job's end. A wait whose final
//     event arrives costs no extra read. TestWaitSurvivesOutage stops the
//     server 1 s into a 3 s job for 4 s: Wait returns the succeeded job well
//     within AckWait + 5 s of the restart.
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
// The embedded server does the same without a configuration file: on each
// node, with its own name and addresses,
//
//	srv, err := jetstream.NewServer("/var/lib/corework",
//		jetstream.WithServerName("n1"),
//		jetstream.WithListen("0.0.0.0:4222"),
//		jetstream.WithCluster("10.0.0.1:6222"), // routes from the other nodes
//		jetstream.WithRoutes("nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222",
//			"nats-route://10.0.0.3:6222"))
//
// (examples/cluster server -name -cluster -routes wraps this). Every node
// needs a name of its own; they share the cluster name (WithClusterName,
// default "corework") and the list of routes (a node ignores its own).
// WithReplicas(3) needs three nodes with JetStream, each holding one copy
// of every stream and bucket, and a majority (two) up to accept and run
// jobs: with one node down the queue goes on; with two down it stops until
// one is back, and loses nothing it had accepted. Streams can be created
// once the cluster has elected a leader, shortly after two nodes are up;
// a Connect before that fails and should be retried.
//
// Reads go to each stream's leader when there is more than one replica
// (direct gets, which any replica answers, are used with one only), so a
// process reads its own writes: Get finds a job the moment Submit returns
// and its final state the moment Wait does, whichever server it is
// connected to (TestClusterReadsItsWrites). The price is that every read
// crosses to the leader's server.
//
// A server listening on an address other machines reach serves whoever
// connects: any of them could read, change or delete every job. Give every
// node and every worker and producer the same WithToken (or configure
// authorization in nats-server.conf): the nodes then accept only clients
// and routes that present it. The token and the jobs travel in clear: keep
// the nodes on a private network, or add TLS (WithNATSOptions on the
// clients, a nats-server of your own for the server side). TestToken and
// TestTokenCluster check that clients without the token are refused and
// that a cluster with one still forms.
//
// TestThreeNodeCluster runs three such servers on loopback under a queue
// with three replicas, abruptly stops the jobs stream's leader mid-run
// (and restarts it), then the node the client is connected to: no
// accepted job is lost, and the jobs whose runs were cut by a stop run
// again (a few per stop; handlers must be idempotent, see above).
// BenchmarkCluster measures the price of the copies on one machine with
// two cores (three servers sharing them, loopback TCP): about 5,800 jobs/s
// with one replica, 2,600 with three.
//
// # Costs and limits
//
// A job costs one message in the jobs stream, a claim and a final write in
// the state bucket, a record in DONE (stored after the worker moves on),
// an acknowledgement, and three events in shared batches; a job with an
// owner or a payload adds the counter writes above. BenchmarkEndToEnd
// measures the whole path on an embedded file-backed server ("owners"
// with an owner and a payload per job). Get reads the four stores a job
// moves through (four direct gets); Stats costs about fifteen requests and
// a scan of the leased jobs; List is O(jobs kept) and meant for
// inspection, as is Usage of the jobs with no owner. Capacity counts the
// jobs in the jobs stream (ready, leased, retrying); delayed jobs have a
// capacity of their own in SCHED. Stream settings such as Capacity, the
// retention bounds, MaxBytes for DONE and AckWait are shared by every
// process of a queue; the last one to open sets them (the byte budget of
// the active jobs is checked against each process's own MaxBytes, so give
// them all the same). After the Queue's Shutdown, Get, List, Stats and
// Usage still answer over a new connection while the server runs (an
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

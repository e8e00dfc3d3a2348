// Package wsbridge bridges WebSocket clients to a jobqueue.Queue: a browser
// or a Go program sends a job over a WebSocket, the queue runs it on a
// worker, and the job's progress and result come back on the same socket.
// It is the asynchronous-server lesson of corework: one process keeps
// thousands of connections responsive while the heavy work runs on workers
// on the other CPUs.
//
//	q, _ := jobqueue.New(jobqueue.Config{})
//	jobqueue.HandleFunc(q, "fibonacci", fibonacci)
//	q.Start()
//	operator := wsbridge.NewToken() // print http://127.0.0.1:8765/?token=<operator>
//	bridge := wsbridge.New(q, wsbridge.Config{
//		Authenticate: wsbridge.OptionalTokenAuth(map[string]wsbridge.Principal{
//			operator: {Name: "operator", Operator: true},
//		}),
//		Fallback: wsbridge.Dashboard(),
//	})
//	srv := &http.Server{Addr: "127.0.0.1:8765", Handler: bridge}
//	go srv.ListenAndServe()
//	// ... on exit:
//	srv.Shutdown(ctx)    // no new connections
//	bridge.Shutdown(ctx) // close 1001 to every client, wait for them
//	q.Shutdown(ctx)
//
// A client needs nothing but the browser's WebSocket:
//
//	const ws = new WebSocket('ws://127.0.0.1:8765');
//	ws.onmessage = (event) => console.log(JSON.parse(event.data));
//	ws.onopen = () => ws.send(JSON.stringify(
//		{command: 'submit_job', task_type: 'fibonacci', data: {n: 35}}));
//
// and Go programs use Dial:
//
//	c, _ := wsbridge.Dial(ctx, "ws://127.0.0.1:8765")
//	id, _ := c.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: []byte(`{"n":35}`)})
//	info, err := c.Wait(ctx, id) // info.Result is {"n":35,"result":9227465}
//
// # Principals
//
// Every connection acts for a principal, and every job it submits is owned
// by it (jobqueue.Job.Owner). Config.Authenticate maps the upgrade request
// to a Principal: TokenAuth requires a token naming one, OptionalTokenAuth
// also admits requests without a token, and any wrong token is refused
// with HTTP 401. An anonymous connection is a principal of its own, named
// "anon-" plus 16 random characters; its `welcome` message carries a resume
// credential (the name and an HMAC of it with Config.ResumeKey, so the
// server keeps nothing per principal) which, presented on a later
// connection as the "resume" query parameter or the Wsbridge-Resume
// header, gives the same principal back and with it its jobs.
//
// A principal sees and acts on its own jobs only: job_status, subscribe and
// cancel_job answer another principal's job exactly like an unknown one
// (not_found, same message), list_jobs lists its own jobs, and a subscribe
// to every job delivers its own jobs' events. An operator principal sees,
// follows and cancels every job, and may list another principal's with
// "owner". The `stats` messages carry server-wide figures (counts, rates,
// CPU), never jobs, to everyone.
//
// # Quotas
//
// Config.Quota bounds what one principal holds and does at once; anonymous
// connections from one address share one quota, so that more sockets buy
// no more room. Behind a reverse proxy every connection comes from the
// proxy's address: Config.TrustedProxies names the proxies whose
// X-Forwarded-For tells the client's (TestTrustedProxyQuotas). The job limits (active jobs, delayed jobs, the latest
// run_at, payload bytes) are checked by the queue against all the
// principal's jobs, and for anonymous connections also by the server
// against the jobs their address submitted through it; a submit over one
// gets an `error` with code quota, and the connection stays open. Past 10
// such refusals in 100 ms, the principal's connections read no command
// until the 100 ms are over, so that a client that keeps sending over its
// quota costs the server little. Watches are counted per principal too.
// Commands in flight and bytes queued are not refused but paced: at
// Quota.MaxInFlight commands read and not yet answered, or MaxQueuedBytes
// waiting to be written, the server stops reading the principal's
// connections until replies are written, and TCP slows the client down.
// Operators have no job or watch limit by default (Config.QuotaFor).
//
// # Protocol
//
// Every message is a JSON object in a text frame. The server's first
// message on a connection is
//
//	welcome   {principal, operator?, resume?, quota}
//
// where resume is the anonymous principal's credential and quota its
// limits (max_active, max_delayed, max_delay in seconds, max_bytes,
// max_in_flight, max_queued_bytes, max_watches; absent means none). A
// client sends commands, each with a "command" field and an optional "id"
// (a string or number, at most 128 bytes) that the server echoes in its
// reply:
//
//	submit_job   {id?, task_type, data?, priority?, timeout?, max_attempts?, unique_key?, metadata?, run_at?, job_id?}
//	             -> ack {id, command, job_id}, then the job's events
//	job_status   {id?, job_id}        -> status {id, job}
//	cancel_job   {id?, job_id}        -> ack {id, command, job_id}; the canceled event follows
//	subscribe    {id?, job_id?}       -> ack; for one job also status {id, job}, then its events
//	unsubscribe  {id?, job_id?}       -> ack
//	list_jobs    {id?, task_type?, state?, limit?, cursor?, owner?} -> jobs {id, jobs, next_cursor}
//	stats        {id?, watch?}        -> stats {id, bridge, queue, system?}
//	ping         {id?}                -> pong {id, time}
//
// priority is a level from 0 (low) to 9 (critical) or one of the names
// "low", "normal", "high", "critical"; timeout is seconds as a number or a
// Go duration string ("1m30s"); data is the job's payload, any JSON value.
// job_id on submit_job chooses the job's ID (1-64 letters, digits, '-' or
// '_'; make it hard to guess): submitting it again returns the same job
// rather than a second one, so a client can retry a submit whose reply it
// lost; another principal's ID is refused with invalid_job. unique_key
// deduplicates among the principal's own active jobs. A subscribe without
// job_id follows every job the principal may see; "watch": true on stats
// pushes a stats message every Config.StatsInterval until "watch": false.
//
// list_jobs returns summaries, newest first: no payload, result or
// metadata (job_status returns one job in full). limit is 1 to 1000,
// default 100; a page also ends before it would pass Config.ListBytes
// (256 KiB), and next_cursor is then the cursor of the next page: pass it as
// "cursor" with the same filter. An empty next_cursor means the last page.
// owner (operators only) lists one principal's jobs.
//
// The server sends, with "type" first:
//
//	welcome   {principal, operator?, resume?, quota}
//	ack       {id?, command, job_id?}
//	queued, started, progress, retrying, succeeded, failed, canceled
//	          {job_id, task_type, owner?, priority, state, attempt?, progress?, message?,
//	           error?, result?, next_run_at?, time}  - the job's events (jobqueue.Event's JSON)
//	error     {id?, command?, job_id?, code, message}
//	status    {id?, job}              - a jobqueue.JobInfo
//	jobs      {id?, jobs, next_cursor}
//	stats     {id?, bridge, queue, system?} - Stats, jobqueue.Stats, Config.SystemStats
//	pong      {id?, time}
//
// A client that submits a job watches it: it receives the job's events
// after the ack (a fast job's queued and started events may be skipped, its
// final event never is). A job has exactly one final event (succeeded,
// failed or canceled) per watching client. A client that reconnects (as
// the same principal) and subscribes to a job id gets its current state
// (status) and, if the job finished meanwhile, its final event with the
// result, as long as the queue's retention keeps the job.
//
// An error message leaves the connection open. Its code is one of bad_json,
// unknown_command, bad_request (malformed commands), invalid_job,
// no_handler, queue_full, not_found, finished, closed (the queue's errors),
// quota (over a Quota limit), events_lost (the server fell behind the
// queue: list_jobs to resynchronize) and internal.
//
// # Connections
//
// Before the upgrade the server checks the Host header against
// Config.Hosts (by default: a loopback name on a connection to a loopback
// address, the local address's IP literal on any other), and the Origin
// header against the server's own names and Config.AllowedOrigins, both
// refused with HTTP 403: a page of another site, even one whose name an
// attacker made resolve to the server (DNS rebinding), cannot connect.
// Then Config.Authenticate, refused with 401 or 403. Then:
//
//   - every frame a connection sends, pongs and close frames included, is
//     written by its one writer goroutine, from a queue bounded in bytes;
//     a client that lets Config.SendQueueBytes of pushed messages (events,
//     stats, pongs) pile up is closed with 4008 (CloseSlowConsumer) and
//     never slows the others. Replies to its own commands are paced by
//     Quota.MaxInFlight instead, so a client that sends without pausing
//     but keeps reading is never closed;
//   - a message above Config.MaxMessageSize, counted across its fragments,
//     closes the connection with 1009; invalid UTF-8 with 1007; a binary
//     message with 1003; a protocol violation with 1002;
//   - ping, pong and close frames between the fragments of a message are
//     handled as they arrive;
//   - the server pings every Config.PingInterval and drops a client silent
//     for PingInterval+PongTimeout; every write has Config.WriteTimeout;
//   - Shutdown sends 1001 (going away) to every client and waits for them.
//
// An idle connection holds no writer goroutine and no write buffer: its
// cost is its reader goroutine's stack, a small read buffer
// (Config.ReadBufferSize) and the socket, about 5 KiB in all
// (BenchmarkIdleConnections).
//
// # Panics and errors
//
// New panics on a nil queue, and TokenAuth and OptionalTokenAuth on a bad
// token table; nothing else panics. Errors that end a connection abnormally go to Config.OnError and
// are counted in Stats. Config.Logger, if set, gets a structured record of
// every connection opened and closed (with its close code), every refused
// upgrade and every slow consumer; a Client logs its reconnections and
// dropped events to WithLogger's. The Server's goroutines never run job handlers:
// handlers run on the queue's workers under the queue's panic policy.
package wsbridge

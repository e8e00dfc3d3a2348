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
//	bridge := wsbridge.New(q, wsbridge.Config{Fallback: wsbridge.Dashboard()})
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
// # Protocol
//
// Every message is a JSON object in a text frame. A client sends commands,
// each with a "command" field and an optional "id" (a string or number, at
// most 128 bytes) that the server echoes in its reply:
//
//	submit_job   {id?, task_type, data?, priority?, timeout?, max_attempts?, unique_key?, metadata?, run_at?}
//	             -> ack {id, command, job_id}, then the job's events
//	job_status   {id?, job_id}        -> status {id, job}
//	cancel_job   {id?, job_id}        -> ack {id, command, job_id}; the canceled event follows
//	subscribe    {id?, job_id?}       -> ack; for one job also status {id, job}, then its events
//	unsubscribe  {id?, job_id?}       -> ack
//	list_jobs    {id?, task_type?, state?, limit?} -> jobs {id, jobs}
//	stats        {id?, watch?}        -> stats {id, bridge, queue, system?}
//	ping         {id?}                -> pong {id, time}
//
// priority is a level from 0 (low) to 9 (critical) or one of the names
// "low", "normal", "high", "critical"; timeout is seconds as a number or a
// Go duration string ("1m30s"); data is the job's payload, any JSON value.
// A subscribe without job_id follows every job; "watch": true on stats
// pushes a stats message every Config.StatsInterval until "watch": false.
//
// The server sends, with "type" first:
//
//	ack       {id?, command, job_id?}
//	queued, started, progress, retrying, succeeded, failed, canceled
//	          {job_id, task_type, priority, state, attempt?, progress?, message?,
//	           error?, result?, next_run_at?, time}  - the job's events
//	error     {id?, command?, job_id?, code, message}
//	status    {id?, job}              - a jobqueue.JobInfo
//	jobs      {id?, jobs}
//	stats     {id?, bridge, queue, system?} - Stats, jobqueue.Stats, Config.SystemStats
//	pong      {id?, time}
//
// A client that submits a job watches it: it receives the job's events
// after the ack (a fast job's queued and started events may be skipped, its
// final event never is). A job has exactly one final event (succeeded,
// failed or canceled) per watching client. A client that reconnects and
// subscribes to a job id gets its current state (status) and, if the job
// finished meanwhile, its final event with the result, as long as the
// queue's retention keeps the job.
//
// An error message leaves the connection open. Its code is one of bad_json,
// unknown_command, bad_request (malformed commands), invalid_job,
// no_handler, queue_full, not_found, finished, closed (the queue's errors),
// too_many_watches, events_lost (the server fell behind the queue: list_jobs
// to resynchronize) and internal.
//
// # Connections
//
// The server checks the Origin header against Config.AllowedOrigins (by
// default the request's own host) and calls Config.Authorize (see
// TokenAuth) before the upgrade, refusing with HTTP 403. Then:
//
//   - every frame a connection sends, pongs and close frames included, is
//     written by its one writer goroutine, from a bounded queue; a client
//     that lets Config.SendQueue messages pile up is closed with 4008
//     (CloseSlowConsumer) and never slows the others;
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
// New panics on a nil queue and TokenAuth on an empty token; nothing else
// panics. Errors that end a connection abnormally go to Config.OnError and
// are counted in Stats. Config.Logger, if set, gets a structured record of
// every connection opened and closed (with its close code), every refused
// upgrade and every slow consumer; a Client logs its reconnections and
// dropped events to WithLogger's. The Server's goroutines never run job handlers:
// handlers run on the queue's workers under the queue's panic policy.
package wsbridge

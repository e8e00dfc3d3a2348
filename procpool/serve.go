package procpool

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	envWorker = "COREWORK_PROCPOOL_WORKER" // worker slot; its presence marks a worker
	envFrame  = "COREWORK_PROCPOOL_FRAME"  // frame size limit
	envParent = "COREWORK_PROCPOOL_PARENT" // parent PID
	envPrefix = "COREWORK_PROCPOOL_"

	// Flush a worker's replies before running the next request when the
	// last handler took longer than flushAfterTask, or when the oldest
	// unsent reply has waited flushAge.
	flushAfterTask = 20 * time.Microsecond
	flushAge       = 200 * time.Microsecond
	// ringFlushAge replaces flushAge when replies go through the reply
	// ring, where a flush is a copy, not a system call: the parent then
	// hears of replies, and sends more requests, while the worker still
	// has some to run, instead of after it ran them all.
	ringFlushAge = 20 * time.Microsecond
	flushBytes   = 256 << 10
)

// Main makes the program a procpool program. Call it first in main, and in
// TestMain of any package whose tests start a Pool, before flag parsing or
// any other work. In the parent it returns at once. In a worker process
// (the same binary, started by a Pool with a marker in its environment) it
// runs the WorkerInit hooks, serves tasks until the parent closes its
// request pipe, and exits the process; it never returns there.
//
// A worker ignores SIGINT, so Ctrl-C in a terminal reaches the parent,
// which shuts the workers down in order. On Linux it also dies with the
// parent (Pdeathsig) even in the middle of a task.
func Main() {
	v, ok := os.LookupEnv(envWorker)
	if !ok {
		return
	}
	os.Exit(workerMain(v))
}

func workerMain(slot string) int {
	frame, parent := os.Getenv(envFrame), os.Getenv(envParent)
	for _, k := range []string{envWorker, envFrame, envParent} {
		os.Unsetenv(k)
	}
	id, err1 := strconv.Atoi(slot)
	limit, err2 := strconv.Atoi(frame)
	ppid, err3 := strconv.Atoi(parent)
	if err1 != nil || err2 != nil || err3 != nil || limit < minFrameLimit || limit > maxFrameLimit {
		fmt.Fprintf(os.Stderr, "procpool: worker: bad environment %s=%q %s=%q %s=%q\n",
			envWorker, slot, envFrame, frame, envParent, parent)
		return 2
	}
	nameWorker(id) // thread names "prog-wN" (Linux)
	signal.Ignore(os.Interrupt)
	in, out, journal, err := workerFiles(ppid)
	if err != nil {
		fmt.Fprintf(os.Stderr, "procpool: worker %d: %v\n", id, err)
		return 2
	}
	tasks, inits := lookupTasks()
	s := newServer(in, out, limit, tasks)
	s.flushLate()
	var req, rep *ring
	if journal != nil {
		req, rep = acceptRings(journal) // before hello: the parent checks after it
		s.useJournal(journal[:journalSize:journalSize])
	}
	if err := s.start(context.Background(), id, inits); err != nil {
		fmt.Fprintf(os.Stderr, "procpool: worker %d: %v\n", id, err)
		return 1
	}
	if req != nil {
		s.useRings(req, rep, in, out)
	}
	if err := s.serve(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "procpool: worker %d: %v\n", id, err)
		return 2
	}
	return 0
}

// server is the worker side of the protocol: it reads request frames,
// runs them one at a time and writes reply frames in batches.
type server struct {
	fr    *frameReader
	w     io.Writer
	limit int
	tasks map[string]taskImpl

	src bytes.Reader
	dec *gob.Decoder

	ob        outBuf // the reply batch, in the journal if there is one
	enc       *gob.Encoder
	resetNext bool
	jmem      []byte // the journal, shared with the parent; nil if none

	lastDur    time.Duration
	batchStart time.Time
	flushAge   time.Duration // see flushAge
	rw         *ringWriter   // the reply ring, if used (see ring)
	unsent     uint64        // replies in ob
	held       bool          // the parent sleeps, not told of replies published
	hold       *time.Timer   // wakes the parent after holdMax of held replies

	// The reply batch (ob, unsent, held, the journal, the writer) is
	// guarded by mu, which serve holds except while it reads a request and
	// while a handler runs; flusher, if set, writes a batch that has waited
	// flushAge meanwhile, so that replies made before a long task do not
	// wait for its end.
	mu      sync.Mutex
	flusher *time.Timer
	armed   atomic.Bool // flusher is set to fire
}

func newServer(r io.Reader, w io.Writer, limit int, tasks map[string]taskImpl) *server {
	s := &server{fr: newFrameReader(r, limit), w: w, limit: limit, tasks: tasks, flushAge: flushAge}
	s.dec = gob.NewDecoder(&s.src)
	s.enc = gob.NewEncoder(&s.ob)
	return s
}

// useRings switches the frames to the rings (see ring) after hello; the
// pipes carry only wake-up tokens and their end from then on.
func (s *server) useRings(req, rep *ring, in io.Reader, out io.Writer) {
	token := []byte{0}
	rw := &ringWriter{r: rep,
		wake: func() error {
			_, err := out.Write(token)
			return err
		},
		dead: func() error { return nil }, // a worker dies with its parent
		lazy: true,
	}
	s.w, s.rw = rw, rw
	s.flushAge = ringFlushAge
	s.hold = time.AfterFunc(time.Hour, func() { rw.kick() })
	s.hold.Stop()
	// A worker about to wait for requests first wakes a parent that waits
	// for more replies: they would not come.
	rr := &ringReader{r: req, tok: in, limit: func() time.Duration { return workerSpin },
		idle: func() { rw.kick() }}
	rr.spin.budget = workerSpin
	s.fr = newFrameReader(rr, s.limit)
}

// start runs the init hooks and sends hello, or the hook's error.
func (s *server) start(ctx context.Context, id int, inits []func(context.Context, int) error) error {
	for _, fn := range inits {
		if err := runInit(ctx, fn, id); err != nil {
			st := s.ob.begin()
			s.ob.b = append(s.ob.b, repInitError)
			s.ob.b = appendString(s.ob.b, truncate(err.Error(), s.limit/2))
			s.ob.finish(st, s.limit, false)
			s.flush()
			return fmt.Errorf("init: %w", err)
		}
	}
	st := s.ob.begin()
	s.ob.b = append(s.ob.b, repHello)
	s.ob.b = binary.AppendUvarint(s.ob.b, uint64(os.Getpid()))
	s.ob.finish(st, s.limit, false)
	return s.flush()
}

func runInit(ctx context.Context, fn func(context.Context, int) error, id int) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return fn(ctx, id)
}

// serve runs requests until the request pipe ends. It returns nil at a clean
// end of input and the error of a corrupt or oversized frame otherwise.
// Requests run one at a time, in order; the reply of each is committed
// (see commit) before the next one is read, so that the parent, after a
// death, knows every reply made: the request that was running is the
// oldest unanswered one.
func (s *server) serve(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flusher != nil {
		defer s.flusher.Stop()
	}
	for {
		if len(s.ob.b) > 0 && (s.lastDur > flushAfterTask || len(s.ob.b) > flushBytes ||
			time.Since(s.batchStart) > s.flushAge || !s.fr.complete()) {
			if err := s.flush(); err != nil {
				return err
			}
		}
		s.mu.Unlock() // the batch is flushed unless a request is buffered
		q, err := s.read()
		s.mu.Lock()
		if err == io.EOF {
			return s.flush()
		}
		if err != nil {
			s.flush()
			return err
		}
		start := time.Now()
		if len(s.ob.b) == 0 {
			s.batchStart = start
		}
		held := s.held
		if held {
			s.hold.Reset(holdMax)
		}
		s.exec(ctx, q, start)
		if held {
			s.hold.Stop()
		}
		releaseViews() // unmap the shared buffers the request lent (shm.go)
		s.lastDur = time.Since(start)
		s.unsent++
		if err := s.commit(); err != nil {
			return err
		}
	}
}

// flushLate makes the server flush, while a handler runs, a reply batch
// that has waited flushAge (see mu).
func (s *server) flushLate() {
	s.flusher = time.AfterFunc(time.Hour, func() {
		if !s.mu.TryLock() {
			// serve holds the batch for a moment (it holds mu only
			// between its reads and its handlers): look again.
			s.flusher.Reset(s.flushAge)
			return
		}
		defer s.mu.Unlock()
		s.armed.Store(false)
		s.flush() // an error shows again at serve's next write
	})
	s.flusher.Stop()
}

// running is called by a job before it runs a handler, ran after: the
// handler runs without mu, and a batch waiting meanwhile is flushed after
// flushAge.
func (s *server) running() {
	arm := s.flusher != nil && len(s.ob.b) > 0 && !s.armed.Swap(true)
	s.mu.Unlock()
	if arm {
		s.flusher.Reset(s.flushAge)
	}
}

func (s *server) ran() { s.mu.Lock() }

// workReq is one decoded request.
type workReq struct {
	id       uint64
	deadline int64
	job      job      // nil when fail is set
	fail     *itemErr // unknown task or undecodable input
}

// read reads and decodes the next request. Any error is fatal for the
// worker: io.EOF at a clean end, otherwise a corrupt or oversized frame.
// A request it can decode but not serve (unknown task, input gob cannot
// decode) comes back with fail set.
func (s *server) read() (*workReq, error) {
	body, reset, err := s.fr.next()
	if err != nil {
		return nil, err
	}
	if reset {
		s.dec = gob.NewDecoder(&s.src)
	}
	p := parser{b: body}
	kind := p.byte()
	q := &workReq{id: p.uvarint(), deadline: p.varint()}
	n := 1
	if kind == reqChunk {
		n = p.count(len(body))
	}
	name := p.bytes(maxNameLen)
	if p.err != nil {
		return nil, p.err
	}
	if kind != reqOne && kind != reqChunk && kind != reqRaw || n == 0 {
		return nil, corrupt("request kind %d count %d", kind, n)
	}
	if kind == reqRaw {
		// The parent sent the input raw (codec.go): no gob to check or
		// skip, and a value that does not decode leaves the stream intact.
		t := s.tasks[string(name)]
		if t == nil {
			q.fail = &itemErr{kind: kindUnknownTask, msg: "unknown task " + strconv.Quote(string(name))}
		} else if j, err := safeDecode(t, &rawDecoder{b: p.b}, false, 1); err != nil {
			q.fail = &itemErr{kind: kindDecode, msg: "raw input: " + err.Error()}
		} else {
			q.job = j
		}
		return q, nil
	}
	if err := checkGob(p.b); err != nil {
		return nil, err
	}
	if kind == reqChunk {
		if l, ok := gobValueLen(p.b); !ok || l != uint64(n) {
			return nil, corrupt("chunk length %d, header says %d", l, n)
		}
	}
	s.src.Reset(p.b)
	t := s.tasks[string(name)]
	if t == nil {
		if err := s.dec.DecodeValue(reflect.Value{}); err != nil {
			return nil, corrupt("skip input of unknown task: %v", err)
		}
		q.fail = &itemErr{kind: kindUnknownTask, msg: "unknown task " + strconv.Quote(string(name))}
	} else if j, err := safeDecode(t, s.dec, kind == reqChunk, n); err != nil {
		q.fail = &itemErr{kind: kindDecode, msg: err.Error()}
	} else {
		q.job = j
	}
	if s.src.Len() != 0 {
		if q.fail != nil && q.fail.kind == kindDecode {
			return nil, corrupt("decode input: %s", q.fail.msg)
		}
		return nil, corrupt("%d bytes after the input", s.src.Len())
	}
	return q, nil
}

func (s *server) exec(ctx context.Context, q *workReq, start time.Time) {
	if q.fail != nil {
		s.replyErr(q.id, 0, q.fail)
		return
	}
	if q.deadline != 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.Unix(0, q.deadline))
		defer cancel()
	}
	q.job.run(ctx, s, q.id, start)
}

// replyValue appends a result frame with v (an *Out or *[]Out) and the
// failed items of a chunk. If gob cannot encode v, or the frame is over the
// limit, it sends a whole-request error instead.
func (s *server) replyValue(id uint64, dur time.Duration, errs []itemErr, v any) {
	st := s.ob.begin()
	status := byte(statusOK)
	if len(errs) > 0 {
		status = statusItems
	}
	s.ob.b = appendReplyHeader(s.ob.b, id, int64(dur), status, errs)
	err := safeEncode(s.enc, v)
	if err == nil {
		if s.ob.finish(st, s.limit, s.resetNext) {
			s.resetNext = false
			return
		}
	}
	s.ob.b = s.ob.b[:st]
	s.enc = gob.NewEncoder(&s.ob)
	s.resetNext = true
	fail := itemErr{kind: kindEncode}
	if err != nil {
		fail.msg = err.Error()
	} else {
		fail.kind = kindFrameTooLarge
		fail.msg = fmt.Sprintf("limit %d bytes", s.limit)
	}
	s.replyErr(id, dur, &fail)
}

// replyRaw appends a result frame with the one output v in raw form (see
// codec.go), or, over the frame limit, a whole-request error instead.
func (s *server) replyRaw(id uint64, dur time.Duration, v any) {
	st := s.ob.begin()
	s.ob.b = appendReplyHeader(s.ob.b, id, int64(dur), statusRaw, nil)
	err := rawEncoder{&s.ob}.Encode(v)
	if err == nil && s.ob.finish(st, s.limit, false) {
		return // gob's state, and a reset it owes, are untouched
	}
	s.ob.b = s.ob.b[:st]
	fail := itemErr{kind: kindFrameTooLarge, msg: fmt.Sprintf("limit %d bytes", s.limit)}
	if err != nil {
		fail = itemErr{kind: kindEncode, msg: err.Error()}
	}
	s.replyErr(id, dur, &fail)
}

// replyErr appends a whole-request failure frame, shortening the message
// and stack to fit the frame limit.
func (s *server) replyErr(id uint64, dur time.Duration, e *itemErr) {
	st := s.ob.begin()
	s.ob.b = appendReplyHeader(s.ob.b, id, int64(dur), statusError, nil)
	short := itemErr{kind: e.kind, msg: truncate(e.msg, s.limit/4)}
	if len(e.stack) <= s.limit/2 {
		short.stack = e.stack
	}
	s.ob.b = appendItemErr(s.ob.b, &short)
	if s.ob.finish(st, s.limit, s.resetNext) {
		s.resetNext = false
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// safeDecode decodes a request's input, turning a panic in a GobDecode
// method into an error.
func safeDecode(t taskImpl, dec decoder, chunk bool, n int) (j job, err error) {
	defer func() {
		if r := recover(); r != nil {
			j, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return t.decode(dec, chunk, n)
}

// safeEncode encodes v, turning panics (gob's, or a GobEncode method's)
// into errors.
func safeEncode(enc encoder, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return enc.Encode(v)
}

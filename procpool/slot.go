package procpool

import (
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/corework/corework/affinity"
)

// slot is one worker position of a pool: it owns the successive processes
// that fill it and the goroutine that starts, reads and replaces them.
type slot struct {
	p       *Pool
	id      int
	cpu     int           // pinned CPU, -1 if none
	quit    chan struct{} // closed when Resize removes the slot
	cur     atomic.Pointer[proc]
	tasks   atomic.Uint64
	lastErr atomic.Pointer[error]
}

// run keeps the slot filled until the pool stops. The first start reports
// to ready.
func (s *slot) run(ready chan<- error) {
	p := s.p
	defer func() {
		p.lifeMu.Lock()
		delete(p.running, s)
		p.lifeMu.Unlock()
		p.wg.Done()
	}()
	first := true
	failures := 0
	for {
		if p.stopped() || isDone(s.quit) {
			if first {
				ready <- ErrClosed
			}
			return
		}
		w, err := s.start()
		if err == nil {
			if herr := w.handshake(); herr != nil {
				err = w.abort(herr)
			} else {
				w.useRings()
			}
		}
		if err != nil {
			if first {
				s.lastErr.Store(&err)
				ready <- fmt.Errorf("procpool: start worker %d: %w", s.id, err)
				return
			}
			if p.stopped() || isDone(s.quit) {
				return // killed by Close or Shutdown while it started: not a failure
			}
			s.lastErr.Store(&err)
			failures++
			delay := retryDelay(failures)
			p.logStartFailed(s, err, failures, delay)
			select {
			case <-time.After(delay):
			case <-p.done:
			case <-p.stopping:
			case <-s.quit:
			}
			continue
		}
		failures = 0
		p.logSpawned(w)
		if first {
			ready <- nil
			first = false
		}
		w.sendMu.Lock()
		w.live = true
		w.sendMu.Unlock()
		go w.sendLoop()
		rerr := w.readLoop()
		w.finish(rerr)
		if !p.stopped() && !isDone(s.quit) {
			p.restarts.Add(1)
		}
	}
}

func (p *Pool) stopped() bool {
	select {
	case <-p.done:
		return true
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// start starts a worker process on the spawning thread.
func (s *slot) start() (*proc, error) {
	p := s.p
	w := &proc{
		s:          s,
		credit:     make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
		exited:     make(chan struct{}),
		stop:       make(chan struct{}),
		senderDone: make(chan struct{}),
		stdout:     newLineWriter(&p.outMu, p.o.output, s.id),
		stderr:     newLineWriter(&p.outMu, p.o.output, s.id),
	}
	w.requestWriter.init(p.o.maxFrame)
	w.dec = gob.NewDecoder(&w.src)
	var err error
	p.onSpawnThread(func() { err = w.spawn() })
	if err != nil {
		return nil, err
	}
	w.reqC = newPipeConn(w.reqW)
	w.out = w.reqC
	w.fr = newFrameReader(newPipeConn(w.repR), p.o.maxFrame)
	// Reap the process as soon as it ends, even while nobody reads its
	// replies: no zombie, and its death wakes the reader.
	go w.reap()
	s.cur.Store(w)
	select {
	case <-p.done:
		w.kill(killClose)
	default:
	}
	return w, nil
}

// spawn creates the pipes and the journal and starts the process, in a
// process group of its own; it runs on the spawning thread.
func (w *proc) spawn() error {
	p, s := w.s.p, w.s
	reqR, reqW, err := pipe(false)
	if err != nil {
		return err
	}
	repR, repW, err := pipe(true)
	if err != nil {
		reqR.Close()
		reqW.Close()
		return err
	}
	jf, err := newJournal()
	if err != nil {
		reqR.Close()
		reqW.Close()
		repR.Close()
		repW.Close()
		return err
	}
	shm := mapShared(jf) // nil where the parent cannot map it: no rings
	if shm != nil {
		offerRings(shm)
	}
	cmd := exec.Command(p.exe)
	cmd.Args = []string{os.Args[0]}
	cmd.Env = append(p.env[:len(p.env):len(p.env)], envWorker+"="+strconv.Itoa(s.id))
	nameCmd(cmd, s.id)
	cmd.ExtraFiles = []*os.File{reqR, repW, jf} // fds 3, 4, 5
	cmd.Stdout = w.stdout
	cmd.Stderr = w.stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second
	if s.cpu >= 0 {
		err = affinity.Start(cmd, affinity.CPUSet{s.cpu})
	} else {
		err = cmd.Start()
	}
	reqR.Close()
	repW.Close()
	if err != nil {
		reqW.Close()
		repR.Close()
		jf.Close()
		if shm != nil {
			unmapShared(shm)
		}
		return fmt.Errorf("procpool: start worker: %w", err)
	}
	w.cmd, w.pid, w.reqW, w.repR, w.journal, w.shm = cmd, cmd.Process.Pid, reqW, repR, jf, shm
	return nil
}

// handshake reads the worker's hello, or its init error.
func (w *proc) handshake() error {
	body, _, err := w.fr.next()
	if err != nil {
		return fmt.Errorf("no hello from worker: %w", err)
	}
	pr := parser{b: body}
	switch pr.byte() {
	case repHello:
		pid := pr.uvarint()
		if pr.err == nil && pid != uint64(w.pid) {
			return fmt.Errorf("hello from pid %d, started %d", pid, w.pid)
		}
		return pr.err
	case repInitError:
		msg := pr.bytes(len(body))
		if pr.err != nil {
			return pr.err
		}
		return &initError{msg: string(msg)}
	}
	return corrupt("expected hello")
}

// abort ends a process whose handshake failed and returns why.
func (w *proc) abort(herr error) error {
	w.kill(killBroken)
	<-w.exited
	w.stdout.Flush()
	w.stderr.Flush()
	w.closeFiles()
	w.s.cur.CompareAndSwap(w, nil)
	var ie *initError
	if errors.As(herr, &ie) {
		return herr
	}
	return &CrashError{Worker: w.s.id, PID: w.pid, State: w.cmd.ProcessState, Stderr: w.stderr.Tail(), Cause: w.stderr.Cause(), Err: herr}
}

// initError is a WorkerInit hook's failure reported by a worker.
type initError struct{ msg string }

func (e *initError) Error() string { return "procpool: worker init: " + e.msg }

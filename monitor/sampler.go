package monitor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/corework/corework/affinity"
)

// Sampler reads CPU, memory, load and process figures and turns the
// cumulative CPU counters into usage ratios from its own previous reading.
// Each Sampler keeps its own baseline, so two Samplers (a terminal view and
// a Prometheus collector, say) never disturb each other, unlike gopsutil's
// cpu.Percent(0, ...) whose baseline is shared by the whole program.
//
// A Sampler is safe for concurrent use; Samples are taken one at a time. It
// starts no goroutine and holds no resource that needs closing.
type Sampler struct {
	opts options
	self int
	lock chan struct{} // a one-slot semaphore, so that waiting honours ctx

	// Guarded by lock.
	base     []Core    // counters at the start of the open window
	baseTime time.Time // when base was read
	closed   bool      // a window has closed: usage, total and window are set
	usage    []float64 // per-core usage of the last closed window
	total    float64   // overall usage of the last closed window
	window   time.Duration
	procs    map[int]*procState
	gen      uint64 // Sample count, to drop processes no longer asked for
}

type procState struct {
	h        *proc
	baseCPU  float64
	baseTime time.Time
	usage    float64
	threads  map[int]*threadState
	gen      uint64
}

type threadState struct {
	baseCPU  float64
	baseTime time.Time
	usage    float64
	gen      uint64
}

// NewSampler returns a Sampler and reads its first baseline: the CPU
// counters and those of the processes to watch. It fails if the CPU counters
// cannot be read, or with an error wrapping [ErrUnsupported] if
// [WithThreads] is asked for outside Linux. It does not block beyond a few
// small file reads.
func NewSampler(opts ...Option) (*Sampler, error) {
	o := options{minWindow: DefaultMinWindow}
	for _, opt := range opts {
		opt(&o)
	}
	if o.threads && runtime.GOOS != "linux" {
		return nil, fmt.Errorf("%w: per-thread rows need Linux", ErrUnsupported)
	}
	s := &Sampler{
		opts:  o,
		self:  os.Getpid(),
		lock:  make(chan struct{}, 1),
		procs: make(map[int]*procState),
	}
	ctx := context.Background()
	cores, err := readCores(ctx)
	if err != nil {
		return nil, err
	}
	s.base, s.baseTime = cores, time.Now()
	s.readProcs(ctx, s.baseTime, false) // baselines only; errors surface at Sample
	return s, nil
}

// Sample reads the counters and returns a Snapshot. The usage ratios cover
// the window since the previous reading, at least the Sampler's minimum
// window (see [WithMinWindow]): a Sample taken sooner repeats the last
// window's ratios, and the first Sample blocks until the minimum window has
// passed since NewSampler. Sample also waits while another Sample of the
// same Sampler runs. If ctx is done while it waits, Sample returns ctx.Err()
// and the Sampler is unchanged.
//
// Failing to read the CPU counters is an error with an empty Snapshot. Any
// other failure (memory, load, a process that exists but cannot be read) is
// returned joined in the error beside a Snapshot holding everything else. A
// process that does not exist or has exited is left out, without an error.
// A Sample costs a few small file reads, plus four per watched process,
// one per thread of this process to list its children (see
// [WithChildren]) and two per thread with WithThreads.
func (s *Sampler) Sample(ctx context.Context) (Snapshot, error) {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return Snapshot{}, ctx.Err()
	}
	defer func() { <-s.lock }()

	if !s.closed {
		if wait := time.Until(s.baseTime.Add(s.opts.minWindow)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return Snapshot{}, ctx.Err()
			}
		}
	}

	cores, err := readCores(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	now := time.Now()
	var errs []error
	memory, err := readMemory(ctx)
	errs = append(errs, err)
	load, err := readLoad(ctx)
	errs = append(errs, err)

	closing := !s.closed || now.Sub(s.baseTime) >= s.opts.minWindow
	if closing {
		s.closeWindow(cores, now)
	}
	snap := Snapshot{
		Time:   now,
		Window: s.window,
		CPU:    s.total,
		Cores:  cores,
		Memory: memory,
		Load:   load,
	}
	if len(s.usage) == len(cores) {
		for i := range cores {
			cores[i].Usage = s.usage[i]
		}
	}
	procs, perr := s.readProcs(ctx, now, closing)
	snap.Procs = procs
	errs = append(errs, perr)
	return snap, errors.Join(errs...)
}

// closeWindow turns the counters read at now into the ratios of the window
// that started at s.baseTime, and opens the next window.
func (s *Sampler) closeWindow(cores []Core, now time.Time) {
	defer func() { s.base, s.baseTime, s.closed = cores, now, true }()
	s.window = now.Sub(s.baseTime)
	if len(cores) != len(s.base) { // CPUs came online or went offline
		s.usage, s.total = nil, 0
		return
	}
	s.usage = make([]float64, len(cores))
	var busy, total float64
	for i, c := range cores {
		b := c.Times.Busy() - s.base[i].Times.Busy()
		t := c.Times.Total() - s.base[i].Times.Total()
		if c.CPU != s.base[i].CPU || t <= 0 || b < 0 {
			continue
		}
		s.usage[i] = min(b/t, 1)
		busy += b
		total += t
	}
	s.total = 0
	if total > 0 {
		s.total = min(busy/total, 1)
	}
}

// pids returns the processes to watch now, without duplicates.
func (s *Sampler) pids() []int {
	var pids []int
	if !s.opts.noSelf {
		pids = append(pids, s.self)
	}
	if !s.opts.noChildren {
		pids = append(pids, childPIDs()...)
	}
	pids = append(pids, s.opts.pids...)
	for _, src := range s.opts.sources {
		pids = append(pids, src()...)
	}
	out := pids[:0]
	for _, pid := range pids {
		if pid > 0 && !slices.Contains(out, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// readProcs reads the rows of the watched processes; when closing, it also
// closes their usage windows.
func (s *Sampler) readProcs(ctx context.Context, now time.Time, closing bool) ([]Process, error) {
	s.gen++
	var rows []Process
	var errs []error
	for _, pid := range s.pids() {
		row, err := s.readProc(ctx, pid, now, closing)
		switch {
		case errors.Is(err, errGone):
			delete(s.procs, pid)
		case err != nil:
			errs = append(errs, err)
		default:
			rows = append(rows, row)
		}
	}
	for pid, st := range s.procs {
		if st.gen != s.gen {
			delete(s.procs, pid)
		}
	}
	return rows, errors.Join(errs...)
}

func (s *Sampler) readProc(ctx context.Context, pid int, now time.Time, closing bool) (Process, error) {
	st := s.procs[pid]
	fresh := st == nil
	if fresh {
		h, err := openProc(ctx, pid)
		if err != nil {
			return Process{}, err
		}
		st = &procState{h: h}
	}
	cpuSec, err := st.h.cpuSeconds(ctx)
	if err != nil {
		return Process{}, err
	}
	rss, err := st.h.rss(ctx)
	if err != nil {
		return Process{}, err
	}
	last, err := affinity.LastCPU(pid)
	if err = osErr(err); err != nil {
		return Process{}, err
	}
	allowed, err := affinity.ProcessAllowed(pid)
	if err = osErr(err); err != nil {
		return Process{}, err
	}
	if fresh || cpuSec < st.baseCPU { // new, or a new process under a reused PID
		st.baseCPU, st.baseTime, st.usage, st.threads = cpuSec, now, 0, nil
	} else if closing {
		if d := now.Sub(st.baseTime).Seconds(); d > 0 {
			st.usage = (cpuSec - st.baseCPU) / d
		}
		st.baseCPU, st.baseTime = cpuSec, now
	}
	row := Process{
		PID:        pid,
		Name:       st.h.name,
		CPU:        st.usage,
		CPUSeconds: cpuSec,
		RSS:        rss,
		LastCPU:    last,
		Allowed:    allowed,
	}
	if s.opts.threads {
		if row.Threads, err = s.readThreads(ctx, st, pid, now, closing); err != nil {
			return Process{}, err
		}
	}
	st.gen = s.gen
	s.procs[pid] = st
	return row, nil
}

// readThreads reads the thread rows of one process. A thread that exits
// while it is read is left out.
func (s *Sampler) readThreads(ctx context.Context, st *procState, pid int, now time.Time, closing bool) ([]Thread, error) {
	times, err := st.h.threads(ctx)
	if err != nil && !errors.Is(err, errGone) {
		times, err = st.h.threads(ctx) // a thread may have exited mid-read
	}
	if err != nil {
		return nil, err
	}
	if st.threads == nil {
		st.threads = make(map[int]*threadState)
	}
	rows := make([]Thread, 0, len(times))
	for tid, cpuSec := range times {
		last, err := affinity.LastCPUThread(pid, tid)
		if err = osErr(err); errors.Is(err, errGone) {
			continue
		} else if err != nil {
			return nil, err
		}
		ts := st.threads[tid]
		if ts == nil || cpuSec < ts.baseCPU {
			ts = &threadState{baseCPU: cpuSec, baseTime: now}
			st.threads[tid] = ts
		} else if closing {
			if d := now.Sub(ts.baseTime).Seconds(); d > 0 {
				ts.usage = min((cpuSec-ts.baseCPU)/d, 1)
			}
			ts.baseCPU, ts.baseTime = cpuSec, now
		}
		ts.gen = s.gen
		rows = append(rows, Thread{TID: tid, CPU: ts.usage, CPUSeconds: cpuSec, LastCPU: last})
	}
	for tid, ts := range st.threads {
		if ts.gen != s.gen {
			delete(st.threads, tid)
		}
	}
	slices.SortFunc(rows, func(a, b Thread) int { return a.TID - b.TID })
	return rows, nil
}

// osErr maps an affinity error to nil where the OS has no answer, and to
// errGone when the process or thread has exited.
func osErr(err error) error {
	switch {
	case err == nil, errors.Is(err, errors.ErrUnsupported):
		return nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ESRCH):
		return errGone
	}
	return err
}

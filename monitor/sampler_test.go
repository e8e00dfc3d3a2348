package monitor_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/corework/corework/monitor"
)

func newSampler(t *testing.T, opts ...monitor.Option) *monitor.Sampler {
	t.Helper()
	s, err := monitor.NewSampler(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sample(t *testing.T, s *monitor.Sampler) monitor.Snapshot {
	t.Helper()
	snap, err := s.Sample(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestSnapshotFigures(t *testing.T) {
	snap := sample(t, newSampler(t, monitor.WithMinWindow(50*time.Millisecond)))
	if snap.Window < 50*time.Millisecond {
		t.Errorf("Window = %v, want >= 50ms", snap.Window)
	}
	if len(snap.Cores) == 0 {
		t.Fatal("no cores")
	}
	seen := map[int]bool{}
	for _, c := range snap.Cores {
		if seen[c.CPU] || c.CPU < 0 {
			t.Errorf("core number %d repeated or negative", c.CPU)
		}
		seen[c.CPU] = true
		if c.Usage < 0 || c.Usage > 1 || c.Times.Total() <= 0 || c.Times.Busy() < 0 {
			t.Errorf("core %d: usage %v, times %+v", c.CPU, c.Usage, c.Times)
		}
	}
	if snap.CPU < 0 || snap.CPU > 1 {
		t.Errorf("CPU = %v", snap.CPU)
	}
	m := snap.Memory
	if m.Total == 0 || m.Used+m.Available != m.Total || m.UsedRatio <= 0 || m.UsedRatio >= 1 {
		t.Errorf("memory %+v", m)
	}
	if snap.Load.Load1 < 0 || snap.Load.Load5 < 0 || snap.Load.Load15 < 0 {
		t.Errorf("load %+v", snap.Load)
	}
	if len(snap.Procs) != 1 || snap.Procs[0].PID != os.Getpid() {
		t.Fatalf("process rows %+v, want this process only", snap.Procs)
	}
	p := snap.Procs[0]
	if p.RSS == 0 || p.Name == "" || p.LastCPU < 0 || !p.Allowed.Contains(p.LastCPU) || !seen[p.LastCPU] {
		t.Errorf("self row %+v", p)
	}
	if p.Threads != nil {
		t.Errorf("thread rows without WithThreads: %v", p.Threads)
	}
}

// Two Samplers keep two baselines: creating or sampling one does not move
// the window of the other (cpu.Percent(0) would).
func TestSamplersHaveOwnBaselines(t *testing.T) {
	a := newSampler(t, monitor.WithMinWindow(0))
	time.Sleep(60 * time.Millisecond)
	b := newSampler(t, monitor.WithMinWindow(0))
	time.Sleep(60 * time.Millisecond)
	sb := sample(t, b)
	sa := sample(t, a)
	if sa.Window < 120*time.Millisecond {
		t.Errorf("a's window %v: b moved a's baseline", sa.Window)
	}
	if sb.Window < 60*time.Millisecond || sb.Window >= sa.Window {
		t.Errorf("b's window %v, a's %v", sb.Window, sa.Window)
	}
	if sa2 := sample(t, a); sa2.Window >= sa.Window {
		t.Errorf("a's second window %v not measured from its first sample", sa2.Window)
	}
}

func TestSampleWithinWindowRepeatsRatios(t *testing.T) {
	s := newSampler(t, monitor.WithMinWindow(300*time.Millisecond))
	start := time.Now()
	first := sample(t, s)
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("first Sample returned after %v, want it to wait for the window", waited)
	}
	second := sample(t, s)
	if second.Window != first.Window || second.CPU != first.CPU {
		t.Errorf("window %v/%v, CPU %v/%v: ratios not repeated", first.Window, second.Window, first.CPU, second.CPU)
	}
	if !second.Time.After(first.Time) || second.Cores[0].Times.Total() < first.Cores[0].Times.Total() {
		t.Error("counters not read afresh")
	}
}

func TestSampleCancel(t *testing.T) {
	s := newSampler(t, monitor.WithMinWindow(time.Hour))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	snap, err := s.Sample(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !snap.Time.IsZero() {
		t.Fatalf("Sample = %v, %v; want DeadlineExceeded and no snapshot", snap.Time, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestSampleConcurrent(t *testing.T) {
	s := newSampler(t, monitor.WithMinWindow(0), monitor.WithThreads())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if _, err := s.Sample(t.Context()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestProcessRows(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := cmd.Process.Pid
	defer cmd.Process.Kill()
	var source sync.Mutex
	extra := []int{child, os.Getpid()} // self again: deduplicated
	s := newSampler(t,
		monitor.WithSelf(false),
		monitor.WithChildren(false), // the child comes from the source alone
		monitor.WithMinWindow(0),
		monitor.WithPIDs(1<<30), // no such process: left out, no error
		monitor.WithProcesses(func() []int {
			source.Lock()
			defer source.Unlock()
			return extra
		}),
	)
	snap := sample(t, s)
	if len(snap.Procs) != 2 || snap.Procs[0].PID != child || snap.Procs[1].PID != os.Getpid() {
		t.Fatalf("rows %+v, want the child then this process", snap.Procs)
	}
	if snap.Procs[0].Name != "sleep" || snap.Procs[0].RSS == 0 || snap.Procs[0].CPU > 0.5 {
		t.Errorf("child row %+v", snap.Procs[0])
	}

	// The child exits: its row goes away, without an error.
	cmd.Process.Kill()
	cmd.Wait()
	snap = sample(t, s)
	if len(snap.Procs) != 1 || snap.Procs[0].PID != os.Getpid() {
		t.Errorf("rows after exit %+v", snap.Procs)
	}
	// The source drops this process too.
	source.Lock()
	extra = nil
	source.Unlock()
	if snap = sample(t, s); len(snap.Procs) != 0 {
		t.Errorf("rows %+v, want none", snap.Procs)
	}
}

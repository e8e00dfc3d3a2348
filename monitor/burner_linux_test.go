package monitor_test

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/monitor"
)

// A goroutine pinned to one CPU and spinning for a second shows as that
// core above 80% busy, and as a thread whose last CPU is that core.
func TestPinnedBurner(t *testing.T) {
	allowed, err := affinity.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	cpu := allowed[len(allowed)-1]

	var stop atomic.Bool
	var wg sync.WaitGroup
	tids := make(chan int, 1)
	wg.Go(func() {
		release, err := affinity.PinThread(cpu)
		defer release()
		if err != nil {
			t.Error(err)
			tids <- -1
			return
		}
		tids <- affinity.Gettid()
		for x := 0; !stop.Load(); x++ {
		}
	})
	defer wg.Wait()
	defer stop.Store(true)
	tid := <-tids
	if tid < 0 {
		return
	}

	s := newSampler(t, monitor.WithThreads(), monitor.WithMinWindow(time.Second))
	snap := sample(t, s)
	stop.Store(true)

	var core *monitor.Core
	for i := range snap.Cores {
		if snap.Cores[i].CPU == cpu {
			core = &snap.Cores[i]
		}
	}
	if core == nil {
		t.Fatalf("CPU %d not in snapshot", cpu)
	}
	t.Logf("window %v: CPU%d busy %.1f%%", snap.Window, cpu, 100*core.Usage)
	if core.Usage <= 0.8 {
		t.Errorf("CPU%d busy %.1f%%, want > 80%%", cpu, 100*core.Usage)
	}

	self := snap.Procs[0]
	if self.PID != os.Getpid() {
		t.Fatalf("first row is PID %d, want this process", self.PID)
	}
	var burner *monitor.Thread
	for i := range self.Threads {
		if self.Threads[i].TID == tid {
			burner = &self.Threads[i]
		}
	}
	if burner == nil {
		t.Fatalf("burner thread %d not among %+v", tid, self.Threads)
	}
	t.Logf("burner thread %d: last CPU %d, busy %.1f%%; process busy %.1f%%", tid, burner.LastCPU, 100*burner.CPU, 100*self.CPU)
	if burner.LastCPU != cpu {
		t.Errorf("burner last ran on CPU %d, want %d", burner.LastCPU, cpu)
	}
	// The burner shares its CPU with whatever else the machine runs (other
	// test binaries under go test ./...), so only ask for a clear share.
	if burner.CPU < 0.1 || self.CPU < burner.CPU-0.05 {
		t.Errorf("burner thread busy %.1f%%, process %.1f%%", 100*burner.CPU, 100*self.CPU)
	}
}

//go:build linux

package affinity

import (
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkPinning measures what pinning buys for cache-heavy work: one
// worker per allowed CPU, each chasing random pointers through its own
// array of half the L2 size, pinned (each worker locked to a thread limited
// to its own CPU) and unpinned (left to the Go and OS schedulers). One op
// is one full walk of every worker's array, run in parallel. Metrics:
// ns/hop (one dependent load), and migrations/op, how often a worker was
// found on another CPU than at its previous sample (one sample per worker
// per op, through LastCPUThread).
func BenchmarkPinning(b *testing.B) {
	cpus, err := Allowed()
	if err != nil {
		b.Fatal(err)
	}
	l2 := l2CacheBytes(cpus[0])
	n := l2 / 2 / 4 // uint32 slots
	b.Logf("%d workers, L2 %d KiB, %d KiB per worker", len(cpus), l2>>10, n*4>>10)
	for _, mode := range []string{"pinned", "unpinned"} {
		b.Run(mode, func(b *testing.B) { benchPinning(b, cpus, n, mode == "pinned") })
	}
}

var benchSink atomic.Uint32

func benchPinning(b *testing.B, cpus CPUSet, n int, pin bool) {
	pid := os.Getpid()
	var migrations atomic.Int64
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(len(cpus))
	for w, cpu := range cpus {
		wg.Go(func() {
			if pin {
				release, err := PinThread(cpu)
				defer release()
				if err != nil {
					b.Error(err)
					ready.Done()
					return
				}
			}
			ring := randomCycle(n, uint64(w)) // built here: first touch on the worker's CPU
			ready.Done()
			<-start
			last := -1
			i := uint32(0)
			for range b.N {
				for range n {
					i = ring[i]
				}
				runtime.LockOSThread() // nests inside PinThread
				now, err := LastCPUThread(pid, Gettid())
				runtime.UnlockOSThread()
				if err == nil {
					if last >= 0 && now != last {
						migrations.Add(1)
					}
					last = now
				}
			}
			benchSink.Add(i)
		})
	}
	ready.Wait()
	b.ResetTimer()
	close(start)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/hop")
	b.ReportMetric(float64(migrations.Load())/float64(b.N), "migrations/op")
}

// randomCycle returns a permutation of 0..n-1 that forms a single cycle
// (Sattolo's algorithm), so following it visits every slot in random order.
func randomCycle(n int, seed uint64) []uint32 {
	ring := make([]uint32, n)
	for i := range ring {
		ring[i] = uint32(i)
	}
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	for i := n - 1; i > 0; i-- {
		j := r.IntN(i)
		ring[i], ring[j] = ring[j], ring[i]
	}
	return ring
}

// l2CacheBytes returns the size of cpu's level-2 cache from sysfs, or 1 MiB.
func l2CacheBytes(cpu int) int {
	const fallback = 1 << 20
	dir := "/sys/devices/system/cpu/cpu" + strconv.Itoa(cpu) + "/cache/"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fallback
	}
	for _, e := range entries {
		level, err1 := os.ReadFile(dir + e.Name() + "/level")
		kind, err2 := os.ReadFile(dir + e.Name() + "/type")
		size, err3 := os.ReadFile(dir + e.Name() + "/size")
		if err1 != nil || err2 != nil || err3 != nil ||
			strings.TrimSpace(string(level)) != "2" || strings.TrimSpace(string(kind)) == "Instruction" {
			continue
		}
		s := strings.TrimSpace(string(size))
		mult := 1
		if k, ok := strings.CutSuffix(s, "K"); ok {
			s, mult = k, 1<<10
		} else if m, ok := strings.CutSuffix(s, "M"); ok {
			s, mult = m, 1<<20
		}
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			return v * mult
		}
	}
	return fallback
}

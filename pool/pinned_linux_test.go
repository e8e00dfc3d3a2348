package pool

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/corework/corework/affinity"
)

// TestPinnedWorkers checks, through /proc, that worker i runs on a thread
// whose Cpus_allowed_list is the i-th allowed CPU.
func TestPinnedWorkers(t *testing.T) {
	allowed, err := affinity.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	p := New(len(allowed), WithPinnedWorkers())
	var mu sync.Mutex
	seen := map[string]bool{}
	var bad []string
	release := make(chan struct{})
	var started sync.WaitGroup
	for i := 0; i < len(allowed); i++ {
		started.Add(1)
		p.Go(func() {
			tid := affinity.Gettid()
			data, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
			list := ""
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
					list = strings.TrimSpace(v)
				}
			}
			mu.Lock()
			if err != nil || list == "" {
				bad = append(bad, fmt.Sprintf("thread %d: %v %q", tid, err, list))
			}
			seen[list] = true
			mu.Unlock()
			started.Done()
			<-release // hold the worker so every task lands on its own worker
		})
	}
	started.Wait()
	close(release)
	p.Close()
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	for _, cpu := range allowed {
		if !seen[fmt.Sprint(cpu)] {
			t.Errorf("no worker pinned to CPU %d; workers' Cpus_allowed_list: %v", cpu, seen)
		}
	}
	if len(seen) != len(allowed) {
		t.Errorf("workers' Cpus_allowed_list: %v, want one per CPU of %v", seen, allowed)
	}
}

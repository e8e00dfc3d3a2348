package procpool

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCancelAnsweredSparesNext: a caller that gives up on a request whose
// reply the worker has made, but the parent not yet read, must not kill the
// worker, which runs another caller's request by then.
func TestCancelAnsweredSparesNext(t *testing.T) {
	p := onePool(t)
	w := p.slotList()[0].cur.Load()
	if w == nil || w.rep == nil {
		t.Skip("no reply ring")
	}
	ctx := context.Background()
	w.rmu.Lock() // nobody reads replies until the end
	locked := true
	defer func() {
		if locked {
			w.rmu.Unlock()
		}
	}()
	ctxA, cancelA := context.WithCancel(ctx)
	aDone := make(chan error, 1)
	go func() {
		_, err := napTask.Call(ctxA, p, 0)
		aDone <- err
	}()
	waitFor(t, "A's reply in the ring", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.answered()
	})
	bDone := make(chan error, 1)
	go func() {
		d, err := napTask.Call(ctx, p, 300*time.Millisecond)
		if err == nil && d != 300*time.Millisecond {
			t.Errorf("B returned %v", d)
		}
		bDone <- err
	}()
	req, _ := rings(w.shm)
	waitFor(t, "B taken by the worker", func() bool {
		return w.inflight.Load() == 2 && req.head.Load() == req.tail.Load()
	})
	cancelA()
	if err := <-aDone; err != context.Canceled {
		t.Fatalf("A: %v, want context.Canceled", err)
	}
	w.rmu.Unlock()
	locked = false
	if err := <-bDone; err != nil {
		t.Fatalf("B: %v", err)
	}
	if r := w.killReason.Load(); r != killNone {
		t.Fatalf("the worker was killed (reason %d) for a request it had answered", r)
	}
	if cur := p.slotList()[0].cur.Load(); cur != w {
		t.Fatal("the worker was replaced")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNotifyCounts: the reply ring's producer counts its frames off the
// number the sleeping consumer waits for and wakes it exactly once, when
// they have all come; kick wakes it whatever it waits for.
func TestNotifyCounts(t *testing.T) {
	mem := make([]byte, ringSize)
	wakes := 0
	w := &ringWriter{r: ringAt(mem), wake: func() error { wakes++; return nil }, lazy: true}
	w.r.sleep.Store(3)
	if _, err := w.writeNow([]byte("frame")); err != nil || wakes != 0 {
		t.Fatalf("a lazy write woke the consumer (%d wakes, %v)", wakes, err)
	}
	for i, step := range []struct {
		m     uint64
		held  bool
		wakes int
		left  uint64
	}{
		{0, false, 0, 3}, // nothing published: nothing held
		{1, true, 0, 2},
		{1, true, 0, 1},
		{2, false, 1, 0}, // more than it waits for: one wake
		{1, false, 1, 0}, // awake: nothing to do
	} {
		held, err := w.notify(step.m)
		if err != nil || held != step.held || wakes != step.wakes || w.r.sleep.Load() != step.left {
			t.Fatalf("step %d: notify(%d) = %v, %v; wakes %d, sleep word %d; want %v, %d, %d",
				i, step.m, held, err, wakes, w.r.sleep.Load(), step.held, step.wakes, step.left)
		}
	}
	w.r.sleep.Store(5)
	if err := w.kick(); err != nil || wakes != 2 || w.r.sleep.Load() != 0 {
		t.Fatalf("kick: %v, wakes %d, sleep word %d", err, wakes, w.r.sleep.Load())
	}
	if err := w.kick(); err != nil || wakes != 2 {
		t.Fatalf("kick of an awake consumer woke it (%d wakes, %v)", wakes, err)
	}
}

// TestKillIfRunningAfterUnmap: a caller giving up can call killIfRunning
// while the worker's process is being finished, after its rings were
// unmapped and before its requests were settled; the check for a made
// reply must not read the unmapped ring (it did: a fault in
// TestProcPoolHandler under the race detector).
func TestKillIfRunningAfterUnmap(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	r := &request{}
	w := &proc{shm: mem, fifo: []*request{r}, ended: true} // ended: kill signals nothing
	_, w.rep = rings(mem)
	w.rep.tail.Store(1) // a reply in the ring
	w.killIfRunning(r)
	if w.killReason.Load() != killNone {
		t.Fatal("killed the worker with the reply made")
	}
	w.closeFiles() // unmaps
	w.killIfRunning(r)
	if w.killReason.Load() != killCancel {
		t.Fatal("did not kill the worker of a request with no reply known")
	}
}

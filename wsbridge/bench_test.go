package wsbridge

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/gobwas/ws"
)

// BenchmarkRoundTrip measures submit -> result over loopback for a no-op
// job with 100 concurrent clients (Dial, one connection each), client and
// server in this process. Each client runs inflight loops that submit a job
// and Wait for its result before submitting the next: inflight=1 is strict
// request/response per connection, inflight=8 lets a connection carry 8 jobs
// at once so that frames share writes. It reports jobs/s, the p50 and p99
// latency of one submit -> result, and the CPU time of the whole process
// per job (a figure that other load on the machine disturbs less than
// jobs/s). Target: >= 50k jobs/s on 2 cores.
func BenchmarkRoundTrip(b *testing.B) {
	for _, inflight := range []int{1, 8} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) { benchRoundTrip(b, inflight) })
	}
}

func benchRoundTrip(b *testing.B, inflight int) {
	const clients = 100
	e := newEnv(b, Config{}, jobqueue.Config{})
	ctx := context.Background()
	cs := make([]*Client, clients)
	for i := range cs {
		// Wait does not need Events: with no buffer, events are dropped.
		c, err := Dial(ctx, e.url, WithEventBuffer(0))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
	}
	var wg sync.WaitGroup
	lat := make([][]time.Duration, clients*inflight)
	var next atomic.Int64
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for i := range clients * inflight {
		c := cs[i%clients]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "noop"})
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := c.Wait(ctx, id); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/elapsed.Seconds(), "jobs/s")
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		if cpu > 0 {
			b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-µs/job")
		}
	}
}

// BenchmarkIdleConnections holds 5,000 idle connections open at once and
// reports the memory each costs: the growth of live heap plus goroutine
// stacks between before the dial and after, divided by the connections.
// Both ends live in this process, so the figure includes the client side
// (a bare socket per connection: no goroutine, no buffer). Target: <= 16 KiB
// per connection.
//
// Each connection costs two descriptors here, one per end, so under a low
// RLIMIT_NOFILE (ulimit -n 1024, say) the benchmark holds as many as fit,
// keeping idleFDHeadroom descriptors spare, and logs how many; it skips
// when fewer than 100 fit.
func BenchmarkIdleConnections(b *testing.B) {
	n := idleConns
	if limit, ok := openFileLimit(); ok {
		fit := 0
		if limit > idleFDHeadroom {
			fit = int(min(limit-idleFDHeadroom, 2*idleConns) / 2)
		}
		if fit < 100 {
			b.Skipf("RLIMIT_NOFILE is %d: fewer than 100 connections fit (two descriptors each, %d spare)", limit, idleFDHeadroom)
		}
		if fit < n {
			n = fit
			b.Logf("RLIMIT_NOFILE is %d: holding %d connections instead of %d (two descriptors each, %d spare); raise it with ulimit -n for the full figure",
				limit, n, idleConns, idleFDHeadroom)
		}
	}
	for range b.N {
		benchIdle(b, n)
	}
}

const (
	idleConns      = 5000 // connections BenchmarkIdleConnections holds
	idleFDHeadroom = 128  // descriptors left for the rest of the process
)

func benchIdle(b *testing.B, n int) {
	e := newEnv(b, Config{}, jobqueue.Config{Workers: 1})
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	before := liveMemory()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 64)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// br holds the welcome message when it came with the
			// handshake's response; it is not kept.
			nc, _, _, err := ws.Dialer{Timeout: 10 * time.Second}.Dial(context.Background(), e.url)
			if err != nil {
				failed.Add(1)
				if nc != nil {
					nc.Close()
				}
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d dials failed", f)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.s.Stats().Connections < int64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.s.Stats().Connections; got != int64(n) {
		b.Fatalf("server holds %d connections, want %d", got, n)
	}
	after := liveMemory()
	b.ReportMetric(float64(after.heap+after.stack-before.heap-before.stack)/float64(n), "bytes/conn")
	b.ReportMetric(float64(after.heap-before.heap)/float64(n), "heap-B/conn")
	b.ReportMetric(float64(after.stack-before.stack)/float64(n), "stack-B/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
}

type memory struct{ heap, stack int64 }

// liveMemory returns the live heap and the goroutine stacks in use, after
// two garbage collections (the second lets the first's finalizers and
// stack shrinking settle).
func liveMemory() memory {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return memory{int64(m.HeapAlloc), int64(m.StackInuse)}
}

// BenchmarkHostileNeighbour measures what a flooding principal costs a
// well-behaved one. Principal alice (a Client) submits a short CPU job
// (fibonacci 15) every 5 ms, 200/s, and waits for each; the figure is the
// p99 of submit -> result. It runs twice: with the server otherwise idle
// (p99-quiet-µs), then while principal bob floods the same priority level
// from one raw connection, writing submit_job as fast as the server reads
// them, so that bob sits at its job quota (1000 active jobs) with the rest
// refused (p99-flood-µs); ratio is their quotient. Two workers. Each phase
// runs max(b.N, 500) of alice's jobs.
//
// Bob's jobs sleep 5 ms (flood=sleep), which measures the bridge and the
// queue's turn between owners, or compute fibonacci 24 (flood=cpu), which
// adds the contention for the CPUs: with as many workers as cores busy
// with bob's jobs, every goroutine on alice's path (her connection, the
// event router, the worker) waits for a core, up to the Go scheduler's
// time slice at each step.
func BenchmarkHostileNeighbour(b *testing.B) {
	for _, flood := range []struct{ name, job string }{
		{"sleep", `{"command":"submit_job","task_type":"sleep","data":{"Ms":5}}`},
		{"cpu", `{"command":"submit_job","task_type":"fibonacci","data":{"n":24}}`},
	} {
		b.Run("flood="+flood.name, func(b *testing.B) { benchNeighbour(b, flood.job) })
	}
}

func benchNeighbour(b *testing.B, floodJob string) {
	e := newEnv(b, Config{Authenticate: TokenAuth(tokens)}, jobqueue.Config{Workers: 2})
	ctx := context.Background()
	alice, err := Dial(ctx, e.url, WithToken("alice-token"), WithEventBuffer(0))
	if err != nil {
		b.Fatal(err)
	}
	defer alice.Close()
	n := max(b.N, 500)
	b.ResetTimer()
	quiet := neighbourP99(b, alice, n)

	bob := dialRaw(b, e.url, bearer("bob-token"))
	flood := frameBytes(ws.OpText, true, []byte(floodJob), true)
	stop := make(chan struct{})
	var refused atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			bob.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := bob.nc.Write(flood); err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			m, _, err := bob.read(10 * time.Second)
			if err != nil {
				return
			}
			if m["code"] == CodeQuota {
				refused.Add(1)
			}
		}
	}()
	for refused.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	flooded := neighbourP99(b, alice, n)
	b.StopTimer()
	close(stop)
	bob.nc.Close()
	wg.Wait()
	b.ReportMetric(float64(quiet.Microseconds()), "p99-quiet-µs")
	b.ReportMetric(float64(flooded.Microseconds()), "p99-flood-µs")
	b.ReportMetric(float64(flooded)/float64(max(quiet, 1)), "ratio")
	b.ReportMetric(float64(refused.Load()), "flood-refused")
}

// neighbourP99 submits n jobs at 200/s on c, each waited for on a
// goroutine of its own, and returns the p99 of their submit -> result.
func neighbourP99(b *testing.B, c *Client, n int) time.Duration {
	ctx := context.Background()
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for i := range n {
		<-t.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: []byte(`{"n":15}`)})
			if err == nil {
				_, err = c.Wait(ctx, id)
			}
			if err != nil {
				b.Error(err)
			}
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	return lat[len(lat)*99/100]
}

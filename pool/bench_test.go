package pool

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sync/errgroup"
)

var sink atomic.Int64

// tiny is the task every sub-benchmark runs: a few nanoseconds of work.
func tiny() { sink.Add(1) }

// BenchmarkGo compares the cost per tiny task of this pool, of a plain
// goroutine per task with a WaitGroup, of errgroup with SetLimit and of a
// hand-written channel of workers, all with GOMAXPROCS workers.
func BenchmarkGo(b *testing.B) {
	n := runtime.GOMAXPROCS(0)
	b.Run("pool", func(b *testing.B) {
		p := New(n)
		defer p.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			p.Go(tiny)
		}
		p.Wait()
	})
	b.Run("goroutines", func(b *testing.B) {
		var wg sync.WaitGroup
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			wg.Add(1)
			go func() {
				tiny()
				wg.Done()
			}()
		}
		wg.Wait()
	})
	b.Run("errgroup", func(b *testing.B) {
		var g errgroup.Group
		g.SetLimit(n)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			g.Go(func() error {
				tiny()
				return nil
			})
		}
		_ = g.Wait()
	})
	b.Run("channel", func(b *testing.B) {
		ch := make(chan func(), 8*n)
		var wg sync.WaitGroup
		for w := 0; w < n; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for fn := range ch {
					fn()
				}
			}()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ch <- tiny
		}
		close(ch)
		wg.Wait()
	})
}

package pool_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/corework/corework/panics"
	"github.com/corework/corework/pool"
)

func Example() {
	p := pool.New(4) // at most 4 tasks at once
	defer p.Close()

	var sum atomic.Int64
	for i := 1; i <= 100; i++ {
		p.Go(func() { sum.Add(int64(i)) })
	}
	p.Wait()
	fmt.Println(sum.Load())
	// Output: 5050
}

func ExamplePool_Submit() {
	p := pool.New(1, pool.WithQueueSize(0))
	defer p.Close()
	release := make(chan struct{})
	p.Go(func() { <-release }) // the only worker is now busy

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := p.Submit(ctx, func() {})
	fmt.Println(err)
	close(release)
	// Output: context deadline exceeded
}

func ExamplePool_Group() {
	p := pool.New(0)
	defer p.Close()

	g := p.Group(context.Background())
	for _, name := range []string{"a.txt", "b.txt", "broken.txt"} {
		g.Go(func(ctx context.Context) error {
			if strings.HasPrefix(name, "broken") {
				return fmt.Errorf("open %s: %w", name, errors.ErrUnsupported)
			}
			return nil
		})
	}
	fmt.Println(g.Wait())
	// Output: open broken.txt: unsupported operation
}

func ExampleMap() {
	p := pool.New(0)
	defer p.Close()

	squares, err := pool.Map(context.Background(), p, []int{1, 2, 3, 4}, func(_ context.Context, n int) (int, error) {
		return n * n, nil
	})
	fmt.Println(squares, err)
	// Output: [1 4 9 16] <nil>
}

func ExampleMapSeq() {
	p := pool.New(0)
	defer p.Close()

	words := slices.Values([]string{"go", "pool", "map"})
	for n, err := range pool.MapSeq(context.Background(), p, words, func(_ context.Context, w string) (int, error) {
		return len(w), nil
	}, pool.WithInFlight(2)) {
		fmt.Println(n, err)
	}
	// Output:
	// 2 <nil>
	// 4 <nil>
	// 3 <nil>
}

func ExampleWithPanicHandler() {
	p := pool.New(2, pool.WithPanicHandler(func(pe *panics.Error) {
		fmt.Println("recovered:", pe)
	}))
	p.Go(func() { panic("disk full") })
	p.Wait()
	p.Close()
	fmt.Println("panicked:", p.Stats().Panicked)
	// Output:
	// recovered: pool: task panicked: disk full
	// panicked: 1
}

package procpool_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"

	"github.com/corework/corework/procpool"
)

// square is registered at initialization, so the workers have it too.
var square = procpool.Register("example.square", func(_ context.Context, n int) (int, error) {
	return n * n, nil
})

var crash = procpool.Register("example.crash", func(_ context.Context, code int) (int, error) {
	os.Exit(code)
	return 0, nil
})

// Example starts two worker processes and maps a task over them. The
// program's main (here TestMain) calls procpool.Main first.
func Example() {
	p, err := procpool.New(procpool.WithWorkers(2))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()

	v, err := square.Call(ctx, p, 12)
	fmt.Println(v, err)

	out, err := square.Map(ctx, p, []int{1, 2, 3, 4, 5}, procpool.WithChunkSize(2))
	fmt.Println(out, err)
	// Output:
	// 144 <nil>
	// [1 4 9 16 25] <nil>
}

// ExampleTask_Stream yields outputs as they complete, with their inputs'
// indexes.
func ExampleTask_Stream() {
	p, err := procpool.New(procpool.WithWorkers(2))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	var got []string
	for r, err := range square.Stream(context.Background(), p, slices.Values([]int{3, 4, 5})) {
		if err != nil {
			log.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%d", r.Index, r.Value))
	}
	slices.Sort(got) // completion order varies
	fmt.Println(got)
	// Output: [0:9 1:16 2:25]
}

// ExampleCrashError shows a worker dying in a task: only that call fails,
// and a new worker takes its place.
func ExampleCrashError() {
	p, err := procpool.New(procpool.WithWorkers(1), procpool.WithOutput(os.Stdout))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	_, err = crash.Call(ctx, p, 3)
	var ce *procpool.CrashError
	fmt.Println(errors.Is(err, procpool.ErrWorkerCrashed), errors.As(err, &ce) && ce.State.ExitCode() == 3)
	v, err := square.Call(ctx, p, 7)
	fmt.Println(v, err, p.Stats().Restarts)
	// Output:
	// true true
	// 49 <nil> 1
}

// Resize grows a pool for a burst and shrinks it after: the new workers
// are ready when it returns; a removed one finishes what it was sent, then
// exits. A queue's autoscaler calls it from jobqueue.Autoscale.OnResize.
func ExamplePool_Resize() {
	p, err := procpool.New(procpool.WithWorkers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	if err := p.Resize(4); err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Workers(), "workers,", p.Stats().Alive, "running")
	out, err := square.Map(context.Background(), p, []int{1, 2, 3, 4})
	fmt.Println(out, err)
	if err := p.Resize(1); err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Workers(), "worker")
	// Output:
	// 4 workers, 4 running
	// [1 4 9 16] <nil>
	// 1 worker
}

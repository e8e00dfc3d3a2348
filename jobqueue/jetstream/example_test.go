package jetstream_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/jetstream"
)

// An embedded server with file storage in a temporary directory, a queue on
// it, one job submitted and its result printed.
func Example() {
	dir, err := os.MkdirTemp("", "corework-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	backend, err := jetstream.Embedded(dir)
	if err != nil {
		log.Fatal(err)
	}
	q, err := jobqueue.New(jobqueue.Config{Backend: backend, Workers: 2})
	if err != nil {
		log.Fatal(err)
	}
	jobqueue.HandleFunc(q, "greet", func(ctx context.Context, name string) (string, error) {
		return "hello, " + name, nil
	})
	if err := q.Start(); err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "greet", Payload: []byte(`"JetStream"`), Priority: jobqueue.High})
	if err != nil {
		log.Fatal(err)
	}
	info, err := q.Wait(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.State, string(info.Result))

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := q.Shutdown(sctx); err != nil { // also stops the embedded server
		log.Fatal(err)
	}
	// Output: succeeded "hello, JetStream"
}

// Worker processes on other machines join a listening server with Connect;
// a process that only submits and watches sets NoWorkers.
func ExampleConnect() {
	dir, err := os.MkdirTemp("", "corework-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := jetstream.NewServer(dir, jetstream.WithListen("127.0.0.1:0"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()

	backend, err := jetstream.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	producer, err := jobqueue.New(jobqueue.Config{Backend: backend, NoWorkers: true})
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Shutdown(context.Background())
	id, err := producer.Submit(context.Background(), jobqueue.JobRequest{Type: "resize", Payload: []byte(`{"w":64}`)})
	if err != nil {
		log.Fatal(err)
	}
	info, err := producer.Get(context.Background(), id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Type, info.State)
	// Output: resize pending
}

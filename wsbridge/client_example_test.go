package wsbridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
)

// A program that comes back as the same anonymous principal after a
// restart, and so finds its jobs: it saves the Client's resume credential
// and dials with it on its next run. (The server keeps its ResumeKey
// across restarts.)
func ExampleWithResume() {
	ctx := context.Background()
	q, _ := jobqueue.New(jobqueue.Config{})
	jobqueue.HandleFunc(q, "fibonacci", func(ctx context.Context, in struct{ N int }) (int, error) {
		return fib(in.N), nil
	})
	_ = q.Start()
	bridge := wsbridge.New(q, wsbridge.Config{ResumeKey: []byte("a key kept in the server's configuration")})
	srv := httptest.NewServer(bridge)
	defer func() {
		_ = bridge.Shutdown(ctx)
		srv.Close()
		_ = q.Shutdown(ctx)
	}()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	// The first run submits a job and saves its ID and the credential.
	c, err := wsbridge.Dial(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	id, _ := c.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: json.RawMessage(`{"N":30}`)})
	cred, principal := c.ResumeCredential(), c.Principal()
	c.Close()

	// The next run.
	c, err = wsbridge.Dial(ctx, url, wsbridge.WithResume(cred))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println("same principal:", c.Principal() == principal)
	info, err := c.Wait(ctx, id)
	fmt.Println(info.State, string(info.Result), err)
	// Output:
	// same principal: true
	// succeeded 832040 <nil>
}

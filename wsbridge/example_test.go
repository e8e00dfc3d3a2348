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

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

// A server on httptest and a Go client that submits a job and prints its
// result.
func ExampleDial() {
	ctx := context.Background()
	q, _ := jobqueue.New(jobqueue.Config{})
	jobqueue.HandleFunc(q, "fibonacci", func(ctx context.Context, in struct{ N int }) (int, error) {
		return fib(in.N), nil
	})
	_ = q.Start()
	bridge := wsbridge.New(q, wsbridge.Config{})
	srv := httptest.NewServer(bridge)
	defer func() {
		_ = bridge.Shutdown(ctx)
		srv.Close()
		_ = q.Shutdown(ctx)
	}()

	c, err := wsbridge.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: json.RawMessage(`{"N":30}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	info, err := c.Wait(ctx, id)
	fmt.Println(info.State, string(info.Result), err)
	// Output: succeeded 832040 <nil>
}

// A server that wants a token: browsers pass it in the URL's query,
// programs in a header.
func ExampleTokenAuth() {
	ctx := context.Background()
	q, _ := jobqueue.New(jobqueue.Config{})
	_ = q.Start()
	bridge := wsbridge.New(q, wsbridge.Config{Authorize: wsbridge.TokenAuth("s3cret")})
	srv := httptest.NewServer(bridge)
	defer func() {
		_ = bridge.Shutdown(ctx)
		srv.Close()
		_ = q.Shutdown(ctx)
	}()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	_, err := wsbridge.Dial(ctx, url)
	fmt.Println("without the token:", err != nil)
	c, err := wsbridge.Dial(ctx, url, wsbridge.WithToken("s3cret"))
	fmt.Println("with the token:", err)
	c.Close()
	c, err = wsbridge.Dial(ctx, url+"/?token=s3cret")
	fmt.Println("with the token in the query:", err)
	c.Close()
	// Output:
	// without the token: true
	// with the token: <nil>
	// with the token in the query: <nil>
}

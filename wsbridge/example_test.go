package wsbridge_test

import (
	"context"
	"encoding/json"
	"errors"
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

// A server that wants a token, each naming a principal: browsers pass it
// in the URL's query, programs in a header. Each principal sees and acts
// on its own jobs only: another's job is not found.
func ExampleTokenAuth() {
	ctx := context.Background()
	q, _ := jobqueue.New(jobqueue.Config{})
	jobqueue.HandleFunc(q, "fibonacci", func(ctx context.Context, in struct{ N int }) (int, error) {
		return fib(in.N), nil
	})
	_ = q.Start()
	bridge := wsbridge.New(q, wsbridge.Config{Authenticate: wsbridge.TokenAuth(map[string]wsbridge.Principal{
		"alice-s3cret": {Name: "alice"},
		"bob-s3cret":   {Name: "bob"},
	})})
	srv := httptest.NewServer(bridge)
	defer func() {
		_ = bridge.Shutdown(ctx)
		srv.Close()
		_ = q.Shutdown(ctx)
	}()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	_, err := wsbridge.Dial(ctx, url)
	fmt.Println("without a token:", errors.Is(err, wsbridge.ErrUnauthorized) || err != nil)
	alice, err := wsbridge.Dial(ctx, url, wsbridge.WithToken("alice-s3cret"))
	fmt.Println("alice:", err)
	defer alice.Close()
	bob, err := wsbridge.Dial(ctx, url+"/?token=bob-s3cret")
	fmt.Println("bob, token in the query:", err)
	defer bob.Close()

	id, _ := alice.Submit(ctx, jobqueue.JobRequest{Type: "fibonacci", Payload: json.RawMessage(`{"N":10}`)})
	_, err = bob.Get(ctx, id)
	fmt.Println("bob reads alice's job:", errors.Is(err, jobqueue.ErrNotFound))
	info, err := alice.Wait(ctx, id)
	fmt.Println("alice waits for it:", info.State, string(info.Result), err)
	// Output:
	// without a token: true
	// alice: <nil>
	// bob, token in the query: <nil>
	// bob reads alice's job: true
	// alice waits for it: succeeded 55 <nil>
}

// A server open to anonymous clients, each a principal of its own, that
// also knows an operator token (fresh at each start: print the operator's
// URL, as Jupyter does). A wrong token is refused rather than taken as
// anonymous.
func ExampleOptionalTokenAuth() {
	ctx := context.Background()
	q, _ := jobqueue.New(jobqueue.Config{})
	_ = q.Start()
	operator := wsbridge.NewToken()
	bridge := wsbridge.New(q, wsbridge.Config{
		Authenticate: wsbridge.OptionalTokenAuth(map[string]wsbridge.Principal{
			operator: {Name: "operator", Operator: true},
		}),
		Fallback: wsbridge.Dashboard(),
	})
	srv := httptest.NewServer(bridge)
	defer func() {
		_ = bridge.Shutdown(ctx)
		srv.Close()
		_ = q.Shutdown(ctx)
	}()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	_ = srv.URL + "/?token=" + operator // the dashboard's operator view

	c, err := wsbridge.Dial(ctx, url)
	fmt.Println("anonymous:", err)
	c.Close()
	c, err = wsbridge.Dial(ctx, url, wsbridge.WithToken(operator))
	fmt.Println("operator:", err)
	c.Close()
	_, err = wsbridge.Dial(ctx, url, wsbridge.WithToken("guess"))
	fmt.Println("wrong token refused:", err != nil)
	// Output:
	// anonymous: <nil>
	// operator: <nil>
	// wrong token refused: true
}

package wsbridge_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

// A server behind TLS with a certificate of its own (here one made by
// httptest; in production a Let's Encrypt certificate needs no option):
// the client trusts it with WithTLSConfig and dials wss://.
func ExampleWithTLSConfig() {
	ctx := context.Background()
	q, _ := jobqueue.New(jobqueue.Config{})
	defer q.Shutdown(ctx)
	jobqueue.HandleFunc(q, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	q.Start()
	srv := wsbridge.New(q, wsbridge.Config{})
	hs := httptest.NewTLSServer(srv)
	defer hs.Close()
	defer srv.Shutdown(ctx)

	roots := x509.NewCertPool()
	roots.AddCert(hs.Certificate()) // or x509.SystemCertPool, plus your CA's PEM
	c, err := wsbridge.Dial(ctx, "wss"+strings.TrimPrefix(hs.URL, "https"),
		wsbridge.WithTLSConfig(&tls.Config{RootCAs: roots}))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	id, _ := c.Submit(ctx, jobqueue.JobRequest{Type: "double", Payload: json.RawMessage("21")})
	info, _ := c.Wait(ctx, id)
	fmt.Println(string(info.Result))
	// Output: 42
}

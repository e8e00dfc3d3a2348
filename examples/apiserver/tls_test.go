package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/examples/internal/testcert"
	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
)

// TestTLS runs the program with -tls-cert and -tls-key (a certificate made
// by the test) and tokens: a job goes in over https:// and its result comes
// back, the WebSocket on /ws works over wss:// with the same token, and a
// plain http:// request is refused.
func TestTLS(t *testing.T) {
	certFile, keyFile, roots := testcert.Write(t)
	url, stop, log := startRun(t, config{workers: 1, grace: 100 * time.Millisecond, tlsCert: certFile, tlsKey: keyFile, tokens: tokenFile(t)})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v\n%s", err, log)
		}
	}()
	if !strings.HasPrefix(url, "https://127.0.0.1:") || !strings.Contains(log.String(), "listening on https://") {
		t.Fatalf("url %s; log %s", url, log)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	status, h, b := doAs(t, c, aliceToken, "POST", url+"/jobs", "application/json", `{"type":"fib-big","payload":{"n":90}}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST over https: %d %s", status, b)
	}
	var info jobqueue.JobInfo
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_, _, b = doAs(t, c, aliceToken, "GET", url+h.Get("Location"), "", "")
		if err := json.Unmarshal(b, &info); err != nil {
			t.Fatal(err)
		}
		if info.State.Final() {
			break
		}
	}
	if info.State != jobqueue.StateSucceeded || !strings.Contains(string(info.Result), "2880067194370816120") {
		t.Fatalf("job over https: %s %s", info.State, info.Result)
	}
	// The bridge on /ws, over wss://, with the same token.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wc, err := wsbridge.Dial(ctx, "wss"+strings.TrimPrefix(url, "https")+"/ws", wsbridge.WithToken(aliceToken),
		wsbridge.WithTLSConfig(&tls.Config{RootCAs: roots}), wsbridge.WithReconnect(0, 0))
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	defer wc.Close()
	if wc.Principal() != "alice" {
		t.Fatalf("principal over wss: %q", wc.Principal())
	}
	// Plain http to the TLS port: no answer from the API.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http" + strings.TrimPrefix(url, "https") + "/stats"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain http answered by the TLS server")
		}
	}
}

package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/examples/internal/testcert"
	"github.com/corework/corework/wsbridge"
)

// TestTLS serves with -tls-cert and -tls-key (a certificate made by the
// test): the client session runs over wss:// trusting it (-ca), the
// dashboard comes over https://, and a plain ws:// client is refused.
func TestTLS(t *testing.T) {
	certFile, keyFile, roots := testcert.Write(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addr, srvOut := startServer(t, ctx, config{addr: "127.0.0.1:0", workers: 2, statsTick: time.Second,
		tlsCert: certFile, tlsKey: keyFile})
	if !regexp.MustCompile(`serving the dashboard on https://127\.0\.0\.1:\d+/ and WebSocket jobs on wss://`).MatchString(srvOut.String()) {
		t.Errorf("server output: %s", srvOut.String())
	}
	// The command line's client: -ca is the server's certificate.
	cmd, err := parseArgs([]string{"client", "-addr", addr.String(), "-ca", certFile}, io.Discard)
	if err != nil || !cmd.cfg.tls {
		t.Fatalf("client -ca: %+v, %v", cmd.cfg, err)
	}
	tc, err := trusting(cmd.cfg.ca)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	jobs, err := runClient(ctx, &out, "wss://"+addr.String()+"/", quickSession, nil, wsbridge.WithTLSConfig(tc))
	if err != nil {
		t.Fatalf("client over wss: %v\n%s", err, out.String())
	}
	for _, j := range jobs {
		if j.started.IsZero() {
			t.Errorf("job %s never started over wss", j.name)
		}
	}
	// The dashboard over https.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + addr.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || !strings.Contains(string(page), "<html") {
		t.Fatalf("dashboard over https: %d", resp.StatusCode)
	}
	// A client that speaks plain ws:// to it gets no WebSocket.
	if c, err := wsbridge.Dial(ctx, "ws://"+addr.String()+"/", wsbridge.WithReconnect(0, 0), wsbridge.WithDialTimeout(2*time.Second)); err == nil {
		c.Close()
		t.Fatal("a plain ws:// client connected to the TLS server")
	}
	// Flags that go together.
	if _, err := parseArgs([]string{"-tls-cert", certFile}, io.Discard); err == nil {
		t.Error("-tls-cert without -tls-key accepted")
	}
}

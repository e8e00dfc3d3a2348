package wsbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestTLS serves the bridge over TLS (a certificate made for the test by
// httptest): the Go client submits a job over wss:// trusting that
// certificate, the dashboard page comes over https:// (with the Origin a
// browser on that page sends, the upgrade is admitted), and a client that
// does not trust the certificate is refused at the handshake.
func TestTLS(t *testing.T) {
	q, err := jobqueue.New(jobqueue.Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	jobqueue.HandleFunc(q, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	s := New(q, Config{Fallback: Dashboard()})
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	hs.StartTLS()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		hs.Close()
		q.Shutdown(ctx)
	}()
	roots := x509.NewCertPool()
	roots.AddCert(hs.Certificate())
	wss := "wss" + strings.TrimPrefix(hs.URL, "https")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, wss, WithTLSConfig(&tls.Config{RootCAs: roots}), WithReconnect(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := c.Submit(ctx, jobqueue.JobRequest{Type: "double", Payload: []byte("21")})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Wait(ctx, id)
	if err != nil || string(info.Result) != "42" {
		t.Fatalf("Run over wss: %s, %v", info.Result, err)
	}

	// The dashboard over https, and an upgrade from that page's origin.
	resp, err := hs.Client().Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<html") || resp.TLS == nil {
		t.Fatalf("dashboard over https: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	c2, err := Dial(ctx, wss, WithTLSConfig(&tls.Config{RootCAs: roots}), WithReconnect(0, 0),
		WithHeader(http.Header{"Origin": {hs.URL}}))
	if err != nil {
		t.Fatalf("upgrade with the page's https origin: %v", err)
	}
	c2.Close()

	// Without trusting the test certificate: refused.
	if c3, err := Dial(ctx, wss, WithReconnect(0, 0)); err == nil {
		c3.Close()
		t.Fatal("a client that does not trust the certificate connected")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: %v", err)
	}
}

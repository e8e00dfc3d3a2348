package monitor_test

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corework/corework/monitor"
)

// TestHandlerGzip checks that a scraper accepting gzip gets a gzipped
// exposition and one that does not gets it plain.
func TestHandlerGzip(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "corework_test_total", Help: "A test counter."})
	c.Add(3)
	reg.MustRegister(c)
	srv := httptest.NewServer(monitor.Handler(reg))
	defer srv.Close()
	// A Transport that leaves Accept-Encoding and decompression to us.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	get := func(accept string) (*http.Response, string) {
		req, err := http.NewRequest("GET", srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatalf("gzip body: %v", err)
			}
			r = zr
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	for _, accept := range []string{"gzip", "deflate, gzip;q=0.9", "GZIP"} {
		resp, body := get(accept)
		if resp.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(body, "corework_test_total 3") {
			t.Errorf("Accept-Encoding %q: encoding %q, body %q", accept, resp.Header.Get("Content-Encoding"), body)
		}
	}
	for _, accept := range []string{"", "identity", "gzip;q=0"} {
		resp, body := get(accept)
		if resp.Header.Get("Content-Encoding") != "" || !strings.Contains(body, "corework_test_total 3") {
			t.Errorf("Accept-Encoding %q: encoding %q, body %q", accept, resp.Header.Get("Content-Encoding"), body)
		}
	}
}

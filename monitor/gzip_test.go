package monitor_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/corework/corework/monitor"
)

// scrapeEncoded sends one GET to url with the Accept-Encoding lines accept
// (none if accept is nil) through a Transport that leaves the encoding to
// us, and returns the response, its Content-Encoding and its body decoded
// by that header. A body said to be gzip must decode as gzip; a body not
// said to be must not begin with the gzip magic number.
func scrapeEncoded(t *testing.T, client *http.Client, url string, accept []string) (resp *http.Response, encoding, body string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accept {
		req.Header.Add("Accept-Encoding", a)
	}
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	encoding = resp.Header.Get("Content-Encoding")
	switch encoding {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("Accept-Encoding %q: Content-Encoding gzip, body not gzip: %v", accept, err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("Accept-Encoding %q: gzip body: %v", accept, err)
		}
		return resp, encoding, string(b)
	case "":
		if bytes.HasPrefix(raw, []byte{0x1f, 0x8b}) {
			t.Fatalf("Accept-Encoding %q: no Content-Encoding, gzip body", accept)
		}
		return resp, encoding, string(raw)
	default:
		t.Fatalf("Accept-Encoding %q: Content-Encoding %q", accept, encoding)
		return nil, "", ""
	}
}

// TestHandlerGzip checks the content negotiation of monitor.Handler over
// HTTP: each Accept-Encoding gets a gzipped body (Content-Encoding: gzip
// and a body that decodes as gzip) or a plain one (no Content-Encoding and
// a body that is not gzip), and both hold the exposition; every response
// says Vary: Accept-Encoding.
func TestHandlerGzip(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "corework_test_total", Help: "A test counter."})
	c.Add(3)
	reg.MustRegister(c)
	srv := httptest.NewServer(monitor.Handler(reg))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()

	for _, tc := range []struct {
		accept []string // the Accept-Encoding lines
		gzip   bool
	}{
		// Refusals of gzip, however spelled.
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip;q=0.0"}, false},
		{[]string{"gzip;q=0.000"}, false},
		{[]string{"gzip;Q=0"}, false},
		{[]string{"GZIP;q=0"}, false},
		{[]string{"gzip ; q=0."}, false},
		{[]string{"gzip;q=0.", "deflate"}, false},
		{[]string{"x-gzip;q=0"}, false},
		{[]string{"*;q=0"}, false},
		{[]string{"gzip;q=0, *"}, false},
		{[]string{"*, gzip;q=0"}, false},
		{[]string{"gzip, gzip;q=0"}, false}, // listed twice: the lower weight
		{[]string{"gzip", "gzip;q=0"}, false},
		// gzip not acceptable, or less wanted than identity.
		{nil, false},
		{[]string{""}, false},
		{[]string{"identity"}, false},
		{[]string{"deflate, br"}, false},
		{[]string{"gzip;q=0.5, identity"}, false},
		{[]string{"gzip;q=0.5, *"}, false},
		{[]string{"gzip;q=0.001, identity;q=0.002"}, false},
		// Malformed fields: identity, whatever they mention.
		{[]string{"gzip;q=1.5"}, false},
		{[]string{"gzip;q=0.0001"}, false},
		{[]string{"gzip;q=abc"}, false},
		{[]string{"gzip;q=1.001"}, false},
		{[]string{"gzip;q = 1"}, false},
		{[]string{"gzip;level=9"}, false},
		{[]string{"gzip;q=1;q=0"}, false},
		{[]string{"gz ip"}, false},
		{[]string{"gzip", "gzip;q=0.0001"}, false},
		{[]string{"gzip;q=0.0001, *"}, false},
		// gzip acceptable and at least as wanted as identity.
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"Gzip"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"gzip;q=0.5"}, true},
		{[]string{"gzip;q=0.001"}, true},
		{[]string{"gzip;q=1.000"}, true},
		{[]string{"*"}, true},
		{[]string{"deflate, gzip;q=1.0"}, true},
		{[]string{"deflate, gzip;q=0.9"}, true},
		{[]string{"gzip;q=1, identity;q=0.5"}, true},
		{[]string{"gzip;q=0.5, identity;q=0.5"}, true},
		{[]string{"identity;q=0, *"}, true},
		{[]string{"identity;q=0, gzip;q=0.1"}, true},
		{[]string{" \tgzip\t;\tq=0.8 , , identity ;q=0.3,"}, true},
		{[]string{"deflate", "gzip"}, true},
		{[]string{"br, zstd, deflate, gzip"}, true}, // curl --compressed, browsers
	} {
		resp, enc, body := scrapeEncoded(t, client, srv.URL, tc.accept)
		if resp.StatusCode != http.StatusOK || (enc == "gzip") != tc.gzip || !strings.Contains(body, "corework_test_total 3") {
			t.Errorf("Accept-Encoding %q: status %d, Content-Encoding %q (want gzip: %v), body %q",
				tc.accept, resp.StatusCode, enc, tc.gzip, body)
		}
		if !slices.Contains(resp.Header.Values("Vary"), "Accept-Encoding") {
			t.Errorf("Accept-Encoding %q: Vary %q", tc.accept, resp.Header.Values("Vary"))
		}
	}
}

// TestHandlerGzipError checks that a failed gather gives HTTP 500 with the
// error in a body that the client can read, gzip accepted or not (promhttp
// drops Content-Encoding on its error path, so the body must go out plain).
func TestHandlerGzipError(t *testing.T) {
	g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		return nil, errors.New("sensor unplugged")
	})
	srv := httptest.NewServer(monitor.Handler(g))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	for _, accept := range [][]string{{"gzip"}, nil} {
		resp, enc, body := scrapeEncoded(t, client, srv.URL, accept)
		if resp.StatusCode != http.StatusInternalServerError || enc != "" || !strings.Contains(body, "sensor unplugged") {
			t.Errorf("Accept-Encoding %q: status %d, Content-Encoding %q, body %q", accept, resp.StatusCode, enc, body)
		}
	}
}

// TestHandlerGzipEmpty checks that a registry with nothing in it gives an
// empty body that is still a valid gzip stream when gzip is accepted.
func TestHandlerGzipEmpty(t *testing.T) {
	srv := httptest.NewServer(monitor.Handler(prometheus.NewRegistry()))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	resp, enc, body := scrapeEncoded(t, client, srv.URL, []string{"gzip"})
	if resp.StatusCode != http.StatusOK || enc != "gzip" || body != "" {
		t.Errorf("status %d, Content-Encoding %q, body %q", resp.StatusCode, enc, body)
	}
}

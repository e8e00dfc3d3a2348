package main

import (
	"context"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/corework/corework/pool"
)

// maxBody is how much of a response the scraper reads; the rest is not
// downloaded.
const maxBody = 4 << 20

// maxTitle caps a stored title, in bytes, for pages whose <title> never ends.
const maxTitle = 512

// page is the result of fetching one URL: one row of the database.
type page struct {
	URL       string
	Title     string
	Status    int           // HTTP status code; 0 if no response arrived
	Bytes     int64         // body bytes read
	Duration  time.Duration // from sending the request to the end of the body
	FetchedAt time.Time
	Err       string // why the fetch failed; empty on success
}

// fetcher fetches pages over HTTP; each request is bounded by its own
// timeout.
type fetcher struct {
	transport *http.Transport
	client    *http.Client
	timeout   time.Duration
	log       *slog.Logger // a Debug record per fetch; nil: none
}

// newFetcher returns a fetcher whose connection pool keeps up to workers
// idle connections per host, so a pool of that many goroutines reuses them.
// If site is not empty, it is the address of the built-in site: requests
// to siteHost go there, never through a proxy.
func newFetcher(workers int, timeout time.Duration, site string) *fetcher {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy: func(r *http.Request) (*url.URL, error) {
			if site != "" && r.URL.Hostname() == siteHost {
				return nil, nil
			}
			return http.ProxyFromEnvironment(r)
		},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if site != "" && addr == net.JoinHostPort(siteHost, "80") {
				addr = site
			}
			return d.DialContext(ctx, network, addr)
		},
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		MaxIdleConns:        2 * workers,
		MaxIdleConnsPerHost: workers,
		ForceAttemptHTTP2:   true,
	}
	// The per-request context (see fetch) bounds the whole exchange,
	// body included, so the client needs no Timeout of its own.
	return &fetcher{transport: t, client: &http.Client{Transport: t}, timeout: timeout}
}

// close releases the idle connections and their goroutines.
func (f *fetcher) close() { f.transport.CloseIdleConnections() }

// fetch gets url and extracts its title. Every failure (bad status, network
// error, the per-request timeout) is recorded in the returned page; the
// error is non-nil only when ctx itself ended, and then the page is not a
// result.
func (f *fetcher) fetch(ctx context.Context, url string) (page, error) {
	p := page{URL: url, FetchedAt: time.Now()}
	reqCtx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	err := f.get(reqCtx, &p)
	p.Duration = time.Since(p.FetchedAt)
	if err != nil {
		if ctx.Err() != nil {
			return p, ctx.Err() // the caller gave up, not this request's own timeout
		}
		p.Err = err.Error()
	}
	if f.log != nil {
		f.log.Debug("fetched", "url", p.URL, "status", p.Status, "bytes", p.Bytes, "duration", p.Duration, "err", p.Err)
	}
	return p, nil
}

func (f *fetcher) get(ctx context.Context, p *page) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "corework-scraper/1 (+https://github.com/corework/corework)")
	req.Header.Set("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5")
	resp, err := f.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	p.Status = resp.StatusCode
	body := &countingReader{r: io.LimitReader(resp.Body, maxBody)}
	p.Title = extractTitle(body)
	// Read the rest to count it and to let the connection be reused.
	if _, err := io.Copy(io.Discard, body); err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	p.Bytes = body.n
	if resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// extractTitle returns the text of the first <title> element in r, with
// runs of white space collapsed, or "" if there is none. It reads r only
// up to the end of the title and accepts any HTML, however malformed:
// entities are decoded, invalid UTF-8 is replaced and a title that never
// closes is cut at maxTitle bytes.
func extractTitle(r io.Reader) string {
	z := html.NewTokenizer(r)
	z.SetMaxBuf(64 << 10) // a single token may not hold more than this in memory
	var b strings.Builder
	inTitle := false
	for {
		switch z.Next() {
		case html.ErrorToken: // io.EOF, a read error, or a token over the buffer limit
			if !inTitle {
				return ""
			}
			return cleanTitle(b.String())
		case html.StartTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = true
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); inTitle && string(name) == "title" {
				return cleanTitle(b.String())
			}
		case html.TextToken:
			if inTitle && b.Len() < maxTitle {
				b.Write(z.Text())
			}
		}
	}
}

func cleanTitle(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	if len(s) > maxTitle {
		s = s[:maxTitle]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return strings.TrimSpace(s)
}

// sequential fetches urls one after another on the calling goroutine. It
// yields one page per URL, or a final ctx.Err() if ctx ends first.
func sequential(ctx context.Context, f *fetcher, urls []string) iter.Seq2[page, error] {
	return func(yield func(page, error) bool) {
		for _, u := range urls {
			p, err := f.fetch(ctx, u)
			if err != nil {
				yield(page{}, err)
				return
			}
			if !yield(p, nil) {
				return
			}
		}
	}
}

// concurrent fetches urls on p, at most p.Size() at once, and yields one
// page per URL in input order as they complete, or a final ctx.Err() if
// ctx ends first (requests in flight are then cancelled and not yielded).
// Stopping the iteration cancels and waits for the requests in flight.
func concurrent(ctx context.Context, p *pool.Pool, f *fetcher, urls []string) iter.Seq2[page, error] {
	return func(yield func(page, error) bool) {
		i := 0
		for pg, err := range pool.MapSeq(ctx, p, slices.Values(urls), f.fetch) {
			if ctx.Err() != nil {
				break
			}
			if err != nil { // a panic in fetch (a *panics.Error): keep it as the URL's failure
				pg = page{URL: urls[i], FetchedAt: time.Now(), Err: err.Error()}
			}
			i++
			if !yield(pg, nil) {
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(page{}, err)
		}
	}
}

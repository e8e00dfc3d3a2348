package main

import (
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// pageServer is the built-in website the scraper fetches by default: n
// small HTML pages on 127.0.0.1, each answered after a fixed delay that
// stands for a distant server.
//
// Its pages have fixed URLs, http://scraper-site.test/page/NN, whatever
// port it listens on (the fetcher dials that name to the port), so a
// database reused with -db keeps one row per page across runs.
type pageServer struct {
	base  string // "http://scraper-site.test"
	addr  string // where it listens: "127.0.0.1:port"
	n     int
	srv   *http.Server
	done  chan struct{} // closed when Serve has returned
	delay time.Duration
}

// siteHost is the built-in site's host name. The .test top-level domain is
// reserved (RFC 2606): no real site has this name.
const siteHost = "scraper-site.test"

// pageTitle is the title of built-in page i (1-based), as a browser shows it.
func pageTitle(i int) string {
	topics := []string{"Goroutines & pools", "Channels", "Backpressure", "Errors <with stacks>", "Timeouts", "Upserts"}
	return fmt.Sprintf("Page %02d: %s", i, topics[i%len(topics)])
}

// startPageServer listens on a free loopback port and serves pages 1..n
// at /page/{i}. Its goroutine runs until close.
func startPageServer(n int, delay time.Duration) (*pageServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("scraper: built-in server: %w", err)
	}
	s := &pageServer{base: "http://" + siteHost, addr: ln.Addr().String(), n: n, delay: delay, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /page/{i}", s.servePage)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err) // Serve fails only on a broken listener
		}
	}()
	return s, nil
}

// urls lists the server's pages in order.
func (s *pageServer) urls() []string {
	urls := make([]string, s.n)
	for i := range urls {
		urls[i] = s.pageURL(i + 1)
	}
	return urls
}

func (s *pageServer) pageURL(i int) string { return fmt.Sprintf("%s/page/%02d", s.base, i) }

// close stops the server, drops its connections and waits for Serve to return.
func (s *pageServer) close() {
	s.srv.Close()
	<-s.done
}

func (s *pageServer) servePage(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.Atoi(r.PathValue("i"))
	if err != nil || i < 1 || i > s.n {
		http.NotFound(w, r)
		return
	}
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done(): // the client gave up
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, pageHTML(i))
}

// pageHTML is page i. Pages grow with i, and some are as sloppy as real
// ones: an upper-case TITLE tag, no </head>, unclosed paragraphs.
func pageHTML(i int) string {
	var b strings.Builder
	title := html.EscapeString(pageTitle(i))
	switch i % 3 {
	case 0:
		fmt.Fprintf(&b, "<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>%s</title></head>\n<body>\n", title)
	case 1:
		fmt.Fprintf(&b, "<HTML><HEAD><TITLE>\n  %s\n</TITLE>\n<BODY>\n", title)
	default:
		fmt.Fprintf(&b, "<meta charset=utf-8><title>%s</title><h1>%s\n", title, title)
	}
	for p := 0; p < i; p++ {
		fmt.Fprintf(&b, "<p>Paragraph %d of page %d: a pool bounds how many requests are in flight at once.\n", p+1, i)
	}
	return b.String()
}

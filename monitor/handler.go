package monitor

import (
	"compress/gzip"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns an HTTP handler serving the metrics of g in the text
// exposition format (or another one the scraper negotiates), built with
// promhttp.HandlerFor. A collector error fails the scrape with HTTP 500 and
// the error in the body, so that no failure goes unseen.
//
// A scraper that accepts gzip (Prometheus does) gets the body gzipped at the
// fastest level: at promhttp's default level, compressing took a third of a
// scrape's time. The Accept-Encoding field is read as RFC 9110 section
// 12.5.3 says, over all its lines: codings are case-insensitive ("x-gzip"
// is "gzip"), weights are q-values from 0 to 1 with up to three decimals
// ("q=0", "Q=0.000", "q=1.0"), a weight of 0 refuses a coding, and "*"
// stands for every coding not listed, identity included. The body is
// gzipped when gzip's weight (its own, else that of "*") is above 0 and at
// least that of identity (its own, else that of "*"; an identity left
// unlisted and uncovered by "*" ranks below any positive weight); a coding
// listed twice counts with its lower weight. A field that does not follow
// the grammar (a weight of 1.5, 0.0001 or "abc", a parameter other than q,
// a coding that is not a token) gets the body unencoded: a malformed
// element may have been meant as a refusal, and identity is what every
// client reads. So does a request without the field. Every response
// carries "Vary: Accept-Encoding".
func Handler(g prometheus.Gatherer) http.Handler {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{DisableCompression: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Accept-Encoding")
		if !acceptsGzip(r.Header.Values("Accept-Encoding")) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		gw := &gzipResponse{ResponseWriter: w}
		h.ServeHTTP(gw, r)
		gw.close()
	})
}

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // a valid level: no error
	return zw
}}

// gzipResponse sends the body through a gzip writer, unless the inner
// handler removed the Content-Encoding header before writing the header:
// promhttp does so for its error responses, which then go out plain.
type gzipResponse struct {
	http.ResponseWriter
	zw          *gzip.Writer // nil while the body goes out plain
	wroteHeader bool
}

func (g *gzipResponse) WriteHeader(code int) {
	if g.wroteHeader {
		g.ResponseWriter.WriteHeader(code) // superfluous: net/http says so
		return
	}
	g.wroteHeader = true
	if g.Header().Get("Content-Encoding") == "gzip" {
		g.Header().Del("Content-Length") // of the uncompressed body
		g.zw = gzipWriters.Get().(*gzip.Writer)
		g.zw.Reset(g.ResponseWriter)
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipResponse) Write(b []byte) (int, error) {
	if !g.wroteHeader {
		g.WriteHeader(http.StatusOK)
	}
	if g.zw == nil {
		return g.ResponseWriter.Write(b)
	}
	return g.zw.Write(b)
}

// close ends the gzip stream (an empty body is an empty gzip stream).
func (g *gzipResponse) close() {
	if !g.wroteHeader {
		g.WriteHeader(http.StatusOK)
	}
	if g.zw != nil {
		g.zw.Close() // an error is the client's going away: nothing to tell it
		gzipWriters.Put(g.zw)
		g.zw = nil
	}
}

// acceptsGzip reports whether a request whose Accept-Encoding field lines
// are values should get a gzipped body, by the rules in [Handler]'s doc.
func acceptsGzip(values []string) bool {
	w, ok := parseAcceptEncoding(values)
	if !ok {
		return false
	}
	gz := w.gzip
	if gz == unlisted {
		gz = w.star
	}
	id := w.identity
	if id == unlisted {
		id = w.star
	}
	if id == unlisted {
		id = 1 // acceptable by default, below any listed positive weight
	}
	return gz > 0 && gz >= id
}

// unlisted is the weight of a coding the field does not name.
const unlisted = -1

// encodingWeights holds the weights, in thousandths, that an Accept-Encoding
// field gives gzip, identity and "*", or unlisted.
type encodingWeights struct{ gzip, identity, star int }

// parseAcceptEncoding parses the Accept-Encoding field lines values by the
// grammar of RFC 9110 (sections 5.6.1, 5.6.2, 12.4.2 and 12.5.3):
//
//	Accept-Encoding = #( codings [ weight ] )
//	codings         = content-coding / "identity" / "*"
//	weight          = OWS ";" OWS "q=" qvalue
//	qvalue          = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
//
// with empty list elements ignored. ok is false if some element does not
// follow it. A coding listed more than once keeps its lowest weight.
func parseAcceptEncoding(values []string) (w encodingWeights, ok bool) {
	w = encodingWeights{unlisted, unlisted, unlisted}
	for _, line := range values {
		for elem := range strings.SplitSeq(line, ",") {
			elem = trimOWS(elem)
			if elem == "" {
				continue
			}
			coding, weight, hasWeight := strings.Cut(elem, ";")
			coding = trimOWS(coding)
			if !isToken(coding) {
				return w, false
			}
			q := 1000
			if hasWeight {
				if q, ok = parseWeight(trimOWS(weight)); !ok {
					return w, false
				}
			}
			var slot *int
			switch {
			case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
				slot = &w.gzip
			case strings.EqualFold(coding, "identity"):
				slot = &w.identity
			case coding == "*":
				slot = &w.star
			default:
				continue // another coding: it does not bear on gzip or identity
			}
			if *slot == unlisted || q < *slot {
				*slot = q
			}
		}
	}
	return w, true
}

// parseWeight parses `q=` qvalue, the q in either case, into thousandths.
func parseWeight(s string) (q int, ok bool) {
	if len(s) < 3 || (s[0] != 'q' && s[0] != 'Q') || s[1] != '=' {
		return 0, false
	}
	s = s[2:]
	if s[0] != '0' && s[0] != '1' {
		return 0, false
	}
	q = int(s[0]-'0') * 1000
	frac := s[1:]
	if frac == "" {
		return q, true
	}
	if frac[0] != '.' || len(frac) > 4 {
		return 0, false
	}
	scale := 100
	for i := 1; i < len(frac); i++ {
		d := frac[i]
		if d < '0' || d > '9' || (q == 1000 && d != '0') {
			return 0, false
		}
		q += int(d-'0') * scale
		scale /= 10
	}
	return q, true
}

// trimOWS removes optional whitespace (spaces and tabs) around s.
func trimOWS(s string) string { return strings.Trim(s, " \t") }

// isToken reports whether s is an RFC 9110 token: one or more tchar.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

package monitor

import (
	"strings"
	"testing"
)

func TestParseWeight(t *testing.T) {
	for s, want := range map[string]int{
		"q=0": 0, "Q=0": 0, "q=0.": 0, "q=0.0": 0, "q=0.000": 0, "q=0.5": 500, "q=0.05": 50,
		"q=0.001": 1, "q=0.999": 999, "q=1": 1000, "q=1.": 1000, "q=1.0": 1000, "q=1.000": 1000,
		// Invalid: -1.
		"q=": -1, "q": -1, "": -1, "q=1.5": -1, "q=1.001": -1, "q=0.0001": -1, "q=abc": -1, "q=2": -1,
		"q=.5": -1, "q=0,5": -1, "q=-0": -1, "q= 1": -1, "q =1": -1, "x=1": -1, "q=0.5x": -1, "q=1e0": -1,
	} {
		got, ok := parseWeight(s)
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("parseWeight(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
}

// asciiCase maps the ASCII letters of s to upper (or lower) case and leaves
// every other byte alone (strings.ToUpper would turn "ſ" into "S").
func asciiCase(s string, upper bool) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}

// withoutGzip removes every "gzip", in any case, from s, again and again,
// so that none is left ("ggzipzip" loses both).
func withoutGzip(s string) string {
	for {
		i := strings.Index(asciiCase(s, false), "gzip")
		if i < 0 {
			return s
		}
		s = s[:i] + s[i+4:]
	}
}

// FuzzAcceptsGzip feeds the Accept-Encoding parser two field lines and
// checks that it does not panic and is consistent: two lines read as one
// joined by a comma; ASCII case, optional whitespace and empty elements
// change nothing; gzip is chosen only if "gzip" or "*" appears; and a field
// whose only mention of gzip is a weight of zero never yields gzip.
func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"", "gzip", "GZIP", "gzip;q=0", "gzip;q=0.0", "gzip;q=0.000", "gzip;Q=0",
		"*;q=0", "gzip;q=0, *", "identity", "*", "deflate, gzip;q=1.0", "gzip;q=1, identity;q=0.5",
		"gzip;q=1.5", "gzip;q=0.0001", "gzip;q=abc", " \tgzip\t;\tq=0.8 , , identity ;q=0.3,", "x-gzip",
		"identity;q=0, *", "gzip;q=0.5, *", "br;q=1.0, zstd", "gzip;level=1", "gzip\r\n"} {
		f.Add(s, "deflate", uint8(len(s)))
	}
	refusals := []string{"gzip;q=0", "GZIP;Q=0.000", "gzip ; q=0.", "x-gzip;q=0.00", "Gzip;q=0.0"}
	f.Fuzz(func(t *testing.T, a, b string, n uint8) {
		got := acceptsGzip([]string{a, b})
		if joined := acceptsGzip([]string{a + "," + b}); joined != got {
			t.Errorf("lines %q, %q: %v; joined: %v", a, b, got, joined)
		}
		if cased := acceptsGzip([]string{asciiCase(a, true), asciiCase(b, false)}); cased != got {
			t.Errorf("lines %q, %q: %v; with the case changed: %v", a, b, got, cased)
		}
		if spaced := acceptsGzip([]string{" \t, " + a + " ,\t", b + ",,"}); spaced != got {
			t.Errorf("lines %q, %q: %v; with whitespace and empty elements: %v", a, b, got, spaced)
		}
		if all := strings.ToLower(a + b); got && !strings.Contains(all, "gzip") && !strings.Contains(all, "*") {
			t.Errorf("lines %q, %q: gzip, which neither mentions", a, b)
		}
		refuse := refusals[int(n)%len(refusals)]
		lines := []string{withoutGzip(a), withoutGzip(b) + "," + refuse}
		if acceptsGzip(lines) {
			t.Errorf("lines %q: gzip, refused by %q", lines, refuse)
		}
	})
}

// BenchmarkAcceptsGzip measures the Accept-Encoding negotiation alone, on
// what Prometheus sends and on what a browser does.
func BenchmarkAcceptsGzip(b *testing.B) {
	for name, h := range map[string]string{"prometheus": "gzip", "browser": "gzip, deflate, br, zstd"} {
		b.Run(name, func(b *testing.B) {
			lines := []string{h}
			for b.Loop() {
				if !acceptsGzip(lines) {
					b.Fatal("no gzip")
				}
			}
		})
	}
}

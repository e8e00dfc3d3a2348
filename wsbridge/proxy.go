package wsbridge

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// maxForwardedHops bounds the X-Forwarded-For entries clientAddr looks at,
// from the right, empty ones included: a chain of proxies longer than this
// is not a deployment, and the walk stays short whatever the header holds.
const maxForwardedHops = 16

// checkTrustedProxies panics on a prefix that is not valid (the zero
// value, say), which would otherwise trust nobody without a word.
func checkTrustedProxies(ps []netip.Prefix) {
	for i, p := range ps {
		if !p.IsValid() {
			panic(fmt.Sprintf("wsbridge: Config.TrustedProxies[%d] = %q is not a valid prefix", i, p))
		}
	}
}

// trusted reports whether ip is in one of ps.
func trusted(ip netip.Addr, ps []netip.Prefix) bool {
	ip = ip.Unmap().WithZone("")
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// parseHost parses an address with or without a port: "203.0.113.7",
// "203.0.113.7:5000", "2001:db8::1", "[2001:db8::1]:5000".
func parseHost(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip, true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// clientAddr returns the address r counts as coming from: its connection's
// RemoteAddr, or, when that is a trusted proxy, the rightmost address of
// X-Forwarded-For (over all its header lines, in order) that is not itself
// a trusted proxy. What a client writes in the header itself lies left of
// what its proxy appends, so it cannot choose the result. An entry that is
// not an address stops the walk: the connection then counts as the
// proxy's, as it does with no header at all.
func clientAddr(r *http.Request, ps []netip.Prefix) string {
	if len(ps) == 0 {
		return r.RemoteAddr
	}
	peer, ok := parseHost(r.RemoteAddr)
	if !ok || !trusted(peer, ps) {
		return r.RemoteAddr
	}
	lines := r.Header.Values("X-Forwarded-For")
	hops := 0
	for i := len(lines) - 1; i >= 0; i-- {
		rest := lines[i]
		for rest != "" {
			entry := rest
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				rest = ""
			}
			if hops++; hops > maxForwardedHops {
				return r.RemoteAddr
			}
			if strings.TrimSpace(entry) == "" {
				continue
			}
			ip, ok := parseHost(entry)
			if !ok {
				return r.RemoteAddr
			}
			if !trusted(ip, ps) {
				return ip.Unmap().WithZone("").String()
			}
		}
	}
	return r.RemoteAddr
}

package wsbridge

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
)

// This file holds the checks of the Host and Origin headers that defeat
// DNS rebinding: a page of evil.example whose name an attacker makes
// resolve to the server sends "Host: evil.example" and "Origin:
// http://evil.example", which agree with each other but name neither the
// server nor an allowed origin.

// checkHost returns an error wrapping ErrHost if r's Host is not one of
// the server's names (Config.Hosts, or the rule for its local address).
func (s *Server) checkHost(r *http.Request) error {
	if s.hostAllowed(r, r.Host) {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrHost, r.Host)
}

// hostAllowed reports whether hostport (a Host header, or an Origin's
// host) names the server that received r.
func (s *Server) hostAllowed(r *http.Request, hostport string) bool {
	host, port := splitHostPort(strings.ToLower(hostport))
	if host == "" {
		return false
	}
	if len(s.cfg.Hosts) > 0 {
		for _, p := range s.cfg.Hosts {
			if matchHost(strings.ToLower(p), host, port) {
				return true
			}
		}
		return false
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	la, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return false
	}
	lip := la.Addr().Unmap().WithZone("")
	if lip.IsLoopback() {
		return isLoopbackName(host)
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().WithZone("") == lip
}

// isLoopbackName reports whether host (lower case, no port) is localhost
// or a loopback IP literal: 127.0.0.0/8 or ::1.
func isLoopbackName(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// matchHost matches a Config.Hosts pattern against a host and its port
// (empty if none): a pattern without a port matches every port.
func matchHost(pattern, host, port string) bool {
	if pattern == "*" {
		return true
	}
	ph, pp := splitHostPort(pattern)
	if pp != "" && pp != port {
		return false
	}
	ok, _ := path.Match(ph, host)
	return ok
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port"; the
// host of an IPv6 address comes without brackets.
func splitHostPort(hp string) (host, port string) {
	if h, p, err := net.SplitHostPort(hp); err == nil {
		return h, p
	}
	if strings.HasPrefix(hp, "[") && strings.HasSuffix(hp, "]") {
		return hp[1 : len(hp)-1], ""
	}
	if strings.Contains(hp, ":") && !strings.Contains(hp, "::") && strings.Count(hp, ":") == 1 {
		return "", "" // "host:" or a malformed port
	}
	return hp, ""
}

// checkOrigin returns an error wrapping ErrOrigin unless r has no Origin
// header, or its origin is allowed by Config.AllowedOrigins, or it is the
// server itself: its host is r's Host (checked by checkHost before) or one
// of the server's names.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err == nil && u.Host != "" {
		host := strings.ToLower(u.Host)
		if host == strings.ToLower(r.Host) || originListed(s.cfg.AllowedOrigins, strings.ToLower(u.Scheme), host) ||
			(len(s.cfg.Hosts) > 0 && s.hostAllowed(r, host)) {
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrOrigin, origin)
}

// originListed applies Config.AllowedOrigins to an origin's scheme and
// host[:port].
func originListed(allowed []string, scheme, host string) bool {
	full := scheme + "://" + host
	for _, p := range allowed {
		p = strings.ToLower(p)
		if p == "*" {
			return true
		}
		target := host
		if strings.Contains(p, "://") {
			target = full
		}
		if ok, _ := path.Match(p, target); ok {
			return true
		}
	}
	return false
}

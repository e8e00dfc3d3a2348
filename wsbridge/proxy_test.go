package wsbridge

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/corework/corework/jobqueue"
)

var loopbackProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}

func TestClientAddr(t *testing.T) {
	chain := "203.0.113.7" + strings.Repeat(", 127.0.0.1", maxForwardedHops)
	for _, c := range []struct {
		name    string
		proxies []netip.Prefix
		remote  string
		xff     []string
		want    string
	}{
		{"no trusted proxies: the header is ignored", nil, "127.0.0.1:5000", []string{"203.0.113.7"}, "127.0.0.1:5000"},
		{"from a trusted proxy", loopbackProxies, "127.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"no header", loopbackProxies, "127.0.0.1:5000", nil, "127.0.0.1:5000"},
		{"a client's own entries are left of its proxy's", loopbackProxies, "127.0.0.1:5000", []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7"},
		{"over several header lines, in order", loopbackProxies, "127.0.0.1:5000", []string{"198.51.100.1", "203.0.113.7"}, "203.0.113.7"},
		{"a chain of trusted proxies", loopbackProxies, "127.0.0.1:5000", []string{"203.0.113.7, 127.0.0.1, ::1"}, "203.0.113.7"},
		{"only trusted entries", loopbackProxies, "127.0.0.1:5000", []string{"127.0.0.1"}, "127.0.0.1:5000"},
		{"garbage", loopbackProxies, "127.0.0.1:5000", []string{"not-an-address"}, "127.0.0.1:5000"},
		{"garbage right of an address stops the walk", loopbackProxies, "127.0.0.1:5000", []string{"203.0.113.7, evil"}, "127.0.0.1:5000"},
		{"empty entries are skipped", loopbackProxies, "127.0.0.1:5000", []string{"203.0.113.7, , "}, "203.0.113.7"},
		{"with a port", loopbackProxies, "127.0.0.1:5000", []string{"203.0.113.7:4711"}, "203.0.113.7"},
		{"IPv6 with a port", loopbackProxies, "[::1]:5000", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"IPv4 mapped in IPv6", loopbackProxies, "127.0.0.1:5000", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"a peer that is not a trusted proxy", loopbackProxies, "192.0.2.1:5000", []string{"203.0.113.7"}, "192.0.2.1:5000"},
		{"more hops than anyone deploys", loopbackProxies, "127.0.0.1:5000", []string{chain}, "127.0.0.1:5000"},
		{"empty entries count as hops", loopbackProxies, "127.0.0.1:5000", []string{"203.0.113.7" + strings.Repeat(", ", maxForwardedHops)}, "127.0.0.1:5000"},
	} {
		r := &http.Request{RemoteAddr: c.remote, Header: http.Header{}}
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := clientAddr(r, c.proxies); got != c.want {
			t.Errorf("%s: clientAddr = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestTrustedProxiesInvalid(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "TrustedProxies[1]") {
			t.Errorf("New with a zero prefix: recovered %v", r)
		}
	}()
	q, err := jobqueue.New(jobqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(t.Context())
	New(q, Config{TrustedProxies: []netip.Prefix{loopbackProxies[0], {}}})
}

// TestTrustedProxyQuotas: behind a proxy on loopback, anonymous clients
// of different addresses get quotas of their own, so one that fills its
// quota does not starve another; a client that writes someone else's
// address in X-Forwarded-For still counts as its own (the proxy appends
// the real one); without TrustedProxies the header changes nothing.
func TestTrustedProxyQuotas(t *testing.T) {
	quota := Quota{MaxActive: 2}
	submit := func(r *raw) map[string]any {
		r.sendText(`{"command":"submit_job","task_type":"block"}`)
		for {
			m := r.msg()
			if m["type"] == "ack" || m["type"] == "error" {
				return m
			}
		}
	}
	via := func(addrs string) http.Header { return http.Header{"X-Forwarded-For": {addrs}} }

	e := newEnv(t, Config{Quota: quota, TrustedProxies: loopbackProxies}, jobqueue.Config{Workers: 8})
	a := dialRaw(t, e.url, via("203.0.113.1"))
	for range 2 {
		if m := submit(a); m["type"] != "ack" {
			t.Fatalf("a: %v", m)
		}
	}
	if m := submit(a); m["code"] != CodeQuota {
		t.Fatalf("a over its quota: %v", m)
	}
	// The same address through the proxy, claiming another in front.
	spoof := dialRaw(t, e.url, via("203.0.113.2, 203.0.113.1"))
	if m := submit(spoof); m["code"] != CodeQuota {
		t.Fatalf("a client claiming another address got room: %v", m)
	}
	b := dialRaw(t, e.url, via("203.0.113.2"))
	for range 2 {
		if m := submit(b); m["type"] != "ack" {
			t.Fatalf("b is starved by a: %v", m)
		}
	}
	e.s.groups.mu.Lock()
	ga, gb := e.s.groups.m[addressKey("203.0.113.1")], e.s.groups.m[addressKey("203.0.113.2")]
	e.s.groups.mu.Unlock()
	if ga == nil || gb == nil || ga == gb {
		t.Fatalf("groups of the two addresses: %p %p", ga, gb)
	}

	// Without TrustedProxies the header is the client's word only.
	e2 := newEnv(t, Config{Quota: quota}, jobqueue.Config{Workers: 8})
	c := dialRaw(t, e2.url, via("203.0.113.1"))
	for range 2 {
		if m := submit(c); m["type"] != "ack" {
			t.Fatalf("c: %v", m)
		}
	}
	d := dialRaw(t, e2.url, via("203.0.113.2"))
	if m := submit(d); m["code"] != CodeQuota {
		t.Fatalf("a header bought a second quota without a trusted proxy: %v", m)
	}
	d.sendText(`{"command":"ping"}`) // still served
	d.until("pong")
}

package access

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corework/corework/wsbridge"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadTokens(t *testing.T) {
	path := writeFile(t, "# comment\n\n9Lr4QmT2vX8pZk3HwY6nJ5cB7d alice\n  Z1xC2vB3nM4aS5dF6gH7jK8lP9  ops operator \n")
	got, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]wsbridge.Principal{
		"9Lr4QmT2vX8pZk3HwY6nJ5cB7d": {Name: "alice"},
		"Z1xC2vB3nM4aS5dF6gH7jK8lP9": {Name: "ops", Operator: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("token %s: got %+v, want %+v", k, got[k], v)
		}
	}
}

func TestLoadTokensErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"", "no token"},
		{"# only a comment\n", "no token"},
		{"9Lr4QmT2vX8pZk3HwY6nJ5cB7d\n", ":1: want"},
		{"9Lr4QmT2vX8pZk3HwY6nJ5cB7d alice admin\n", ":1: want"},
		{"short alice\n", ":1: token shorter"},
		{"9Lr4QmT2vX8pZk3HwY6nJ5cB7d anon-x\n", "reserved"},
		{"9Lr4QmT2vX8pZk3HwY6nJ5cB7d alice\nZ1xC2vB3nM4aS5dF6gH7jK8lP9 alice\n", ":2: name \"alice\" given twice"},
		{"9Lr4QmT2vX8pZk3HwY6nJ5cB7d alice\n9Lr4QmT2vX8pZk3HwY6nJ5cB7d bob\n", ":2: token given twice"},
	} {
		_, err := LoadTokens(writeFile(t, tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	if _, err := LoadTokens(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v", err)
	}
}

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		tokens   int
		insecure bool
		ok       bool
	}{
		{"127.0.0.1:8080", 0, false, true},
		{"localhost:8080", 0, false, true},
		{"[::1]:8080", 0, false, true},
		{"127.0.0.2:8080", 0, false, true},
		{":8080", 0, false, false},
		{"0.0.0.0:8080", 0, false, false},
		{"[::]:8080", 0, false, false},
		{"192.168.1.5:8080", 0, false, false},
		{"example.com:8080", 0, false, false},
		{"garbage", 0, false, false},
		{":8080", 1, false, true},
		{":8080", 0, true, true},
	} {
		err := CheckListen(tc.addr, tc.tokens, tc.insecure)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrExposed)) {
			t.Errorf("CheckListen(%q, %d, %v) = %v, want ok=%v", tc.addr, tc.tokens, tc.insecure, err, tc.ok)
		}
	}
}

func TestGuard(t *testing.T) {
	var seen wsbridge.Principal
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := From(r.Context())
		if !ok {
			t.Error("no principal in the context")
		}
		seen = p
	})
	do := func(g *Guard, auth string) int {
		r := httptest.NewRequest("GET", "/jobs", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		seen = wsbridge.Principal{}
		g.Wrap(h).ServeHTTP(w, r)
		if w.Code == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Error("401 without WWW-Authenticate: Bearer")
		}
		return w.Code
	}
	open := NewGuard(nil)
	if code := do(open, ""); code != 200 || seen != Local {
		t.Errorf("no tokens: %d %+v", code, seen)
	}
	g := NewGuard(map[string]wsbridge.Principal{"9Lr4QmT2vX8pZk3HwY6nJ5cB7d": {Name: "alice"}})
	if code := do(g, ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code := do(g, "Bearer wrong-token-wrong-token"); code != 401 {
		t.Errorf("wrong token: %d", code)
	}
	if code := do(g, "Bearer 9Lr4QmT2vX8pZk3HwY6nJ5cB7d"); code != 200 || seen.Name != "alice" {
		t.Errorf("good token: %d %+v", code, seen)
	}
	if _, ok := From(httptest.NewRequest("GET", "/", nil).Context()); ok {
		t.Error("From outside Wrap reported a principal")
	}
}

func TestSees(t *testing.T) {
	alice, ops := wsbridge.Principal{Name: "alice"}, wsbridge.Principal{Name: "ops", Operator: true}
	if !Sees(alice, "alice") || Sees(alice, "bob") || Sees(alice, "") || !Sees(ops, "bob") || !Sees(ops, "") {
		t.Error("Sees broke the ownership rule")
	}
	if Owner(alice) != "alice" || Owner(ops) != "" {
		t.Error("Owner broke the ownership rule")
	}
}

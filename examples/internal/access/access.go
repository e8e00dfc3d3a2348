// Package access is who may use the example HTTP servers (apiserver,
// thumbnails): principals from bearer tokens, the rule that a principal
// sees only its own jobs, and the refusal to listen beyond the loopback
// interface without tokens.
//
// A token file holds one principal per line:
//
//	# token                      name   [operator]
//	9Lr4QmT2vX8pZk3HwY6nJ5cB7d   alice
//	Q2wE3rT4yU5iO6pA7sD8fG9hJk   bob
//	Z1xC2vB3nM4aS5dF6gH7jK8lP9   ops    operator
//
// Blank lines and lines beginning with # are skipped. A token is presented
// as "Authorization: Bearer <token>" (or as the query parameter "token",
// for browsers), exactly as the WebSocket bridge takes it, and the same
// table can authenticate both (wsbridge.TokenAuth).
package access

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/corework/corework/wsbridge"
)

// Local is the principal of every request to a server run without tokens.
// Such a server listens on loopback only (see CheckListen), so every
// request comes from the machine itself; Local is not an operator, so the
// ownership rules are the same as with tokens.
var Local = wsbridge.Principal{Name: "local"}

// minTokenLen is the shortest token LoadTokens accepts: wsbridge.NewToken
// makes 26 characters; 16 random characters is the least worth guessing
// against.
const minTokenLen = 16

// LoadTokens reads a token file (see the package doc). It returns an
// error naming the file and line for a malformed line, a token shorter than
// 16 characters, a token or name given twice, a name beginning with
// wsbridge.AnonymousPrefix, or a file with no token.
func LoadTokens(path string) (map[string]wsbridge.Principal, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	defer f.Close()
	tokens := make(map[string]wsbridge.Principal)
	names := make(map[string]bool)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("tokens: %s:%d: %s", path, n, fmt.Sprintf(format, a...))
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || len(fields) > 3 || (len(fields) == 3 && fields[2] != "operator") {
			return nil, bad(`want "<token> <name> [operator]"`)
		}
		tok, name := fields[0], fields[1]
		switch {
		case len(tok) < minTokenLen:
			return nil, bad("token shorter than %d characters", minTokenLen)
		case strings.HasPrefix(name, wsbridge.AnonymousPrefix):
			return nil, bad("name %q: names beginning with %q are reserved", name, wsbridge.AnonymousPrefix)
		case names[name]:
			return nil, bad("name %q given twice", name)
		}
		if _, dup := tokens[tok]; dup {
			return nil, bad("token given twice")
		}
		names[name] = true
		tokens[tok] = wsbridge.Principal{Name: name, Operator: len(fields) == 3}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens: %s: %w", path, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("tokens: %s: no token", path)
	}
	return tokens, nil
}

// ErrExposed is returned by CheckListen for a server that would be open
// to other machines without tokens.
var ErrExposed = errors.New("refusing to listen beyond loopback without tokens")

// CheckListen returns an error wrapping ErrExposed, which says what to do,
// if addr (host:port, as net.Listen takes it) may accept connections from
// other machines while the server has no tokens, unless insecure is set.
// An address is loopback when its host is "localhost" or a loopback IP; an
// empty host (":8080") or 0.0.0.0 listens on every interface.
func CheckListen(addr string, tokens int, insecure bool) error {
	if tokens > 0 || insecure || Loopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s is reachable from other machines and anyone could use the server; "+
		"give -tokens FILE (one \"<token> <name> [operator]\" per line), listen on 127.0.0.1, "+
		"or pass -insecure if another layer (a proxy, a firewall) guards it", ErrExposed, addr)
}

// Loopback reports whether addr (host:port) listens on loopback only.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Guard authenticates the requests of a server: with tokens, by bearer
// token; without, every request is Local.
type Guard struct {
	auth func(*http.Request) (wsbridge.Principal, error)
}

// NewGuard returns the Guard for tokens (nil or empty: no tokens). The
// table is copied.
func NewGuard(tokens map[string]wsbridge.Principal) *Guard {
	if len(tokens) == 0 {
		return &Guard{auth: func(*http.Request) (wsbridge.Principal, error) { return Local, nil }}
	}
	return &Guard{auth: wsbridge.TokenAuth(tokens)}
}

// Authenticate returns the principal of r, or an error wrapping
// wsbridge.ErrUnauthorized. It suits wsbridge.Config.Authenticate, so the
// bridge takes the same tokens.
func (g *Guard) Authenticate(r *http.Request) (wsbridge.Principal, error) { return g.auth(r) }

type principalKey struct{}

// Wrap returns h behind the guard: a request without a valid token gets
// 401 with "WWW-Authenticate: Bearer" and the JSON body
// {"error":{"code":"unauthorized","message":...}}; the others reach h with
// their principal in the context (see From).
func (g *Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := g.auth(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="corework"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"code":"unauthorized","message":%q}}`+"\n", "a valid bearer token is required")
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// From returns the principal Wrap put in ctx, and false outside Wrap.
func From(ctx context.Context) (wsbridge.Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(wsbridge.Principal)
	return p, ok
}

// Sees reports whether p may see and act on a job of owner: its own, or
// any for an operator. The same rule as the WebSocket bridge's.
func Sees(p wsbridge.Principal, owner string) bool {
	return p.Operator || (p.Name != "" && p.Name == owner)
}

// Owner is the ListFilter.Owner that limits a listing to what p sees:
// empty (every owner) for an operator, p's name otherwise.
func Owner(p wsbridge.Principal) string {
	if p.Operator {
		return ""
	}
	return p.Name
}

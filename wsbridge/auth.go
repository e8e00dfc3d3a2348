package wsbridge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Principal is who a connection acts for. Its Name becomes the Owner of
// the jobs the connection submits (jobqueue.Job.Owner), and the connection
// sees and acts on those jobs only, unless it is an Operator.
type Principal struct {
	// Name identifies the principal. Empty means anonymous: the Server
	// gives the connection a name of its own (see Config.Authenticate).
	// Names beginning with AnonymousPrefix are the Server's; an
	// authenticated principal may not have one.
	Name string
	// Operator lets the principal see, follow and cancel every job, and
	// lifts its job and watch quotas unless Config.QuotaFor says
	// otherwise. It is ignored for an anonymous principal.
	Operator bool
}

// AnonymousPrefix begins the name of every anonymous principal.
const AnonymousPrefix = "anon-"

// Where a client presents its resume credential.
const (
	resumeParam  = "resume"
	resumeHeader = "Wsbridge-Resume"
)

// TokenAuth returns a Config.Authenticate that requires a token of tokens,
// presented as "Authorization: Bearer <token>" or as the query parameter
// "token" (browsers cannot set headers on a WebSocket), and returns its
// principal. A missing or unknown token gets an error wrapping
// ErrUnauthorized (HTTP 401). Tokens are looked up by their SHA-256, so the
// lookup's timing says nothing about them. It panics on an empty table, an
// empty token, or a principal with an empty or anonymous name. The table is
// copied.
func TokenAuth(tokens map[string]Principal) func(r *http.Request) (Principal, error) {
	return tokenAuth("TokenAuth", tokens, false)
}

// OptionalTokenAuth is TokenAuth for a server that also admits anonymous
// connections: a request without a token gets an anonymous principal, one
// with a token of tokens gets its principal, and one with any other token
// is refused with an error wrapping ErrUnauthorized (HTTP 401). A nil or
// empty table admits every request without a token. It panics like
// TokenAuth on a bad entry.
func OptionalTokenAuth(tokens map[string]Principal) func(r *http.Request) (Principal, error) {
	return tokenAuth("OptionalTokenAuth", tokens, true)
}

func tokenAuth(name string, tokens map[string]Principal, anonymous bool) func(r *http.Request) (Principal, error) {
	if len(tokens) == 0 && !anonymous {
		panic("wsbridge: " + name + " with no token")
	}
	table := make(map[[sha256.Size]byte]Principal, len(tokens))
	for tok, p := range tokens {
		switch {
		case tok == "":
			panic("wsbridge: " + name + " with an empty token")
		case p.Name == "":
			panic("wsbridge: " + name + " with a principal without a name")
		case strings.HasPrefix(p.Name, AnonymousPrefix):
			panic(fmt.Sprintf("wsbridge: %s with principal %q: names beginning with %q are reserved", name, p.Name, AnonymousPrefix))
		}
		table[sha256.Sum256([]byte(tok))] = p
	}
	return func(r *http.Request) (Principal, error) {
		tok, ok := requestToken(r)
		if !ok {
			if anonymous {
				return Principal{}, nil
			}
			return Principal{}, fmt.Errorf("%w: no token", ErrUnauthorized)
		}
		if p, ok := table[sha256.Sum256([]byte(tok))]; ok {
			return p, nil
		}
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthorized)
	}
}

// requestToken returns the token of r: the "token" query parameter, or the
// bearer token of the Authorization header.
func requestToken(r *http.Request) (string, bool) {
	if q := r.URL.Query(); q.Has("token") {
		return q.Get("token"), true
	}
	h := r.Header.Get("Authorization")
	if len(h) >= 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

// NewToken returns a new random token of 26 characters (128 bits), for a
// token table: a server can print an operator URL with a fresh one at
// start, as Jupyter does. It never fails.
func NewToken() string { return rand.Text() }

// newAnonymousName returns a fresh anonymous principal name: 80 random
// bits.
func newAnonymousName() string { return AnonymousPrefix + rand.Text()[:16] }

// macSize is the length of a resume credential's MAC, in bytes.
const macSize = 16

// resumeCredential returns the credential that gives principal name back
// on a later connection: the name, a dot and its HMAC.
func (s *Server) resumeCredential(name string) string {
	m := hmac.New(sha256.New, s.resumeKey)
	m.Write([]byte(name))
	return name + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:macSize])
}

// resumedName returns the anonymous principal name that cred was issued
// for, if cred is valid.
func (s *Server) resumedName(cred string) (string, bool) {
	if len(cred) > 128 {
		return "", false
	}
	i := strings.LastIndexByte(cred, '.')
	if i < 0 {
		return "", false
	}
	name := cred[:i]
	if !strings.HasPrefix(name, AnonymousPrefix) || len(name) == len(AnonymousPrefix) {
		return "", false
	}
	// Strict: the MAC's last character has unused bits, and a lax decoder
	// would accept several spellings of one credential.
	mac, err := base64.RawURLEncoding.Strict().DecodeString(cred[i+1:])
	if err != nil || len(mac) != macSize {
		return "", false
	}
	m := hmac.New(sha256.New, s.resumeKey)
	m.Write([]byte(name))
	if !hmac.Equal(mac, m.Sum(nil)[:macSize]) {
		return "", false
	}
	return name, true
}

// principal resolves the principal of an upgrade request, or returns the
// HTTP status and error that refuse it.
func (s *Server) principal(r *http.Request) (Principal, int, error) {
	var p Principal
	if auth := s.cfg.Authenticate; auth != nil {
		var err error
		p, err = auth(r)
		if err != nil {
			if errors.Is(err, ErrUnauthorized) {
				return p, http.StatusUnauthorized, err
			}
			return p, http.StatusForbidden, err
		}
		if strings.HasPrefix(p.Name, AnonymousPrefix) {
			return p, http.StatusInternalServerError,
				fmt.Errorf("wsbridge: Authenticate returned principal %q: names beginning with %q are reserved", p.Name, AnonymousPrefix)
		}
	}
	if p.Name != "" {
		return p, 0, nil
	}
	p = Principal{}
	cred := r.URL.Query().Get(resumeParam)
	if cred == "" {
		cred = r.Header.Get(resumeHeader)
	}
	if name, ok := s.resumedName(cred); ok {
		p.Name = name
	} else {
		p.Name = newAnonymousName()
	}
	return p, 0, nil
}

// anonymous reports whether p was admitted without credentials.
func (p Principal) anonymous() bool { return strings.HasPrefix(p.Name, AnonymousPrefix) }

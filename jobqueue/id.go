package jobqueue

import (
	"math/rand/v2"
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
// advanced by compare-and-swap, so there is no lock. The sequence never goes
// back, even if the wall clock does. A random 35-bit tag per generator tells
// apart the IDs of Queues in different processes sharing a backend.
type idGen struct {
	seq atomic.Uint64
	tag [7]byte
}

func newIDGen() *idGen {
	g := &idGen{}
	t := rand.Uint64()
	for i := len(g.tag) - 1; i >= 0; i-- {
		g.tag[i] = crockford[t&31]
		t >>= 5
	}
	return g
}

// next returns a 20-character ID greater than every ID this generator made
// before.
func (g *idGen) next(now time.Time) string {
	base := uint64(now.Sub(idEpoch).Milliseconds()) << 22
	for {
		prev := g.seq.Load()
		v := base
		if v <= prev {
			v = prev + 1
		}
		if g.seq.CompareAndSwap(prev, v) {
			var b [20]byte
			for i := 12; i >= 0; i-- {
				b[i] = crockford[v&31]
				v >>= 5
			}
			copy(b[13:], g.tag[:])
			return string(b[:])
		}
	}
}

package wsbridge

import (
	"crypto/rand"
	"sync/atomic"
	"time"
)

// This file makes the job IDs a Client chooses for Submit. They have the
// shape of the IDs a jobqueue.Queue makes (Queue.NewID), so that the jobs
// of one principal sort by submission time in a listing (list_jobs is
// newest first by ID) whoever chose their IDs: 13 characters of a
// sequence, milliseconds since 2024-01-01 UTC shifted left by 22 bits plus
// a counter for IDs of the same millisecond, then 16 characters of 80
// random bits from crypto/rand, which make the ID unguessable, then a
// random 7-character tag of the process (where a queue's IDs carry the
// queue's), 36 characters in all of lower-case Crockford base 32. The time
// is the client's clock.

// idEpoch is jobqueue's: IDs from both sort together.
var idEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// crockford is Crockford's base-32 alphabet in lower case, in numeric
// order.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// jobIDLen is the length of a Client's job IDs.
const jobIDLen = 13 + 16 + 7

// idTag ends every job ID this process makes.
var idTag = func() [7]byte {
	var r [7]byte
	_, _ = rand.Read(r[:])
	for i := range r {
		r[i] = crockford[r[i]&31]
	}
	return r
}()

// idSeq is the last sequence value handed out; it never goes back, even if
// the wall clock does.
var idSeq atomic.Uint64

// newJobID returns a new, unguessable job ID that sorts after every ID this
// process made before.
func newJobID() string {
	base := uint64(time.Since(idEpoch).Milliseconds()) << 22
	var v uint64
	for {
		prev := idSeq.Load()
		v = max(base, prev+1)
		if idSeq.CompareAndSwap(prev, v) {
			break
		}
	}
	var b [jobIDLen]byte
	for i := 12; i >= 0; i-- {
		b[i] = crockford[v&31]
		v >>= 5
	}
	var r [10]byte
	_, _ = rand.Read(r[:]) // never fails: it crashes the program first
	hi := uint64(r[0])<<32 | uint64(r[1])<<24 | uint64(r[2])<<16 | uint64(r[3])<<8 | uint64(r[4])
	lo := uint64(r[5])<<32 | uint64(r[6])<<24 | uint64(r[7])<<16 | uint64(r[8])<<8 | uint64(r[9])
	for i := 7; i >= 0; i-- {
		b[13+i] = crockford[hi&31]
		b[21+i] = crockford[lo&31]
		hi >>= 5
		lo >>= 5
	}
	copy(b[29:], idTag[:])
	return string(b[:])
}

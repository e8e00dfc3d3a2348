//go:build !linux

package procpool

import "errors"

// Without memfd_create (darwin, the BSDs, windows), a Shared is a heap
// buffer and a SharedRef carries a copy of it through the pipe: the same
// code runs, at the cost of a []byte field (see NewShared). Passing a
// descriptor to a running worker would need a unix socket per worker (and
// windows has no descriptors to pass), and a named file would outlive a
// parent that is killed.

// sharedPlat holds nothing: the buffer is on the heap.
type sharedPlat struct{}

func (p *sharedPlat) create(size int) ([]byte, error) { return make([]byte, size), nil }

func (p *sharedPlat) release() error { return nil }

// handle always asks for a copy.
func (p *sharedPlat) handle(int) ([]byte, bool) { return nil, false }

// mapHandle refuses a memfd handle, which only a Linux parent sends.
func mapHandle(*memfdHandle) ([]byte, error) {
	return nil, errors.ErrUnsupported
}

func unmapView([]byte) {}

package procpool

import (
	"io"
	"os"
	"syscall"
)

// pipeConn does the parent's reads and writes on one of its non-blocking
// pipe ends: the system calls go through the file's RawConn, which waits
// in the netpoller when the pipe is empty or full and honours deadlines.
type pipeConn struct {
	f  *os.File
	rc syscall.RawConn
}

func newPipeConn(f *os.File) *pipeConn {
	c := &pipeConn{f: f}
	if rc, err := f.SyscallConn(); err == nil {
		c.rc = rc
	}
	return c
}

func (c *pipeConn) Read(p []byte) (int, error) {
	if c.rc == nil {
		return c.f.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = sysRead(fd, p)
			switch rerr {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until readable
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, &os.PathError{Op: "read", Path: c.f.Name(), Err: err}
	case rerr != nil:
		return 0, &os.PathError{Op: "read", Path: c.f.Name(), Err: rerr}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting for the pipe to take it.
func (c *pipeConn) Write(p []byte) (int, error) {
	if c.rc == nil {
		return c.f.Write(p)
	}
	return c.write(p, true)
}

// writeNow writes as much of p as the pipe takes without waiting, and
// returns the count; a full pipe is not an error.
func (c *pipeConn) writeNow(p []byte) (int, error) {
	if c.rc == nil {
		return 0, nil
	}
	return c.write(p, false)
}

func (c *pipeConn) write(p []byte, wait bool) (int, error) {
	var n int
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, e := sysWrite(fd, p[n:])
			n += m
			switch e {
			case nil, syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return !wait
			}
			werr = e
			return true
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return n, &os.PathError{Op: "write", Path: c.f.Name(), Err: err}
	}
	return n, nil
}

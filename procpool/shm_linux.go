package procpool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// How a worker, already running, gets at the parent's memory.
//
// The buffer is a memfd (memfd_create(2)), sealed against growing and
// shrinking once sized, so no mapping of it can fault past its end. A
// running worker cannot inherit a descriptor, and its pipes cannot carry
// one (SCM_RIGHTS needs a unix socket, which would change how every worker
// is started and the wire). So the handle names the descriptor: the
// parent's pid, the descriptor number, and the file's device and inode;
// the worker opens /proc/<parent>/fd/<n>, which opens the memfd itself,
// checks device, inode and size (a descriptor closed and reused meanwhile
// is refused), maps it read-only and closes its descriptor at once.
//
// Why not a file in /dev/shm, which any process can open by name: it
// outlives a parent killed by SIGKILL or the OOM killer, holding its memory
// until someone unlinks it (Python's shared_memory runs a resource tracker
// process for this, and still warns of leaks); a memfd has no name, and
// the kernel frees it with the last descriptor or mapping, whatever way
// the processes end. Why not pidfd_getfd(2): it needs ptrace attach
// rights, which Yama (ptrace_scope 1 and up) refuses to a child over its
// parent. Opening /proc/<pid>/fd/<n> needs only ptrace read rights
// (PTRACE_MODE_READ_FSCREDS), which Yama does not restrict: same user and
// a dumpable parent. A parent that is not dumpable (setuid or file
// capabilities, or prctl(PR_SET_DUMPABLE, 0)) is detected when a handle is
// encoded, and the bytes are then copied through the pipe, as on other
// systems. A security module (SELinux, AppArmor) or a /proc mounted with
// hidepid for another user can still refuse the open: the call then fails
// with ErrDecode carrying the system's error.

// sharedPlat is a Shared's memfd and its identity.
type sharedPlat struct {
	fd       int
	dev, ino uint64
	mem      []byte
}

func (p *sharedPlat) create(size int) ([]byte, error) {
	fd, err := unix.MemfdCreate("procpool-shared", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	fail := func(op string, err error) ([]byte, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fail("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("seal", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail("fstat", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap", err)
	}
	p.fd, p.dev, p.ino, p.mem = fd, st.Dev, st.Ino, mem
	return mem, nil
}

func (p *sharedPlat) release() error {
	err := unix.Munmap(p.mem)
	p.mem = nil
	return errors.Join(err, unix.Close(p.fd))
}

// handle returns the memfd's handle, or false when a worker could not
// open it (the parent is not dumpable) and the bytes must be copied.
func (p *sharedPlat) handle(size int) ([]byte, bool) {
	if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 1 {
		return nil, false
	}
	return appendMemfdHandle(&memfdHandle{pid: uint64(os.Getpid()), fd: uint64(p.fd),
		dev: p.dev, ino: p.ino, size: uint64(size)}), true
}

func appendMemfdHandle(h *memfdHandle) []byte {
	b := []byte{refMemfd}
	for _, v := range []uint64{h.pid, h.fd, h.dev, h.ino, h.size} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// mapHandle opens the parent's memfd through /proc and maps it read-only.
func mapHandle(h *memfdHandle) ([]byte, error) {
	if h.pid != uint64(os.Getppid()) {
		return nil, fmt.Errorf("handle of process %d, not of this worker's parent", h.pid)
	}
	path := "/proc/" + strconv.FormatUint(h.pid, 10) + "/fd/" + strconv.FormatUint(h.fd, 10)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat %s: %w", path, err)
	}
	if st.Dev != h.dev || st.Ino != h.ino || uint64(st.Size) != h.size {
		return nil, fmt.Errorf("%s is no longer the shared buffer (closed?)", path)
	}
	mem, err := unix.Mmap(fd, 0, int(h.size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	return mem, nil
}

// unmapView unmaps a worker's view.
func unmapView(mem []byte) { unix.Munmap(mem) }

package procpool_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corework/corework/procpool"
)

var (
	// shmMaps counts the worker's mappings of shared buffers, during a
	// task that holds one (in.Buf) or not.
	shmMaps = procpool.Register("test.shm.maps", func(_ context.Context, in shmIn) (int, error) {
		if in.Buf.Len() > 0 {
			if _, err := in.Buf.Bytes(); err != nil {
				return 0, err
			}
		}
		return sharedMappings(), nil
	})

	// shmWrite writes into its read-only view.
	shmWrite = procpool.Register("test.shm.write", func(_ context.Context, in shmIn) (int, error) {
		b, err := in.Buf.Bytes()
		if err != nil {
			return 0, err
		}
		b[0] = 1
		return 0, nil
	})
)

// sharedMappings counts the lines of /proc/self/maps that map a Shared.
func sharedMappings() int {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		panic(err)
	}
	return strings.Count(string(maps), "memfd:procpool-shared")
}

// openFds lists /proc/self/fd.
func openFds(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			names = append(names, e.Name()+" -> "+target)
		}
	}
	return names
}

// TestSharedNoLeaks checks that Close gives back the parent's descriptor
// and mapping, and that a worker unmaps its view when its task ends.
func TestSharedNoLeaks(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	if _, err := shmMaps.Call(ctx, p, shmIn{}); err != nil { // the worker is up
		t.Fatal(err)
	}
	fdsBefore, mapsBefore := openFds(t), sharedMappings()
	for range 3 {
		s, err := procpool.NewShared(8 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if n := sharedMappings(); n != mapsBefore+1 {
			t.Errorf("parent maps %d shared buffers with one open, had %d", n, mapsBefore)
		}
		err = s.Lend(func(ref procpool.SharedRef) error {
			during, err := shmMaps.Call(ctx, p, shmIn{Buf: ref})
			if err != nil {
				return err
			}
			after, err := shmMaps.Call(ctx, p, shmIn{})
			if err != nil {
				return err
			}
			if during != 1 || after != 0 {
				t.Errorf("worker maps %d shared buffers during its task and %d after, want 1 and 0", during, after)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := sharedMappings(); n != mapsBefore {
		t.Errorf("parent maps %d shared buffers after Close, %d before", n, mapsBefore)
	}
	if fdsAfter := openFds(t); strings.Join(fdsAfter, "\n") != strings.Join(fdsBefore, "\n") {
		t.Errorf("descriptors before:\n%s\nafter Close:\n%s", strings.Join(fdsBefore, "\n"), strings.Join(fdsAfter, "\n"))
	}
}

// TestSharedReadOnlyInWorker checks that a worker writing into its view
// crashes (the view is mapped read-only) and the pool goes on.
func TestSharedReadOnlyInWorker(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1), procpool.WithOutput(nil), procpool.WithLogger(slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	s, want := newShared(t, 1<<20)
	err := s.Lend(func(ref procpool.SharedRef) error {
		_, err := shmWrite.Call(ctx, p, shmIn{Buf: ref})
		if !errors.Is(err, procpool.ErrWorkerCrashed) {
			t.Errorf("write into the view: %v, want ErrWorkerCrashed", err)
		}
		got, err := shmSum.Call(ctx, p, shmIn{Buf: ref})
		if err == nil && got.CRC != want {
			t.Errorf("buffer changed by a worker: crc %08x, want %08x", got.CRC, want)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSharedNotDumpable checks the copy fallback: a parent that is not
// dumpable cannot be opened through /proc by its workers, so the bytes go
// through the pipe (and the frame limit applies).
func TestSharedNotDumpable(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1), procpool.WithMaxFrame(1<<20))
	ctx := context.Background()
	small, want := newShared(t, 512<<10)
	big, _ := newShared(t, 2<<20)
	check := func(copied bool) {
		t.Helper()
		err := small.Lend(func(ref procpool.SharedRef) error {
			got, err := shmSum.Call(ctx, p, shmIn{Buf: ref})
			if err == nil && got.CRC != want {
				t.Errorf("crc %08x, want %08x", got.CRC, want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = big.Lend(func(ref procpool.SharedRef) error {
			_, err := shmSum.Call(ctx, p, shmIn{Buf: ref})
			return err
		})
		if copied != errors.Is(err, procpool.ErrFrameTooLarge) {
			t.Errorf("2 MiB buffer, 1 MiB frames, copied %v: %v", copied, err)
		}
	}
	check(false)
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		t.Skip("cannot clear the dumpable flag:", err)
	}
	defer unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	check(true)
}

// TestSharedChunkMapsOnce: the inputs of one chunk that lend the same
// buffer share one mapping in the worker.
func TestSharedChunkMapsOnce(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	s, _ := newShared(t, 1<<20)
	err := s.Lend(func(ref procpool.SharedRef) error {
		counts, err := shmMaps.Map(ctx, p, []shmIn{{Buf: ref}, {Buf: ref}, {Buf: ref}, {Buf: ref}}, procpool.WithChunkSize(4))
		for i, n := range counts {
			if n != 1 {
				t.Errorf("input %d: worker maps %d shared buffers, want 1", i, n)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

package procpool_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/corework/corework/procpool"
)

// shmIn names a range of a lent buffer.
type shmIn struct {
	Buf     procpool.SharedRef
	Off, N  int // the range to checksum; N == 0 means to the end
	Attempt string
}

type shmOut struct {
	Len int    // the view's length in the worker
	CRC uint32 // CRC-32C of the range
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// shmSum checksums a range of the lent buffer in the worker.
	shmSum = procpool.Register("test.shm.sum", func(_ context.Context, in shmIn) (shmOut, error) {
		b, err := in.Buf.Bytes()
		if err != nil {
			return shmOut{}, err
		}
		end := len(b)
		if in.N > 0 {
			end = in.Off + in.N
		}
		return shmOut{Len: in.Buf.Len(), CRC: crc32.Checksum(b[in.Off:end], castagnoli)}, nil
	})

	// shmStash keeps the ref of one task for the next, which must find
	// its view gone.
	stashed    procpool.SharedRef
	shmStashed = procpool.Register("test.shm.stash", func(_ context.Context, in shmIn) (string, error) {
		if in.Attempt == "stash" {
			stashed = in.Buf
			_, err := in.Buf.Bytes()
			return "stashed", err
		}
		_, err := stashed.Bytes()
		if errors.Is(err, procpool.ErrNotLent) {
			return "refused: " + err.Error(), nil
		}
		return "", errors.New("view of an ended task still readable")
	})

	// shmReturn tries to send the ref it received back to the parent.
	shmReturn = procpool.Register("test.shm.return", func(_ context.Context, in shmIn) (procpool.SharedRef, error) {
		return in.Buf, nil
	})
)

// newShared returns a Shared of size bytes filled with random data, and
// its checksum.
func newShared(t testing.TB, size int) (*procpool.Shared, uint32) {
	t.Helper()
	s, err := procpool.NewShared(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b, err := s.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	rand.NewChaCha8([32]byte{1, 2, 3}).Read(b)
	return s, crc32.Checksum(b, castagnoli)
}

func TestShared64MiBRoundTrip(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	ctx := context.Background()
	const size = 64 << 20
	s, want := newShared(t, size)
	b, _ := s.Bytes()
	var got shmOut
	var parts []shmOut
	err := s.Lend(func(ref procpool.SharedRef) error {
		if ref.Len() != size {
			t.Errorf("ref.Len() = %d, want %d", ref.Len(), size)
		}
		var err error
		if got, err = shmSum.Call(ctx, p, shmIn{Buf: ref}); err != nil {
			return err
		}
		// Four quarters through Map, on both workers.
		ins := make([]shmIn, 4)
		for i := range ins {
			ins[i] = shmIn{Buf: ref, Off: i * size / 4, N: size / 4}
		}
		parts, err = shmSum.Map(ctx, p, ins)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Len != size || got.CRC != want {
		t.Fatalf("worker saw %d bytes, crc %08x; want %d bytes, crc %08x", got.Len, got.CRC, size, want)
	}
	for i, part := range parts {
		if w := crc32.Checksum(b[i*size/4:(i+1)*size/4], castagnoli); part.CRC != w {
			t.Errorf("quarter %d: crc %08x, want %08x", i, part.CRC, w)
		}
	}
	// Back with the owner: it may change the buffer and lend it again.
	if b, err = s.Bytes(); err != nil {
		t.Fatal(err)
	}
	b[size-1] ^= 0xff
	want = crc32.Checksum(b, castagnoli)
	if err := s.Lend(func(ref procpool.SharedRef) error {
		got, err = shmSum.Call(ctx, p, shmIn{Buf: ref})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got.CRC != want {
		t.Fatalf("after a change the worker saw crc %08x, want %08x", got.CRC, want)
	}
}

func TestSharedMisuse(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	if _, err := procpool.NewShared(0); err == nil {
		t.Error("NewShared(0) succeeded")
	}
	s, _ := newShared(t, 4096)

	// The owner cannot touch a lent buffer; the parent has no view.
	var kept procpool.SharedRef
	err := s.Lend(func(ref procpool.SharedRef) error {
		kept = ref
		if _, err := s.Bytes(); !errors.Is(err, procpool.ErrSharedLent) {
			t.Errorf("Bytes during Lend: %v, want ErrSharedLent", err)
		}
		if _, err := ref.Bytes(); !errors.Is(err, procpool.ErrNotLent) {
			t.Errorf("SharedRef.Bytes in the parent: %v, want ErrNotLent", err)
		}
		return s.Lend(func(procpool.SharedRef) error { return nil }) // nested: fine
	})
	if err != nil {
		t.Fatal(err)
	}

	// A ref kept past its Lend is refused before anything is sent.
	_, err = shmSum.Call(ctx, p, shmIn{Buf: kept})
	if !errors.Is(err, procpool.ErrEncode) || !errors.Is(err, procpool.ErrNotLent) {
		t.Errorf("call with a ref after its Lend: %v, want ErrEncode (not lent)", err)
	}

	// The zero SharedRef crosses as nothing.
	_, err = shmSum.Call(ctx, p, shmIn{})
	var te *procpool.TaskError
	if !errors.As(err, &te) || te.Message != procpool.ErrNotLent.Error() {
		t.Errorf("zero SharedRef: %v, want the task's ErrNotLent", err)
	}

	// A worker's view ends with its task, and a worker cannot send it on.
	err = s.Lend(func(ref procpool.SharedRef) error {
		if _, err := shmStashed.Call(ctx, p, shmIn{Buf: ref, Attempt: "stash"}); err != nil {
			return err
		}
		msg, err := shmStashed.Call(ctx, p, shmIn{Attempt: "reuse"})
		if err != nil {
			return err
		}
		if !strings.HasPrefix(msg, "refused: ") {
			t.Errorf("reused view: %q", msg)
		}
		if _, err := shmReturn.Call(ctx, p, shmIn{Buf: ref}); !errors.Is(err, procpool.ErrEncode) {
			t.Errorf("worker returning its ref: %v, want ErrEncode", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Close during a Lend: the loan's calls fail, and so does everything after.
	err = s.Lend(func(ref procpool.SharedRef) error {
		if err := s.Close(); err != nil {
			t.Errorf("Close during Lend: %v", err)
		}
		_, err := shmSum.Call(ctx, p, shmIn{Buf: ref})
		return err
	})
	if !errors.Is(err, procpool.ErrEncode) || !errors.Is(err, procpool.ErrSharedClosed) {
		t.Errorf("call after Close: %v, want ErrEncode (closed)", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Bytes(); !errors.Is(err, procpool.ErrSharedClosed) {
		t.Errorf("Bytes after Close: %v, want ErrSharedClosed", err)
	}
	if err := s.Lend(func(procpool.SharedRef) error { return nil }); !errors.Is(err, procpool.ErrSharedClosed) {
		t.Errorf("Lend after Close: %v, want ErrSharedClosed", err)
	}
	if s.Len() != 4096 {
		t.Errorf("Len after Close = %d", s.Len())
	}
}

// rowsIn names rows of a lent matrix of 1 KiB rows.
type rowsIn struct {
	Matrix   procpool.SharedRef
	From, To int
}

// rowSum adds up the bytes of some rows of the matrix, in a worker.
var rowSum = procpool.Register("example.rowsum", func(_ context.Context, in rowsIn) (int, error) {
	m, err := in.Matrix.Bytes() // read-only, valid until the task returns
	if err != nil {
		return 0, err
	}
	sum := 0
	for _, c := range m[in.From<<10 : in.To<<10] {
		sum += int(c)
	}
	return sum, nil
})

// ExampleShared lends a 16 MiB matrix to two worker processes, which read
// it in place: only a handle crosses the pipes.
func ExampleShared() {
	p, err := procpool.New(procpool.WithWorkers(2))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()

	buf, err := procpool.NewShared(16 << 20) // 16384 rows of 1 KiB
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Close()
	m, _ := buf.Bytes()
	for i := range m {
		m[i] = byte(i % 3)
	}

	var sums []int
	err = buf.Lend(func(ref procpool.SharedRef) error {
		_, err := buf.Bytes()
		fmt.Println("owner during Lend:", err)
		sums, err = rowSum.Map(ctx, p, []rowsIn{{ref, 0, 8192}, {ref, 8192, 16384}})
		return err
	})
	fmt.Println(sums[0]+sums[1], err)
	// Output:
	// owner during Lend: procpool: shared buffer is lent
	// 16777215 <nil>
}

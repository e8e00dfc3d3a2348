package procpool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"
)

type fuzzPoint struct {
	X, Y int
	Name string
}

func newTask[In, Out any](name string, fn func(context.Context, In) (Out, error)) *Task[In, Out] {
	t := &Task[In, Out]{fn: fn}
	t.meta.name = name
	t.meta.inRaw, t.meta.outRaw = isRaw[In](), isRaw[Out]()
	return t
}

// Tasks of the fuzz target's worker; not registered, so they never run in
// the test binary's real workers.
var (
	fuzzInt   = newTask("int", func(_ context.Context, n int) (int, error) { return n, nil })
	fuzzStr   = newTask("str", func(_ context.Context, s string) (string, error) { return s, nil })
	fuzzPt    = newTask("point", func(_ context.Context, p fuzzPoint) (fuzzPoint, error) { return p, nil })
	fuzzBytes = newTask("bytes", func(_ context.Context, b []byte) ([]byte, error) { return b, nil })
)

func fuzzTasks() map[string]taskImpl {
	return map[string]taskImpl{"int": fuzzInt, "str": fuzzStr, "point": fuzzPt, "bytes": fuzzBytes}
}

// requestFrames encodes requests the way the parent does.
func requestFrames(t testing.TB, limit int) []byte {
	var w requestWriter
	w.init(limit)
	add := func(task *taskMeta, chunk bool, n int, v any) {
		r := &request{task: task, n: n, chunk: chunk, deadline: time.Now().Add(time.Hour).UnixNano()}
		r.sink = encSink{v}
		if err := w.encode(r); err != nil {
			t.Fatal(err)
		}
	}
	add(&fuzzInt.meta, false, 1, 42)
	add(&fuzzStr.meta, false, 1, "hello")
	add(&fuzzPt.meta, false, 1, fuzzPoint{X: 1, Name: "p"})
	add(&fuzzPt.meta, true, 2, []fuzzPoint{{X: 1}, {Y: 2, Name: "q"}})
	add(&fuzzInt.meta, true, 3, []int{1, 2, 3})
	add(&fuzzBytes.meta, false, 1, []byte("bytes"))
	add(&taskMeta{name: "nope"}, false, 1, 7)
	// Raw inputs for a task that takes a struct, and for an unknown task:
	// the parent's registration disagrees with the worker's.
	add(&taskMeta{name: "point", inRaw: true}, false, 1, 5)
	add(&taskMeta{name: "nope", inRaw: true}, false, 1, 7)
	return w.ob.b
}

type encSink struct{ v any }

// encode encodes a pointer to the value, as the pool's sinks do.
func (s encSink) encode(_ *request, enc encoder) error {
	p := reflect.New(reflect.TypeOf(s.v))
	p.Elem().Set(reflect.ValueOf(s.v))
	return enc.Encode(p.Interface())
}
func (encSink) decode(*request, decoder, []itemErr) error { return nil }
func (encSink) fail(*request, error)                      {}

func TestServerReadValid(t *testing.T) {
	data := requestFrames(t, DefaultMaxFrame)
	s := newServer(bytes.NewReader(data), io.Discard, DefaultMaxFrame, fuzzTasks())
	var fails []errKind
	n := 0
	for {
		q, err := s.read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if q.fail != nil {
			fails = append(fails, q.fail.kind)
		}
	}
	if n != 9 || !slices.Equal(fails, []errKind{kindUnknownTask, kindDecode, kindUnknownTask}) {
		t.Fatalf("%d requests, failures %v", n, fails)
	}
}

// TestServeReplies runs the worker loop in memory and reads its replies
// back with the parent's reader.
func TestServeReplies(t *testing.T) {
	data := requestFrames(t, DefaultMaxFrame)
	var out bytes.Buffer
	s := newServer(bytes.NewReader(data), &out, DefaultMaxFrame, fuzzTasks())
	if err := s.serve(context.Background()); err != nil {
		t.Fatal(err)
	}
	fr := newFrameReader(&out, DefaultMaxFrame)
	var statuses []byte
	for {
		body, _, err := fr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := parser{b: body}
		if k := p.byte(); k != repResult {
			t.Fatalf("kind %d", k)
		}
		p.uvarint()
		p.uvarint()
		statuses = append(statuses, p.byte())
	}
	// int and string travel raw (codec.go); a point, chunks and []byte as gob.
	if want := []byte{statusRaw, statusRaw, 0, 0, 0, 0, statusError, statusError, statusError}; !bytes.Equal(statuses, want) {
		t.Fatalf("statuses %v, want %v", statuses, want)
	}
}

func header(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// TestFrameLimit: a length over the limit is refused before any body is
// read; a length that lies costs only the bytes that arrive.
func TestFrameLimit(t *testing.T) {
	fr := newFrameReader(bytes.NewReader(append(header(1<<30), 1, 2, 3)), 1<<20)
	if _, _, err := fr.next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fr = newFrameReader(bytes.NewReader(append(header(60<<20), make([]byte, 100)...)), DefaultMaxFrame)
	if _, _, err := fr.next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("short frame: %v", err)
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("a 100-byte frame claiming 60 MiB allocated %d bytes", d)
	}
	fr = newFrameReader(bytes.NewReader(append(header(resetBit|3), 7, 8, 9)), 16)
	body, reset, err := fr.next()
	if err != nil || !reset || !bytes.Equal(body, []byte{7, 8, 9}) {
		t.Fatalf("%v %v %v", body, reset, err)
	}
	if _, _, err := fr.next(); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
}

// TestChunkLengthChecked: a chunk whose gob slice is longer than its header
// says is refused before gob allocates for it.
func TestChunkLengthChecked(t *testing.T) {
	var w requestWriter
	w.init(DefaultMaxFrame)
	r := &request{task: &fuzzInt.meta, n: 5, chunk: true, sink: encSink{[]int{1, 2, 3, 4, 5}}}
	if err := w.encode(r); err != nil {
		t.Fatal(err)
	}
	// Rewrite the header's count from 5 to 4: after the length, kind (2),
	// id (1) and deadline (0) take one byte each.
	b := w.ob.b
	if !bytes.Equal(b[4:8], []byte{reqChunk, 1, 0, 5}) {
		t.Fatalf("header % x", b[4:8])
	}
	b[7] = 4
	s := newServer(bytes.NewReader(b), io.Discard, DefaultMaxFrame, fuzzTasks())
	if _, err := s.read(); !errors.Is(err, errCorrupt) {
		t.Fatalf("read: %v", err)
	}
}

// TestServeCorrupt: garbage ends the worker loop with an error.
func TestServeCorrupt(t *testing.T) {
	for _, data := range [][]byte{
		{0, 0, 0},
		append(header(5), 1, 2, 3, 4, 5),
		append(header(3), 9, 9, 9),
		append(header(200), bytes.Repeat([]byte{0xff}, 200)...),
	} {
		s := newServer(bytes.NewReader(data), io.Discard, 1<<10, fuzzTasks())
		if err := s.serve(context.Background()); err == nil {
			t.Errorf("serve(%x) = nil", data)
		}
	}
}

const fuzzLimit = 1 << 20

// FuzzServerRead feeds bytes to the worker's frame reader and request
// decoder: it must end with an error or io.EOF, never panic or hang, and no
// request may allocate more than the frame limit.
func FuzzServerRead(f *testing.F) {
	valid := requestFrames(f, fuzzLimit)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(append(header(1<<30), 1))
	f.Add(append(header(8), 1, 1, 0, 3, 'i', 'n', 't', 0))
	corrupted := bytes.Clone(valid)
	for i := 10; i < len(corrupted); i += 17 {
		corrupted[i] ^= 0x5a
	}
	f.Add(corrupted)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newServer(bytes.NewReader(data), io.Discard, fuzzLimit, fuzzTasks())
		var before, after runtime.MemStats
		for i := 0; ; i++ {
			if i > len(data)/headerLen {
				t.Fatalf("%d requests from %d bytes", i, len(data))
			}
			runtime.ReadMemStats(&before)
			_, err := s.read()
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > fuzzLimit {
				t.Fatalf("one request allocated %d bytes, limit %d", d, fuzzLimit)
			}
			if err != nil {
				return
			}
		}
	})
}

func TestAutoChunk(t *testing.T) {
	for _, c := range []struct {
		n, workers int
		est        int64
		want       int
	}{
		{100_000, 2, 0, 16},      // unknown task, many inputs
		{500, 2, 0, 1},           // unknown task, few inputs: one by one
		{100_000, 2, 50, 2000},   // 50 ns a task: 100 us a chunk
		{1000, 2, 50, 125},       // at most a quarter of the inputs per worker
		{64, 2, 300_000, 1},      // long tasks: one by one
		{3, 4, 10, 1},            // fewer inputs than workers
		{1 << 30, 2, 1_000, 100}, // Stream: unbounded input
	} {
		if got := autoChunk(c.n, c.workers, c.est); got != c.want {
			t.Errorf("autoChunk(%d, %d, %d) = %d, want %d", c.n, c.workers, c.est, got, c.want)
		}
	}
}

package procpool

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// fuzzOdd fails odd inputs and panics on 13: its chunks get item errors.
var fuzzOdd = newTask("odd", func(_ context.Context, n int) (int, error) {
	if n == 13 {
		panic("thirteen")
	}
	if n%2 == 1 {
		return 0, fmt.Errorf("odd %d", n)
	}
	return n, nil
})

// replyStream runs the worker loop in memory over requests of every kind
// and returns the reply frames it wrote, and the number of inputs of each
// request in order.
func replyStream(t testing.TB) (frames []byte, items []int) {
	var w requestWriter
	w.init(fuzzLimit)
	add := func(task *taskMeta, chunk bool, n int, v any) {
		r := &request{task: task, n: n, chunk: chunk, deadline: time.Now().Add(time.Hour).UnixNano(), sink: encSink{v}}
		if err := w.encode(r); err != nil {
			t.Fatal(err)
		}
		items = append(items, n)
	}
	add(&fuzzInt.meta, false, 1, 42)
	add(&fuzzStr.meta, false, 1, "hello")
	add(&fuzzPt.meta, true, 2, []fuzzPoint{{X: 1}, {Y: 2, Name: "q"}})
	add(&fuzzOdd.meta, true, 4, []int{2, 3, 13, 4})      // statusItems
	add(&fuzzOdd.meta, false, 1, 13)                     // statusError, a panic
	add(&taskMeta{name: "nope"}, false, 1, 7)            // statusError, unknown task
	add(&fuzzBytes.meta, false, 1, []byte("last reply")) // statusOK
	tasks := fuzzTasks()
	tasks["odd"] = fuzzOdd
	var out bytes.Buffer
	if err := newServer(bytes.NewReader(w.ob.b), &out, fuzzLimit, tasks).serve(context.Background()); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), items
}

// bodies splits a stream of frames.
func bodies(t testing.TB, b []byte) (out [][]byte) {
	for len(b) > 0 {
		body, _, rest, err := splitFrame(b, maxFrameLimit)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, body)
		b = rest
	}
	return out
}

func TestParseReply(t *testing.T) {
	frames, items := replyStream(t)
	bs := bodies(t, frames)
	if len(bs) != len(items) {
		t.Fatalf("%d replies to %d requests", len(bs), len(items))
	}
	var statuses []byte
	for i, b := range bs {
		rep, err := parseReply(b, items[i])
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if rep.id != uint64(i+1) {
			t.Errorf("reply %d: id %d", i, rep.id)
		}
		statuses = append(statuses, rep.status)
		if id, err := replyID(b); err != nil || id != rep.id {
			t.Errorf("replyID = %d, %v; want %d", id, err, rep.id)
		}
	}
	if want := []byte{statusRaw, statusRaw, statusOK, statusItems, statusError, statusError, statusOK}; !bytes.Equal(statuses, want) {
		t.Fatalf("statuses %v, want %v", statuses, want)
	}
	rep, _ := parseReply(bs[3], 4)
	if len(rep.errs) != 2 || rep.errs[0].index != 1 || rep.errs[0].kind != kindHandler ||
		rep.errs[1].index != 2 || rep.errs[1].kind != kindPanic || len(rep.errs[1].stack) == 0 {
		t.Errorf("item errors %+v", rep.errs)
	}
	if rep, _ := parseReply(bs[4], 1); rep.whole.kind != kindPanic || rep.whole.msg != "thirteen" || rep.out != nil {
		t.Errorf("panic reply %+v", rep)
	}

	if rep, _ := parseReply(bs[0], 1); string(rep.out) != string(binary.AppendVarint(nil, 42)) {
		t.Errorf("raw reply to 42: % x", rep.out)
	}
	hdr := func(status byte, errs ...itemErr) []byte { return appendReplyHeader(nil, 1, 5, status, errs) }
	var gb bytes.Buffer
	if err := gob.NewEncoder(&gb).Encode(42); err != nil {
		t.Fatal(err)
	}
	gobInt := gb.Bytes()
	for name, c := range map[string]struct {
		body  []byte
		items int
	}{
		"empty":              {nil, 1},
		"kind":               {append([]byte{repHello}, bs[0][1:]...), 1},
		"status":             {append(hdr(7), gobInt...), 1},
		"no gob":             {hdr(statusOK), 1},
		"gob cut":            {append(hdr(statusOK), gobInt[:len(gobInt)-1]...), 1},
		"after error":        {append(hdr(statusError, itemErr{kind: kindHandler, msg: "x"}), 0), 1},
		"error kind":         {append(hdr(statusError), byte(kindMax), 0, 0), 1},
		"more items":         {append(hdr(statusItems, itemErr{kind: kindHandler}, itemErr{index: 1, kind: kindHandler}), gobInt...), 1},
		"item index":         {append(hdr(statusItems, itemErr{index: 4, kind: kindHandler}), gobInt...), 4},
		"items out of order": {append(hdr(statusItems, itemErr{index: 2, kind: kindHandler}, itemErr{index: 1, kind: kindHandler}), gobInt...), 4},
		"items repeated":     {append(hdr(statusItems, itemErr{index: 1, kind: kindHandler}, itemErr{index: 1, kind: kindHandler}), gobInt...), 4},
		"raw for a chunk":    {append(hdr(statusRaw), 2), 2},
	} {
		if _, err := parseReply(c.body, c.items); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: %v, want a corrupt frame", name, err)
		}
	}
}

// FuzzReply feeds bytes, as a stream of frames, to the parent's frame
// splitter and reply parser: they must return an error or a reply that
// keeps the parser's promises, never panic; a parsed reply, encoded again,
// parses to the same reply.
func FuzzReply(f *testing.F) {
	frames, _ := replyStream(f)
	f.Add(frames, uint16(4))
	for _, b := range bodies(f, frames) {
		f.Add(binary.BigEndian.AppendUint32(nil, uint32(len(b))), uint16(1))
		f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...), uint16(1))
		f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))|resetBit), b...), uint16(4))
	}
	corrupted := bytes.Clone(frames)
	for i := 5; i < len(corrupted); i += 13 {
		corrupted[i] ^= 0x41
	}
	f.Add(corrupted, uint16(2))
	f.Fuzz(func(t *testing.T, data []byte, n uint16) {
		items := int(n)
		for len(data) > 0 {
			body, _, rest, err := splitFrame(data, fuzzLimit)
			if err != nil {
				return
			}
			if len(rest) >= len(data) {
				t.Fatalf("splitFrame consumed nothing")
			}
			data = rest
			rep, err := parseReply(body, items)
			if err != nil {
				if !errors.Is(err, errCorrupt) {
					t.Fatalf("error %v does not wrap errCorrupt", err)
				}
				continue
			}
			checkReply(t, rep, items)
			again := appendReplyHeader(nil, rep.id, rep.dur, rep.status, rep.errs)
			if rep.status == statusError {
				again = appendItemErr(again, &rep.whole)
			}
			again = append(again, rep.out...)
			rep2, err := parseReply(again, items)
			if err != nil {
				t.Fatalf("re-encoded reply: %v", err)
			}
			if !reflect.DeepEqual(rep, rep2) {
				t.Fatalf("re-encoded reply %+v, was %+v", rep2, rep)
			}
		}
	})
}

func checkReply(t *testing.T, rep reply, items int) {
	t.Helper()
	switch rep.status {
	case statusOK, statusItems:
		if checkGob(rep.out) != nil {
			t.Fatalf("gob section not whole messages")
		}
	case statusError:
		if rep.out != nil || rep.whole.kind == kindNone || rep.whole.kind >= kindMax {
			t.Fatalf("error reply %+v", rep)
		}
	case statusRaw:
		if items != 1 {
			t.Fatalf("raw reply for %d items", items)
		}
	default:
		t.Fatalf("status %d", rep.status)
	}
	if len(rep.errs) > items || (rep.status != statusItems && len(rep.errs) > 0) {
		t.Fatalf("%d item errors for %d items, status %d", len(rep.errs), items, rep.status)
	}
	for i, e := range rep.errs {
		if e.index < 0 || e.index >= items || (i > 0 && e.index <= rep.errs[i-1].index) || e.kind == kindNone || e.kind >= kindMax {
			t.Fatalf("item error %d: %+v", i, e)
		}
	}
	if rep.dur < 0 {
		t.Fatalf("duration %d", rep.dur)
	}
}

// recSink records what a request received.
type recSink struct {
	got map[uint64]string
}

func (s *recSink) encode(*request, encoder) error { return nil }

func (s *recSink) decode(r *request, dec decoder, errs []itemErr) error {
	var v reflect.Value
	switch r.task.name {
	case "int":
		v = reflect.New(reflect.TypeFor[int]())
	case "str":
		v = reflect.New(reflect.TypeFor[string]())
	case "point":
		v = reflect.New(reflect.TypeFor[[]fuzzPoint]())
	case "odd":
		v = reflect.New(reflect.TypeFor[[]int]())
	default:
		v = reflect.New(reflect.TypeFor[[]byte]())
	}
	if err := dec.Decode(v.Interface()); err != nil {
		return err
	}
	s.got[r.id] = fmt.Sprintf("%v %d", v.Elem().Interface(), len(errs))
	return nil
}

func (s *recSink) fail(r *request, err error) { s.got[r.id] = "error: " + err.Error() }

// TestReplay: after a death, the parent settles from the journal the
// replies it did not read from the pipe, skips those it did, and leaves
// the rest in flight.
func TestReplay(t *testing.T) {
	frames, items := replyStream(t)
	fs := bodies(t, frames)
	// The worker answered 1 to 5: 1 and 2 came through the pipe, and it
	// died after writing them but before emptying its journal, which holds
	// 1 to 5. Request 6 never got an answer, nor 7.
	jf, err := newJournal()
	if err != nil {
		t.Skip(err)
	}
	defer jf.Close()
	var journal []byte
	for _, b := range fs[:5] {
		journal = binary.BigEndian.AppendUint32(journal, uint32(len(b)))
		journal = append(journal, b...)
	}
	if _, err := jf.WriteAt(journal, journalHeader); err != nil {
		t.Fatal(err)
	}
	if _, err := jf.WriteAt(binary.LittleEndian.AppendUint64(nil, uint64(len(journal))), 0); err != nil {
		t.Fatal(err)
	}

	p := &Pool{o: defaultOptions()}
	w := &proc{s: &slot{p: p}, journal: jf}
	w.dec = gob.NewDecoder(&w.src)
	sink := &recSink{got: map[uint64]string{}}
	names := []string{"int", "str", "point", "odd", "odd", "nope", "bytes"}
	var reqs []*request
	for i, n := range items {
		r := &request{task: &taskMeta{name: names[i]}, sink: sink, n: n, chunk: n > 1, id: uint64(i + 1)}
		reqs = append(reqs, r)
		w.fifo = append(w.fifo, r)
	}
	w.inflight.Store(int64(len(reqs)))
	for _, b := range fs[:2] {
		if err := w.settleFrame(b, false, false); err != nil {
			t.Fatal(err)
		}
	}
	w.replay()
	if w.head != 5 || w.inflight.Load() != 2 {
		t.Fatalf("head %d, %d in flight; want 5, 2", w.head, w.inflight.Load())
	}
	want := map[uint64]string{
		1: "42 0",
		2: "hello 0",
		3: "[{1 0 } {0 2 q}] 0",
		4: "[2 0 0 4] 2",
		5: "error: procpool: task odd panicked: thirteen",
	}
	for id, s := range want {
		if got := sink.got[id]; got != s {
			t.Errorf("request %d got %q, want %q", id, got, s)
		}
	}
	if len(sink.got) != len(want) {
		t.Errorf("settled %v", sink.got)
	}
	if c, f := p.completed.Load(), p.failed.Load(); c != 1+1+2+2 || f != 2+1 {
		t.Errorf("completed %d, failed %d", c, f)
	}
}

// TestJournalCovers: when a task runs, the replies the worker wrote to its
// pipe and those its journal holds are together every reply made before,
// in order, including after a reply too large for the journal.
func TestJournalCovers(t *testing.T) {
	var s *server
	var pipe bytes.Buffer
	checked := 0
	check := newTask("check", func(_ context.Context, in []byte) ([]byte, error) {
		checked++
		var got []uint64
		seen := map[uint64]bool{}
		for _, part := range [][]byte{pipe.Bytes(), s.jmem[journalHeader:][:binary.LittleEndian.Uint64(s.jmem)]} {
			for _, b := range bodies(t, part) {
				id, err := replyID(b)
				if err != nil {
					t.Fatal(err)
				}
				if !seen[id] {
					seen[id] = true
					got = append(got, id)
				}
			}
		}
		for i, id := range got {
			if id != uint64(i+1) {
				t.Fatalf("task %d: replies %v", checked, got)
			}
		}
		if len(got) != checked-1 {
			t.Fatalf("task %d: %d replies before it", checked, len(got))
		}
		return in, nil
	})
	var w requestWriter
	w.init(4 * journalSize)
	const n = 200
	for i := range n {
		in := bytes.Repeat([]byte{byte(i)}, i*37)
		if i%50 == 49 {
			in = make([]byte, journalSize) // a reply larger than the journal
		}
		if err := w.encode(&request{task: &check.meta, n: 1, sink: encSink{in}}); err != nil {
			t.Fatal(err)
		}
	}
	s = newServer(bytes.NewReader(w.ob.b), &pipe, 4*journalSize, map[string]taskImpl{"check": check})
	s.useJournal(make([]byte, journalSize))
	if err := s.serve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if checked != n {
		t.Fatalf("checked %d of %d", checked, n)
	}
	if got := len(bodies(t, pipe.Bytes())); got != n {
		t.Fatalf("%d replies written, want %d", got, n)
	}
}

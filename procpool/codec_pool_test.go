package procpool_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corework/corework/procpool"
)

type celsius float64

// Tasks whose lone inputs and outputs travel raw (predeclared scalars),
// and one with a named type, which keeps gob.
var (
	rawInt8  = procpool.Register("test.raw.int8", func(_ context.Context, n int8) (int8, error) { return n / 2, nil })
	rawU64   = procpool.Register("test.raw.uint64", func(_ context.Context, n uint64) (uint64, error) { return n ^ 0xffff, nil })
	rawF32   = procpool.Register("test.raw.float32", func(_ context.Context, x float32) (float64, error) { return float64(x) * 2, nil })
	rawBool  = procpool.Register("test.raw.bool", func(_ context.Context, b bool) (string, error) { return strconv.FormatBool(!b), nil })
	rawLen   = procpool.Register("test.raw.string", func(_ context.Context, s string) (int, error) { return len(s), nil })
	rawBig   = procpool.Register("test.raw.big", func(_ context.Context, n int) (string, error) { return strings.Repeat("x", n), nil })
	rawNamed = procpool.Register("test.raw.named", func(_ context.Context, c celsius) (celsius, error) { return c + 1, nil })
)

// TestRawValues: scalar inputs and outputs cross as raw bytes (codec.go)
// with their edge values intact, through Call, unchunked and chunked Map
// (chunks keep gob) and Stream.
func TestRawValues(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2), procpool.WithMaxFrame(4<<10))
	ctx := context.Background()
	i8 := []int8{math.MinInt8, -1, 0, 1, math.MaxInt8}
	for _, chunk := range []int{1, 3} {
		got, err := rawInt8.Map(ctx, p, i8, procpool.WithChunkSize(chunk))
		if err != nil || !slices.Equal(got, []int8{-64, 0, 0, 0, 63}) {
			t.Fatalf("int8, chunks of %d: %v, %v", chunk, got, err)
		}
	}
	for _, n := range []uint64{0, 1, math.MaxUint64} {
		if got, err := rawU64.Call(ctx, p, n); err != nil || got != n^0xffff {
			t.Fatalf("uint64 %d: %d, %v", n, got, err)
		}
	}
	if got, err := rawF32.Call(ctx, p, float32(math.Inf(-1))); err != nil || !math.IsInf(got, -1) {
		t.Fatalf("float32 -Inf: %v, %v", got, err)
	}
	if got, err := rawF32.Call(ctx, p, float32(math.NaN())); err != nil || !math.IsNaN(got) {
		t.Fatalf("float32 NaN: %v, %v", got, err)
	}
	if got, err := rawBool.Map(ctx, p, []bool{true, false}, procpool.WithChunkSize(1)); err != nil || !slices.Equal(got, []string{"false", "true"}) {
		t.Fatalf("bool: %v, %v", got, err)
	}
	strs := []string{"", "héllo", "\xff\xfe not UTF-8", strings.Repeat("y", 3000)}
	var lens []int
	for r, err := range rawLen.Stream(ctx, p, slices.Values(strs), procpool.WithChunkSize(1)) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Value != len(strs[r.Index]) {
			t.Fatalf("len(%q) = %d", strs[r.Index], r.Value)
		}
		lens = append(lens, r.Value)
	}
	if len(lens) != len(strs) {
		t.Fatalf("%d results for %d strings", len(lens), len(strs))
	}
	if got, err := rawNamed.Call(ctx, p, celsius(-273.15)); err != nil || got != celsius(-272.15) {
		t.Fatalf("named type: %v, %v", got, err)
	}
	// Over the frame limit, raw like gob: the input is refused, the output
	// fails that call, and the worker goes on.
	if _, err := rawLen.Call(ctx, p, strings.Repeat("z", 8<<10)); !errors.Is(err, procpool.ErrFrameTooLarge) {
		t.Fatalf("big raw input: %v", err)
	}
	if _, err := rawBig.Call(ctx, p, 8<<10); !errors.Is(err, procpool.ErrFrameTooLarge) {
		t.Fatalf("big raw output: %v", err)
	}
	if got, err := rawBig.Call(ctx, p, 3); err != nil || got != "xxx" {
		t.Fatalf("after: %q, %v", got, err)
	}
	if st := p.Stats(); st.Crashes != 0 || st.Restarts != 0 {
		t.Errorf("stats %+v", st)
	}
}

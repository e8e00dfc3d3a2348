package procpool

import (
	"encoding/binary"
	"math"
	"reflect"
	"testing"
)

// rawValues holds edge values of every raw type, as pointers.
var rawValues = []any{
	ptr(false), ptr(true),
	ptr(0), ptr(math.MinInt), ptr(math.MaxInt),
	ptr(int8(math.MinInt8)), ptr(int8(math.MaxInt8)),
	ptr(int16(math.MinInt16)), ptr(int32(math.MaxInt32)), ptr(int64(math.MinInt64)),
	ptr(uint(math.MaxUint)), ptr(uint8(255)), ptr(uint16(math.MaxUint16)),
	ptr(uint32(math.MaxUint32)), ptr(uint64(math.MaxUint64)),
	ptr(float32(math.Inf(-1))), ptr(float32(-0.5)), ptr(math.Copysign(0, -1)), ptr(math.NaN()), ptr(math.MaxFloat64),
	ptr(""), ptr("héllo"), ptr("\xff\xfe not UTF-8"),
}

func ptr[T any](v T) *T { return &v }

func TestRawRoundTrip(t *testing.T) {
	for _, v := range rawValues {
		var ob outBuf
		if err := (rawEncoder{&ob}).Encode(v); err != nil {
			t.Fatalf("encode %T: %v", v, err)
		}
		got := reflect.New(reflect.TypeOf(v).Elem())
		if err := (&rawDecoder{b: ob.b}).Decode(got.Interface()); err != nil {
			t.Fatalf("decode %T % x: %v", v, ob.b, err)
		}
		if !sameRaw(got.Elem().Interface(), reflect.ValueOf(v).Elem().Interface()) {
			t.Fatalf("%T: got %v, want %v", v, got.Elem(), reflect.ValueOf(v).Elem())
		}
	}
}

// sameRaw compares floats by their bits (NaN, -0).
func sameRaw(a, b any) bool {
	switch x := a.(type) {
	case float64:
		return math.Float64bits(x) == math.Float64bits(b.(float64))
	case float32:
		return math.Float32bits(x) == math.Float32bits(b.(float32))
	}
	return a == b
}

func TestRawDecodeErrors(t *testing.T) {
	for name, c := range map[string]struct {
		b []byte
		v any
	}{
		"empty int":       {nil, new(int)},
		"int trailing":    {append(binary.AppendVarint(nil, 5), 0), new(int)},
		"int8 range":      {binary.AppendVarint(nil, 128), new(int8)},
		"int16 range":     {binary.AppendVarint(nil, -40000), new(int16)},
		"uint8 range":     {binary.AppendUvarint(nil, 256), new(uint8)},
		"uint32 range":    {binary.AppendUvarint(nil, 1<<32), new(uint32)},
		"uvarint over 64": {[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, new(uint64)},
		"bool 2":          {[]byte{2}, new(bool)},
		"bool long":       {[]byte{1, 0}, new(bool)},
		"float32 short":   {[]byte{1, 2, 3}, new(float32)},
		"float64 long":    {make([]byte, 9), new(float64)},
		"not raw":         {[]byte{1}, new([]int)},
	} {
		if err := (&rawDecoder{b: c.b}).Decode(c.v); err == nil {
			t.Errorf("%s: decoded % x into %T without error", name, c.b, c.v)
		}
	}
	var ob outBuf
	if err := (rawEncoder{&ob}).Encode(new(struct{})); err == nil || len(ob.b) != 0 {
		t.Errorf("encoded a struct raw: % x, %v", ob.b, err)
	}
}

func TestIsRaw(t *testing.T) {
	type celsius float64
	for _, c := range []struct {
		raw  bool
		what string
	}{
		{isRaw[int](), "int"}, {isRaw[string](), "string"}, {isRaw[float32](), "float32"},
		{!isRaw[celsius](), "a named float"}, {!isRaw[[]byte](), "[]byte"}, {!isRaw[*int](), "*int"},
		{!isRaw[any](), "any"}, {!isRaw[uintptr](), "uintptr"}, {!isRaw[complex128](), "complex128"},
	} {
		if !c.raw {
			t.Errorf("isRaw wrong for %s", c.what)
		}
	}
}

// FuzzRawDecode: any bytes decode into any raw type or fail cleanly; what
// decodes encodes to bytes that decode to the same value.
func FuzzRawDecode(f *testing.F) {
	for _, v := range rawValues {
		var ob outBuf
		(rawEncoder{&ob}).Encode(v)
		f.Add(ob.b)
	}
	f.Add([]byte{0x80, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range rawValues {
			got := reflect.New(reflect.TypeOf(v).Elem())
			if err := (&rawDecoder{b: b}).Decode(got.Interface()); err != nil {
				continue
			}
			var ob outBuf
			if err := (rawEncoder{&ob}).Encode(got.Interface()); err != nil {
				t.Fatalf("re-encode %T: %v", v, err)
			}
			again := reflect.New(reflect.TypeOf(v).Elem())
			if err := (&rawDecoder{b: ob.b}).Decode(again.Interface()); err != nil ||
				!sameRaw(again.Elem().Interface(), got.Elem().Interface()) {
				t.Fatalf("%T: % x decoded to %v, re-encoded % x decodes to %v, %v", v, b, got.Elem(), ob.b, again.Elem(), err)
			}
		}
	})
}

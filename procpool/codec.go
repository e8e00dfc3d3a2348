package procpool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
)

// Scalars: a request with one input whose type is a predeclared scalar
// (bool, an integer or floating-point type, string) carries that input in
// raw form instead of as gob (kind reqRaw), and a reply with one output of
// such a type carries it raw too (statusRaw): integers as varints, floats
// as their IEEE 754 bits (little-endian), a bool as one byte, a string as
// its bytes, each the whole rest of the frame. For a tiny task taking and
// returning an int, gob's encode and decode (type lookups, message
// framing) were a third of the parent's CPU time per task (profile of
// unchunked BenchmarkMap, about 0.3 of 0.9 us). Both
// sides know a task's types, so neither trusts the other's choice: a raw
// frame for a task whose type is not raw, or raw bytes that do not decode
// to exactly one value, are a corrupt frame. Named types (type ID int) and
// chunks keep gob: a named type may have its own GobEncode.

// encoder and decoder are what a request's sink writes its input to and
// reads its output from: gob's, or the raw codec.
type encoder interface{ Encode(v any) error }
type decoder interface{ Decode(v any) error }

// rawTypes is a variable, not filled by init, so that tasks registered in
// package-level variables (which are initialized before init runs) see it.
var rawTypes = func() map[reflect.Type]bool {
	m := map[reflect.Type]bool{}
	for _, v := range []any{false, int(0), int8(0), int16(0), int32(0), int64(0),
		uint(0), uint8(0), uint16(0), uint32(0), uint64(0), float32(0), float64(0), ""} {
		m[reflect.TypeOf(v)] = true
	}
	return m
}()

// isRaw reports whether values of T travel raw when alone in a frame.
func isRaw[T any]() bool { return rawTypes[reflect.TypeFor[T]()] }

// rawEncoder appends one value's raw form to a frame.
type rawEncoder struct{ ob *outBuf }

func (e rawEncoder) Encode(v any) error {
	b := e.ob.b
	switch x := v.(type) {
	case *bool:
		c := byte(0)
		if *x {
			c = 1
		}
		b = append(b, c)
	case *int:
		b = binary.AppendVarint(b, int64(*x))
	case *int8:
		b = binary.AppendVarint(b, int64(*x))
	case *int16:
		b = binary.AppendVarint(b, int64(*x))
	case *int32:
		b = binary.AppendVarint(b, int64(*x))
	case *int64:
		b = binary.AppendVarint(b, *x)
	case *uint:
		b = binary.AppendUvarint(b, uint64(*x))
	case *uint8:
		b = binary.AppendUvarint(b, uint64(*x))
	case *uint16:
		b = binary.AppendUvarint(b, uint64(*x))
	case *uint32:
		b = binary.AppendUvarint(b, uint64(*x))
	case *uint64:
		b = binary.AppendUvarint(b, *x)
	case *float32:
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(*x))
	case *float64:
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(*x))
	case *string:
		b = append(b, *x...)
	default:
		return fmt.Errorf("no raw form for %T", v)
	}
	e.ob.b = b
	return nil
}

// rawDecoder decodes b, which must hold exactly one raw value.
type rawDecoder struct{ b []byte }

var errRawLength = errors.New("raw value of the wrong length")

func (d *rawDecoder) Decode(v any) error {
	b := d.b
	d.b = nil
	switch x := v.(type) {
	case *bool:
		if len(b) != 1 || b[0] > 1 {
			return errors.New("raw bool is not one byte 0 or 1")
		}
		*x = b[0] == 1
	case *int:
		return decodeInt(x, b)
	case *int8:
		return decodeInt(x, b)
	case *int16:
		return decodeInt(x, b)
	case *int32:
		return decodeInt(x, b)
	case *int64:
		return decodeInt(x, b)
	case *uint:
		return decodeUint(x, b)
	case *uint8:
		return decodeUint(x, b)
	case *uint16:
		return decodeUint(x, b)
	case *uint32:
		return decodeUint(x, b)
	case *uint64:
		return decodeUint(x, b)
	case *float32:
		if len(b) != 4 {
			return errRawLength
		}
		*x = math.Float32frombits(binary.LittleEndian.Uint32(b))
	case *float64:
		if len(b) != 8 {
			return errRawLength
		}
		*x = math.Float64frombits(binary.LittleEndian.Uint64(b))
	case *string:
		*x = string(b)
	default:
		return fmt.Errorf("no raw form for %T", v)
	}
	return nil
}

// decodeInt decodes b, one varint, into *x, refusing a value that does not
// fit T.
func decodeInt[T int | int8 | int16 | int32 | int64](x *T, b []byte) error {
	n, k := binary.Varint(b)
	if k <= 0 || k != len(b) {
		return errRawLength
	}
	if int64(T(n)) != n {
		return fmt.Errorf("raw integer %d out of range", n)
	}
	*x = T(n)
	return nil
}

// decodeUint is decodeInt for the unsigned types.
func decodeUint[T uint | uint8 | uint16 | uint32 | uint64](x *T, b []byte) error {
	n, k := binary.Uvarint(b)
	if k <= 0 || k != len(b) {
		return errRawLength
	}
	if uint64(T(n)) != n {
		return fmt.Errorf("raw integer %d out of range", n)
	}
	*x = T(n)
	return nil
}

package procpool_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/corework/corework/procpool"
)

// TestFramesLargerThanRings sends frames several times the size of a
// worker's rings (256 KiB on Linux) both ways, alone and many at a time,
// so that both sides wait for room and the bytes stream through in parts.
func TestFramesLargerThanRings(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2))
	ctx := context.Background()
	big := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{7}).Read(big)
	got, err := echoBytes.Call(ctx, p, big)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("3 MiB echo: got %d bytes, not the same", len(got))
	}
	ins := make([][]byte, 40)
	for i := range ins {
		ins[i] = big[i*(64<<10) : i*(64<<10)+100<<10+i*7<<10]
	}
	outs, err := echoBytes.Map(ctx, p, ins, procpool.WithChunkSize(3))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ins {
		if !bytes.Equal(outs[i], ins[i]) {
			t.Fatalf("input %d: echo of %d bytes differs (%d bytes)", i, len(ins[i]), len(outs[i]))
		}
	}
	// Then tiny calls again, through the same rings.
	for i := range 1000 {
		if n, err := double.Call(ctx, p, i); err != nil || n != 2*i {
			t.Fatalf("double(%d) = %d, %v", i, n, err)
		}
	}
}

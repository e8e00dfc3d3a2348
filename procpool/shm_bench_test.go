package procpool_test

import (
	"context"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/corework/corework/procpool"
)

// pipeSum is shmSum's twin for a buffer copied through the pipe.
var pipeSum = procpool.Register("test.pipe.sum", func(_ context.Context, b []byte) (uint32, error) {
	return crc32.Checksum(b, castagnoli), nil
})

// BenchmarkLargeInput hands one worker a 1, 8 or 64 MiB input whose bytes
// it checksums (CRC-32C, several GB/s, the same work both ways), once as a
// []byte field copied through the pipe and once as a SharedRef, and
// reports each way's throughput (input bytes per second of round trip) and
// their ratio. Each iteration makes one call of each kind, timed apart.
func BenchmarkLargeInput(b *testing.B) {
	for _, mib := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("size=%dMiB", mib), func(b *testing.B) {
			size := mib << 20
			p := benchPool(b, procpool.WithWorkers(1), procpool.WithMaxFrame(size+1<<20))
			ctx := context.Background()
			s, want := newShared(b, size)
			data, err := s.Bytes()
			if err != nil {
				b.Fatal(err)
			}
			copied := append([]byte(nil), data...)
			// Untimed warm-up: the worker's frame buffer grown, gob's types sent.
			if _, err := pipeSum.Call(ctx, p, copied); err != nil {
				b.Fatal(err)
			}
			var pipe, shared time.Duration
			for b.Loop() {
				t0 := time.Now()
				crc, err := pipeSum.Call(ctx, p, copied)
				if err != nil || crc != want {
					b.Fatalf("pipe: crc %08x, %v; want %08x", crc, err, want)
				}
				t1 := time.Now()
				var out shmOut
				err = s.Lend(func(ref procpool.SharedRef) error {
					out, err = shmSum.Call(ctx, p, shmIn{Buf: ref})
					return err
				})
				if err != nil || out.CRC != want {
					b.Fatalf("shared: crc %08x, %v; want %08x", out.CRC, err, want)
				}
				pipe += t1.Sub(t0)
				shared += time.Since(t1)
			}
			bytes := float64(size) * float64(b.N)
			b.ReportMetric(bytes/1e6/pipe.Seconds(), "pipe-MB/s")
			b.ReportMetric(bytes/1e6/shared.Seconds(), "shared-MB/s")
			b.ReportMetric(pipe.Seconds()/shared.Seconds(), "shared/pipe")
		})
	}
}

package main

import (
	"bytes"
	"errors"
	"image"
	"image/color/palette"
	"image/gif"
	"testing"
)

// FuzzInspectDecode feeds arbitrary files to the two functions that read
// uploads. inspect must not panic and must refuse with a *refusal (the
// reader cannot fail); an image it accepts is then decoded, and what the
// decode allocates for the pixels must not exceed what inspect counted
// (DecodeBytes), nor the image exceed the dimensions inspect read. The
// limits are small so that no input can make the fuzzer allocate much.
//
//	go test -fuzz FuzzInspectDecode -fuzztime 1m ./examples/thumbnails
func FuzzInspectDecode(f *testing.F) {
	rgba64 := image.NewRGBA64(image.Rect(0, 0, 12, 9))
	for i := range rgba64.Pix {
		rgba64.Pix[i] = byte(i * 13)
	}
	png := encode(f, "png", gradient(16, 16))
	var anim bytes.Buffer
	frame := image.NewPaletted(image.Rect(0, 0, 8, 8), palette.Plan9)
	if err := gif.EncodeAll(&anim, &gif.GIF{Image: []*image.Paletted{frame, frame}, Delay: []int{10, 10}}); err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{
		png,
		encode(f, "png", rgba64),
		encode(f, "png", image.NewGray16(image.Rect(0, 0, 7, 5))),
		encode(f, "png", image.NewPaletted(image.Rect(0, 0, 9, 4), palette.WebSafe)),
		encode(f, "jpeg", gradient(20, 10)),
		encode(f, "jpeg", image.NewGray(image.Rect(0, 0, 9, 9))),
		encode(f, "gif", frame),
		anim.Bytes(),
		png[:len(png)/2],
		append(bytes.Clone(png[:33]), make([]byte, 4096)...),
		append(bytes.Clone(png), make([]byte, 2048)...),
		[]byte("not an image"),
	} {
		f.Add(seed)
	}
	lim := limits{maxPixels: 1 << 16, maxDecoded: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := inspect(bytes.NewReader(data), int64(len(data)), lim)
		var ref *refusal
		if errors.As(err, &ref) {
			if ref.status < 400 || ref.status > 499 || ref.code == "" || ref.msg == "" {
				t.Fatalf("refusal %+v", ref)
			}
			return
		}
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		if info.DecodeBytes > lim.maxDecoded || int64(info.Width)*int64(info.Height) > lim.maxPixels {
			t.Fatalf("accepted beyond the limits: %+v", info)
		}
		img, format, err := decodeFull(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return // a corrupt image: the job fails, and the upload is refused
		}
		b := img.Bounds()
		if format != info.Format || b.Dx() > info.Width || b.Dy() > info.Height {
			t.Fatalf("decoded a %s %v; inspect said %+v", format, b, info)
		}
		if n := pixelBytes(img); n > info.DecodeBytes {
			t.Fatalf("decoded %T takes %d bytes; inspect counted %d (%+v)", img, n, info.DecodeBytes, info)
		}
	})
}

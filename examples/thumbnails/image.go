package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // registers the GIF decoder
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
)

// An upload is outside input: inspect reads its header and its structure
// (cheap, no pixels) before anything is queued, and decodeFull, run once
// by the upload's job, decodes it and checks that the decoder used the
// whole file.

// Bounds on what a file may hold besides its pixels.
const (
	// maxTrailing is how many bytes may follow the end of the image
	// (PNG's IEND chunk, JPEG's EOI marker, GIF's trailer); some writers
	// pad files a little, and the JPEG decoder reads ahead up to 4 KiB.
	maxTrailing = 1 << 10
	// maxMetadata bounds the bytes of a file that are neither pixel data
	// nor framing: PNG's ancillary chunks, JPEG's APPn and COM segments,
	// GIF's extensions (EXIF, ICC profiles, comments).
	maxMetadata = 1 << 20
	// maxScans bounds a progressive JPEG's scans: each one is a pass over
	// every coefficient, so thousands of tiny scans make a CPU bomb.
	maxScans = 100
	// paletteBytes is what a decoded palette costs (256 color.Color
	// interface values and the colors they box).
	paletteBytes = 256 * 24
)

// limits are the bounds inspect applies.
type limits struct {
	maxPixels  int64 // width x height
	maxDecoded int64 // bytes the decoder allocates (imageInfo.DecodeBytes)
}

// imageInfo is what inspect learns about an upload.
type imageInfo struct {
	Format string // "png", "jpeg" or "gif"
	Width  int
	Height int
	// DecodeBytes bounds what decoding allocates: the pixels at their
	// real size (8 bytes per pixel for 16-bit RGBA, 1 for gray or
	// paletted, about 1.5 to 3 for a JPEG depending on its chroma
	// subsampling), plus a progressive JPEG's coefficients, an interlaced
	// PNG's passes and a CMYK or RGB JPEG's conversion.
	DecodeBytes int64
}

// refusal is an upload refused for what it holds: the HTTP status and
// error code to answer with, and a message for the client.
type refusal struct {
	status int
	code   string
	msg    string
}

func (r *refusal) Error() string { return r.msg }

func badImage(format string, a ...any) error {
	return &refusal{http.StatusUnprocessableEntity, "bad_image", fmt.Sprintf(format, a...)}
}

// inspect checks the image in r, size bytes long, without decoding its
// pixels: it must be a PNG, JPEG or GIF image, within lim, with no more
// data than its dimensions can need and nothing but a few bytes after its
// end. A refused upload gets a *refusal; I/O errors come as they are.
func inspect(r io.ReaderAt, size int64, lim limits) (imageInfo, error) {
	c, format, err := image.DecodeConfig(bufio.NewReader(io.NewSectionReader(r, 0, size)))
	if err != nil || (format != "png" && format != "jpeg" && format != "gif") {
		return imageInfo{}, &refusal{http.StatusUnsupportedMediaType, "unsupported_image", "the file is not a PNG, JPEG or GIF image"}
	}
	if c.Width < 1 || c.Height < 1 {
		return imageInfo{}, &refusal{http.StatusUnsupportedMediaType, "unsupported_image", "the image is empty"}
	}
	info := imageInfo{Format: format, Width: c.Width, Height: c.Height}
	w, h := int64(c.Width), int64(c.Height)
	if w*h > lim.maxPixels {
		return imageInfo{}, &refusal{http.StatusRequestEntityTooLarge, "too_many_pixels",
			fmt.Sprintf("the image is %dx%d; the limit is %d pixels", c.Width, c.Height, lim.maxPixels)}
	}
	var end int64
	switch format {
	case "png":
		end, info.DecodeBytes, err = walkPNG(io.NewSectionReader(r, 0, size), w, h, bytesPerPixel(c.ColorModel))
	case "jpeg":
		end, info.DecodeBytes, err = walkJPEG(io.NewSectionReader(r, 0, size), w, h)
	case "gif":
		end, err = walkGIF(io.NewSectionReader(r, 0, size))
		info.DecodeBytes = w*h + paletteBytes
	}
	if err != nil {
		return imageInfo{}, err
	}
	if size-end > maxTrailing {
		return imageInfo{}, badImage("%d bytes follow the end of the %s image", size-end, format)
	}
	if info.DecodeBytes > lim.maxDecoded {
		return imageInfo{}, &refusal{http.StatusRequestEntityTooLarge, "too_large_decoded",
			fmt.Sprintf("the %dx%d %s image takes %d bytes decoded; the limit is %d", c.Width, c.Height, format, info.DecodeBytes, lim.maxDecoded)}
	}
	return info, nil
}

// bytesPerPixel is what the standard PNG decoder allocates per pixel for
// an image of color model m.
func bytesPerPixel(m color.Model) int64 {
	switch m {
	case color.GrayModel:
		return 1
	case color.Gray16Model:
		return 2
	case color.RGBAModel, color.NRGBAModel:
		return 4
	case color.RGBA64Model, color.NRGBA64Model:
		return 8
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 8 // the widest the decoders make
}

// walkPNG walks the chunks of a PNG image to its IEND chunk, whose end it
// returns with the bytes decoding takes (pixels of bpp bytes each, the
// passes of an interlaced image, two rows). The pixel data (IDAT) must
// not exceed what w x h pixels can need, uncompressed, and the other
// chunks must not exceed maxMetadata. It checks the framing only; the
// decoder checks the checksums and the compressed data.
func walkPNG(r io.Reader, w, h, bpp int64) (end, decodeBytes int64, err error) {
	br := bufio.NewReader(r)
	var hdr [8]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, 0, badImage("png: truncated")
	}
	// Rows with their filter byte, up to 15 more for Adam7's passes, and
	// the framing of deflate (5 bytes per stored block of up to 64 KiB),
	// zlib and IDAT chunks of at least 128 bytes: an eighth more is
	// plenty.
	rows := h * (1 + w*bpp)
	maxIDAT := (rows+15*h)*9/8 + 64
	var idat, other int64
	interlaced := false
	end = 8
	for first := true; ; first = false {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return 0, 0, badImage("png: truncated before IEND")
		}
		n := int64(binary.BigEndian.Uint32(hdr[:4]))
		typ := hdr[4:8]
		for _, c := range typ {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return 0, 0, badImage("png: bad chunk type %q at byte %d", typ, end)
			}
		}
		if n > 1<<31-1 {
			return 0, 0, badImage("png: bad chunk length at byte %d", end)
		}
		skip := n + 4 // the data and the CRC
		if first && string(typ) == "IHDR" && n == 13 {
			var ihdr [13]byte
			if _, err := io.ReadFull(br, ihdr[:]); err != nil {
				return 0, 0, badImage("png: truncated")
			}
			interlaced = ihdr[12] == 1
			skip -= 13
		}
		if m, err := io.CopyN(io.Discard, br, skip); err != nil || m != skip {
			return 0, 0, badImage("png: truncated before IEND")
		}
		end += 12 + n
		switch string(typ) {
		case "IDAT":
			if idat += n; idat > maxIDAT {
				return 0, 0, badImage("png: more pixel data than a %dx%d image can need", w, h)
			}
		case "IEND":
			decodeBytes = w*h*bpp + 2*(1+w*bpp) + paletteBytes
			if interlaced {
				decodeBytes += w * h * bpp / 2 // the largest pass
			}
			return end, decodeBytes, nil
		default:
			if other += 12 + n; other > maxMetadata {
				return 0, 0, badImage("png: more than %d bytes of metadata", maxMetadata)
			}
		}
	}
}

// walkJPEG walks the markers of a JPEG image, through its entropy-coded
// data, to its EOI marker, whose end it returns with the bytes the
// standard decoder allocates for a w x h image: the planes of its frame
// (rounded up to whole MCUs), the coefficients of a progressive image (4
// bytes a sample), and the RGBA or CMYK image a 4-component or RGB image
// is converted to. It refuses more than maxScans scans, more than
// maxMetadata bytes of segments, and more entropy-coded data than 4 bytes
// a sample (6 if progressive).
func walkJPEG(r io.Reader, w, h int64) (end, decodeBytes int64, err error) {
	br := bufio.NewReader(r)
	var off int64
	next := func() (byte, error) {
		b, err := br.ReadByte()
		if err == nil {
			off++
		}
		return b, err
	}
	truncated := badImage("jpeg: truncated before EOI")
	if b0, _ := next(); b0 != 0xff {
		return 0, 0, truncated
	}
	if b1, _ := next(); b1 != 0xd8 {
		return 0, 0, truncated
	}
	var (
		planes      int64 // bytes of the decoded planes
		nComp       int
		progressive bool
		jfif        bool
		adobe       = -1 // APP14 transform, -1 if none
		rgbIDs      bool
		scans       int
		entropy     int64
		segments    int64
		inScan      bool
	)
	for {
		b, err := next()
		if err != nil {
			return 0, 0, truncated
		}
		if b != 0xff {
			if !inScan {
				return 0, 0, badImage("jpeg: bad marker at byte %d", off-1)
			}
			entropy++
			continue
		}
		for b == 0xff { // fill bytes
			if b, err = next(); err != nil {
				return 0, 0, truncated
			}
		}
		switch {
		case b == 0x00 && inScan: // a stuffed 0xff byte
			entropy += 2
			continue
		case 0xd0 <= b && b <= 0xd7 && inScan: // RSTn
			continue
		case b == 0xd9: // EOI
			if planes == 0 || scans == 0 {
				return 0, 0, badImage("jpeg: no frame or no scan")
			}
			limit := 4 * planes
			if progressive {
				limit = 6 * planes
			}
			if entropy > limit+64*int64(scans) {
				return 0, 0, badImage("jpeg: more coded data than a %dx%d image can need", w, h)
			}
			decodeBytes = planes
			if progressive {
				decodeBytes += 4 * planes
			}
			if nComp == 4 || (nComp == 3 && !jfif && (adobe == 0 || rgbIDs)) {
				decodeBytes += 4 * w * h
			}
			return off, decodeBytes, nil
		case b == 0x00 || b == 0x01 || (0xd0 <= b && b <= 0xd8):
			return 0, 0, badImage("jpeg: unexpected marker 0x%02x at byte %d", b, off-1)
		}
		inScan = false
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, 0, truncated
		}
		n := int64(binary.BigEndian.Uint16(l[:])) - 2
		if n < 0 {
			return 0, 0, badImage("jpeg: bad segment length at byte %d", off)
		}
		seg := make([]byte, min(n, 32)) // the start of the segment is all we read
		if _, err := io.ReadFull(br, seg); err != nil {
			return 0, 0, truncated
		}
		if m, err := io.CopyN(io.Discard, br, n-int64(len(seg))); err != nil || m != n-int64(len(seg)) {
			return 0, 0, truncated
		}
		off += 2 + n
		switch {
		case b == 0xc0 || b == 0xc1 || b == 0xc2: // SOF0-2, the frames Go decodes
			if planes != 0 {
				return 0, 0, badImage("jpeg: more than one frame")
			}
			if len(seg) < 6 {
				return 0, 0, badImage("jpeg: short frame header")
			}
			nComp = int(seg[5])
			if nComp < 1 || nComp > 4 || n < 6+3*int64(nComp) {
				return 0, 0, badImage("jpeg: bad frame header")
			}
			progressive = b == 0xc2
			planes = jpegPlanes(seg, nComp, w, h)
			rgbIDs = nComp == 3 && len(seg) >= 15 && seg[6] == 'R' && seg[9] == 'G' && seg[12] == 'B'
		case b == 0xda: // SOS
			if planes == 0 {
				return 0, 0, badImage("jpeg: scan before frame")
			}
			if scans++; scans > maxScans {
				return 0, 0, badImage("jpeg: more than %d scans", maxScans)
			}
			inScan = true
		case b == 0xe0 && len(seg) >= 5 && string(seg[:5]) == "JFIF\x00":
			jfif = true
			segments += 4 + n
		case b == 0xee && len(seg) >= 12 && string(seg[:5]) == "Adobe":
			adobe = int(seg[11])
			segments += 4 + n
		case 0xe0 <= b && b <= 0xef || b == 0xfe: // APPn, COM
			segments += 4 + n
		}
		if segments > maxMetadata {
			return 0, 0, badImage("jpeg: more than %d bytes of metadata", maxMetadata)
		}
	}
}

// jpegPlanes returns the bytes of the planes the decoder allocates for a
// frame header seg (its first 32 bytes, which hold 4 components) of nComp
// components, w x h pixels: each
// component 8*h_i*mxx by 8*v_i*myy, in MCUs of the first component's
// factors, as image/jpeg does.
func jpegPlanes(seg []byte, nComp int, w, h int64) int64 {
	factors := func(i int) (int64, int64) {
		if nComp == 1 {
			return 1, 1
		}
		if 6+3*i+2 > len(seg) {
			return 4, 4
		}
		hv := seg[6+3*i+1]
		return max(int64(hv>>4), 1), max(int64(hv&0x0f), 1)
	}
	h0, v0 := factors(0)
	mxx, myy := (w+8*h0-1)/(8*h0), (h+8*v0-1)/(8*v0)
	var planes int64
	for i := range nComp {
		hi, vi := factors(i)
		if nComp == 3 && i > 0 {
			// Cb and Cr get the ratio of the first chroma component.
			hi, vi = factors(1)
			h2, v2 := factors(2)
			hi, vi = max(hi, h2), max(vi, v2)
		}
		planes += 8 * hi * mxx * 8 * vi * myy
	}
	return planes
}

// walkGIF walks the blocks of a GIF image to its trailer and returns the
// trailer's end. Each frame's compressed data must not exceed 2 bytes a
// pixel of the frame (LZW codes are at most 12 bits, and each makes at
// least one pixel), and the extensions must not exceed maxMetadata. Only
// the first frame is decoded; the others are skipped, not decoded.
func walkGIF(r io.Reader) (int64, error) {
	br := bufio.NewReader(r)
	var off int64
	read := func(n int) ([]byte, error) {
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, badImage("gif: truncated before the trailer")
		}
		off += int64(n)
		return b, nil
	}
	// subBlocks skips a sequence of data sub-blocks and returns their bytes.
	subBlocks := func() (int64, error) {
		var total int64
		for {
			n, err := read(1)
			if err != nil {
				return 0, err
			}
			if n[0] == 0 {
				return total, nil
			}
			if _, err := read(int(n[0])); err != nil {
				return 0, err
			}
			total += int64(n[0]) + 1
		}
	}
	hdr, err := read(13) // header and logical screen descriptor
	if err != nil {
		return 0, err
	}
	if hdr[10]&0x80 != 0 {
		if _, err := read(3 << (hdr[10]&7 + 1)); err != nil {
			return 0, err
		}
	}
	var ext int64
	for {
		b, err := read(1)
		if err != nil {
			return 0, err
		}
		switch b[0] {
		case 0x21: // extension
			if _, err := read(1); err != nil {
				return 0, err
			}
			n, err := subBlocks()
			if err != nil {
				return 0, err
			}
			if ext += n; ext > maxMetadata {
				return 0, badImage("gif: more than %d bytes of extensions", maxMetadata)
			}
		case 0x2c: // image descriptor
			d, err := read(9)
			if err != nil {
				return 0, err
			}
			fw, fh := int64(binary.LittleEndian.Uint16(d[4:6])), int64(binary.LittleEndian.Uint16(d[6:8]))
			if d[8]&0x80 != 0 {
				if _, err := read(3 << (d[8]&7 + 1)); err != nil {
					return 0, err
				}
			}
			if _, err := read(1); err != nil { // LZW minimum code size
				return 0, err
			}
			n, err := subBlocks()
			if err != nil {
				return 0, err
			}
			if n > 2*fw*fh+64 {
				return 0, badImage("gif: a %dx%d frame with %d bytes of data", fw, fh, n)
			}
		case 0x3b: // trailer
			return off, nil
		default:
			return 0, badImage("gif: bad block 0x%02x at byte %d", b[0], off-1)
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// errTrailing is wrapped by decodeFull's error for a file with more than
// maxTrailing bytes the decoder did not read.
var errTrailing = errors.New("data after the image")

// decodeFull decodes the image in r, size bytes long, and checks that the
// decoder read the whole file but maxTrailing bytes (a GIF's first frame
// is decoded: its end is found by walking the blocks). It is the one
// decode an upload gets.
func decodeFull(r io.ReaderAt, size int64) (image.Image, string, error) {
	cr := &countingReader{r: io.NewSectionReader(r, 0, size)}
	br := bufio.NewReader(cr)
	img, format, err := image.Decode(br)
	if err != nil {
		return nil, "", fmt.Errorf("decoding: %w", err)
	}
	end := cr.n - int64(br.Buffered())
	if format == "gif" {
		if end, err = walkGIF(io.NewSectionReader(r, 0, size)); err != nil {
			return nil, "", fmt.Errorf("decoding: %w", err)
		}
	}
	if size-end > maxTrailing {
		return nil, "", fmt.Errorf("decoding: %w: %d bytes after the end of the %s image", errTrailing, size-end, format)
	}
	return img, format, nil
}

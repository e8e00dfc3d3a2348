package monitor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"
)

// Watch takes a Sample from s every interval and draws it on w with
// [Render] until ctx is done, then returns ctx.Err(). On a terminal (with
// NO_COLOR unset or empty and TERM not "dumb") each frame redraws the
// previous one in place; otherwise frames are appended as plain lines, one
// blank line apart, with no escape code. Watch blocks in the calling
// goroutine and starts none. Give s a minimum window (see [WithMinWindow])
// below interval, half of it say, or a tick that comes a little early
// repeats the ratios of the frame before. It returns [ErrInterval] if
// interval is not positive, the error of a Write, or that of a Sample that
// read nothing (the CPU counters); the partial errors of a Sample are
// printed below its frame and the view goes on.
func Watch(ctx context.Context, w io.Writer, s *Sampler, interval time.Duration) error {
	if interval <= 0 {
		return ErrInterval
	}
	live := styled(w)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var frame, out bytes.Buffer
	lines := 0 // lines of the frame on screen
	for {
		snap, err := s.Sample(ctx)
		if snap.Time.IsZero() { // nothing was read
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		frame.Reset()
		render(&frame, snap, live)
		if err != nil {
			fmt.Fprintf(&frame, "error: %s\n", bytes.ReplaceAll([]byte(err.Error()), []byte("\n"), []byte("; ")))
		}
		out.Reset()
		switch {
		case live:
			if lines > 0 {
				fmt.Fprintf(&out, "\x1b[%dA\r", lines) // back to the frame's first line
			}
			for line := range bytes.Lines(frame.Bytes()) {
				out.Write(bytes.TrimSuffix(line, []byte("\n")))
				out.WriteString("\x1b[K\n") // clear what the last frame left
			}
			out.WriteString("\x1b[J") // and any longer tail below
			lines = bytes.Count(frame.Bytes(), []byte("\n"))
		case lines > 0:
			out.WriteByte('\n')
			fallthrough
		default:
			out.Write(frame.Bytes())
			lines = 1
		}
		if _, err := w.Write(out.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

package monitor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corework/corework/monitor"
)

// openPTY returns both ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioErr error
	rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
			n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// capture runs write with the slave end of a new terminal and returns what
// reached the master end.
func capture(t *testing.T, write func(w *os.File)) string {
	master, slave := openPTY(t)
	const end = "<end of capture>"
	var out []byte
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 4096)
		for !bytes.Contains(out, []byte(end)) {
			n, err := master.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				return
			}
		}
	})
	write(slave)
	// The terminal passes bytes on in order: once the marker is read, so
	// is everything written before it.
	if _, err := slave.WriteString(end + "\n"); err != nil {
		t.Fatal(err)
	}
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	wg.Wait()
	before, _, found := strings.Cut(string(out), end)
	if !found {
		t.Fatalf("end marker not read; got %q", out)
	}
	return before
}

func TestRenderTerminal(t *testing.T) {
	for _, tc := range []struct {
		noColor, term string
		escapes       bool
	}{
		{"", "xterm", true},
		{"1", "xterm", false},
		{"", "dumb", false},
	} {
		t.Run("NO_COLOR="+tc.noColor+",TERM="+tc.term, func(t *testing.T) {
			t.Setenv("NO_COLOR", tc.noColor)
			t.Setenv("TERM", tc.term)
			out := capture(t, func(w *os.File) {
				if err := monitor.Render(w, fixed()); err != nil {
					t.Error(err)
				}
			})
			if !strings.Contains(out, "CPU Total:  45.2%") {
				t.Fatalf("frame missing:\n%q", out)
			}
			if got := strings.Contains(out, "\x1b"); got != tc.escapes {
				t.Errorf("escape codes: %v, want %v:\n%q", got, tc.escapes, out)
			}
			if tc.escapes && !strings.Contains(out, "\x1b[33m████████████\x1b[0m") {
				t.Errorf("60%% bar not yellow:\n%q", out)
			}
		})
	}
}

func TestWatchTerminal(t *testing.T) {
	for _, noColor := range []string{"", "1"} {
		t.Run("NO_COLOR="+noColor, func(t *testing.T) {
			t.Setenv("NO_COLOR", noColor)
			t.Setenv("TERM", "xterm")
			s := newSampler(t, monitor.WithMinWindow(20*time.Millisecond))
			out := capture(t, func(w *os.File) {
				ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
				defer cancel()
				if err := monitor.Watch(ctx, w, s, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Watch = %v", err)
				}
			})
			frames := strings.Count(out, "CPU Total:")
			if frames < 2 {
				t.Fatalf("%d frames:\n%q", frames, out)
			}
			redraws := strings.Count(out, "A\r")
			if noColor == "" && (redraws != frames-1 || !strings.Contains(out, "\x1b[K")) {
				t.Errorf("%d frames, %d cursor-up moves, want in-place redraws:\n%q", frames, redraws, out)
			}
			if noColor != "" && strings.Contains(out, "\x1b") {
				t.Errorf("escape codes with NO_COLOR:\n%q", out)
			}
		})
	}
}

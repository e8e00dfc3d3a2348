package monitor_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corework/corework/affinity"
	"github.com/corework/corework/monitor"
)

// fixed is a snapshot with known figures, as the guide's terminal view.
func fixed() monitor.Snapshot {
	return monitor.Snapshot{
		Time:   time.Date(2025, 1, 2, 12, 45, 30, 0, time.UTC),
		Window: time.Second,
		CPU:    0.452,
		Cores: []monitor.Core{
			{CPU: 0, Usage: 0.605},
			{CPU: 1, Usage: 0.301},
		},
		Memory: monitor.Memory{Total: 2000 << 20, Used: 708 << 20, Available: 1292 << 20, UsedRatio: 0.354},
		Load:   monitor.Load{Load1: 1.23, Load5: 0.98, Load15: 0.76},
		Procs: []monitor.Process{{
			PID: 4242, Name: "worker", CPU: 0.98, RSS: 12 << 20, LastCPU: 1, Allowed: affinity.CPUSet{1},
			Threads: []monitor.Thread{{TID: 4243, CPU: 0.97, LastCPU: 1}},
		}},
	}
}

const fixedText = `[12:45:30] ==================================================
CPU Total:  45.2%
  CPU0: [████████████░░░░░░░░] 60.5%
  CPU1: [██████░░░░░░░░░░░░░░] 30.1%
Memory:     35.4% (708/2000 MB)
Load Avg:  1.23, 0.98, 0.76
PID 4242    worker          CPU  98.0%  RSS   12.0 MB  last CPU 1  allowed 1
  TID 4243      CPU  97.0%  last CPU 1
`

func TestRenderPlain(t *testing.T) {
	var buf bytes.Buffer
	if err := monitor.Render(&buf, fixed()); err != nil {
		t.Fatal(err)
	}
	if buf.String() != fixedText {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), fixedText)
	}
}

func TestRenderUnknownCPU(t *testing.T) {
	snap := fixed()
	snap.Procs[0].LastCPU, snap.Procs[0].Allowed, snap.Procs[0].Threads = -1, nil, nil
	var buf bytes.Buffer
	monitor.Render(&buf, snap)
	if !strings.Contains(buf.String(), "last CPU ?  allowed ?\n") {
		t.Errorf("unknown CPUs not shown as ?:\n%s", buf.String())
	}
}

func TestWatchPlain(t *testing.T) {
	s := newSampler(t, monitor.WithMinWindow(20*time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
	defer cancel()
	var buf bytes.Buffer
	err := monitor.Watch(ctx, &buf, s, 50*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Watch = %v, want DeadlineExceeded", err)
	}
	out := buf.String()
	frames := strings.Count(out, "CPU Total:")
	if frames < 2 {
		t.Fatalf("%d frames:\n%s", frames, out)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("escape code in output to a non-terminal:\n%q", out)
	}
	if strings.Count(out, "\n\n[") != frames-1 {
		t.Errorf("frames not one blank line apart:\n%s", out)
	}
}

func TestWatchBadInterval(t *testing.T) {
	s := newSampler(t)
	if err := monitor.Watch(t.Context(), &bytes.Buffer{}, s, 0); !errors.Is(err, monitor.ErrInterval) {
		t.Errorf("Watch = %v, want ErrInterval", err)
	}
}
